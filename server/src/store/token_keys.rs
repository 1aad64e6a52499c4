//! Token keys, shared by every server node over the database (`token_key`): the newest key not
//! retired signs, every key not retired verifies. Adding a key and retiring one are audited;
//! the secret itself never leaves this table except to the nodes that sign with it.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::audit::{self, Actor};
use crate::store::error::StoreError;

/// One token key.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    /// Its id, named by the tokens it signs (`kid`).
    pub id: String,
    /// The secret (at least 32 bytes).
    pub secret: Vec<u8>,
    /// When it was added.
    pub created_ms: u64,
    /// When it was retired: from then on it verifies nothing.
    pub retired_ms: Option<u64>,
}

impl std::fmt::Debug for TokenKey {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .field("created_ms", &self.created_ms)
            .field("retired_ms", &self.retired_ms)
            .finish_non_exhaustive()
    }
}

/// Shortest secret taken.
pub const MIN_SECRET: usize = 32;

/// Every key, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<TokenKey>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, secret, created_ms, retired_ms FROM token_key ORDER BY created_ms, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TokenKey {
            id: r.get(0)?,
            secret: r.get(1)?,
            created_ms: r.get::<_, i64>(2)? as u64,
            retired_ms: r.get::<_, Option<i64>>(3)?.map(|ms| ms as u64),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert(conn: &Connection, key: &TokenKey) -> Result<(), StoreError> {
    if key.secret.len() < MIN_SECRET {
        return Err(StoreError::Invalid(format!(
            "secret: at least {MIN_SECRET} bytes"
        )));
    }
    let taken: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM token_key WHERE id = ?1)",
        [&key.id],
        |r| r.get(0),
    )?;
    if taken {
        return Err(StoreError::Conflict(format!(
            "token key `{}`: exists already",
            key.id
        )));
    }
    conn.execute(
        "INSERT INTO token_key (id, secret, created_ms) VALUES (?1, ?2, ?3)",
        params![key.id, key.secret, key.created_ms as i64],
    )?;
    Ok(())
}

/// Adds `first` when no key is in use (the first start of a server, or of the first of its
/// nodes), and answers every key. Nodes starting at once add one key between them.
pub fn ensure(conn: &mut Connection, first: &TokenKey) -> Result<Vec<TokenKey>, StoreError> {
    let tx = conn.transaction()?;
    let in_use: i64 = tx.query_row(
        "SELECT count(*) FROM token_key WHERE retired_ms IS NULL",
        [],
        |r| r.get(0),
    )?;
    if in_use == 0 {
        insert(&tx, first)?;
    }
    let keys = list(&tx)?;
    tx.commit()?;
    Ok(keys)
}

/// Adds a key, which signs from now on; the others keep verifying until retired.
pub fn add(conn: &mut Connection, actor: Actor, key: &TokenKey) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    audit::require_admin(&tx, actor)?;
    insert(&tx, key)?;
    audit::audit(
        &tx,
        actor.account(),
        "add_token_key",
        Some(&key.id),
        None,
        key.created_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// Retires a key: tokens, cursors and browser cookies it signed are no longer taken. The key
/// that signs now (the newest in use) cannot be retired: add another first.
pub fn retire(
    conn: &mut Connection,
    actor: Actor,
    id: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    audit::require_admin(&tx, actor)?;
    let retired: Option<Option<i64>> = tx
        .query_row(
            "SELECT retired_ms FROM token_key WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    match retired {
        None => return Err(StoreError::NotFound(format!("no token key `{id}`"))),
        Some(Some(_)) => {
            return Err(StoreError::Conflict(format!(
                "token key `{id}`: retired already"
            )));
        }
        Some(None) => {}
    }
    let signing = list(&tx)?
        .into_iter()
        .rfind(|k| k.retired_ms.is_none())
        .map(|k| k.id);
    if signing.as_deref() == Some(id) {
        return Err(StoreError::Invalid(format!(
            "token key `{id}`: it signs now; add a key before retiring this one"
        )));
    }
    tx.execute(
        "UPDATE token_key SET retired_ms = ?2 WHERE id = ?1",
        params![id, now_ms as i64],
    )?;
    audit::audit(
        &tx,
        actor.account(),
        "retire_token_key",
        Some(id),
        None,
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}
