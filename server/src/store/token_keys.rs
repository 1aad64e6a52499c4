//! Token keys, shared by every server node over the database (`token_key`): the newest key not
//! retired signs, every key not retired verifies. Adding a key and retiring one are audited;
//! the secret itself never leaves this table except to the nodes that sign with it.

use crate::store::conn::{Conn, Optional, params};

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

/// Every key, in the order they were added (the last added signs, whatever the clocks said).
pub fn list(conn: &Conn<'_>) -> Result<Vec<TokenKey>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, secret, created_ms, retired_ms FROM token_key ORDER BY rowid",
    )?;
    let rows = stmt.query_map((), |r| {
        Ok(TokenKey {
            id: r.get(0)?,
            secret: r.get(1)?,
            created_ms: r.get::<_, i64>(2)? as u64,
            retired_ms: r.get::<_, Option<i64>>(3)?.map(|ms| ms as u64),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert(conn: &Conn<'_>, key: &TokenKey) -> Result<(), StoreError> {
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

/// Adds a key when none is in use (the first start of a server, or of the first of its nodes),
/// and answers every key. Nodes starting at once add one key between them. `first`'s secret (an
/// old `secret.key`'s) is taken only into an empty table; keys all retired by hand are followed
/// by a new random one, never by a key that was retired.
pub fn ensure(conn: &Conn<'_>, first: &TokenKey) -> Result<Vec<TokenKey>, StoreError> {
    // Read first: with a key in use there is nothing to write, and no write lock to wait for.
    let keys = list(conn)?;
    if keys.iter().any(|k| k.retired_ms.is_none()) {
        return Ok(keys);
    }
    let tx = conn.transaction()?;
    let (ever, in_use): (i64, i64) = tx.query_row(
        "SELECT count(*), count(*) FILTER (WHERE retired_ms IS NULL) FROM token_key",
        (),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if ever == 0 {
        insert(&tx, first)?;
    } else if in_use == 0 {
        let fresh = TokenKey {
            secret: random_secret(),
            ..first.clone()
        };
        insert(&tx, &fresh)?;
    }
    let keys = list(&tx)?;
    tx.commit()?;
    Ok(keys)
}

/// A new secret: 64 hex digits, 244 random bits from the operating system's generator.
pub fn random_secret() -> Vec<u8> {
    crate::store::devices::random_secret().into_bytes()
}

/// How long the newest key must have been added before the key before it may be retired: every
/// node reads the keys within 30 seconds, and until it does it signs with the key before.
pub const SETTLE_MS: u64 = 60_000;

/// Adds a key, which signs from now on; the others keep verifying until retired.
pub fn add(conn: &Conn<'_>, actor: Actor, key: &TokenKey) -> Result<(), StoreError> {
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
/// that signs now (the newest in use) cannot be retired: add another first; nor, unless
/// `at_once` (a leaked key), the one before it until the newest has settled ([`SETTLE_MS`]).
pub fn retire(
    conn: &Conn<'_>,
    actor: Actor,
    id: &str,
    now_ms: u64,
    at_once: bool,
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
    let signing = list(&tx)?.into_iter().rfind(|k| k.retired_ms.is_none());
    let Some(signing) = signing.filter(|k| k.id != id) else {
        return Err(StoreError::Invalid(format!(
            "token key `{id}`: it signs now; add a key before retiring this one"
        )));
    };
    let settled_at = signing.created_ms + SETTLE_MS;
    if now_ms < settled_at && !at_once {
        return Err(StoreError::Conflict(format!(
            "token key `{id}`: `{}` was added {} s ago, and running servers may still sign with \
             `{id}`; retire it in {} s (for phones of earlier versions, in 15 minutes), or now with \
             --at-once",
            signing.id,
            now_ms.saturating_sub(signing.created_ms) / 1000,
            (settled_at - now_ms).div_ceil(1000)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn key(id: &str, secret: u8, created_ms: u64) -> TokenKey {
        TokenKey {
            id: id.into(),
            secret: vec![secret; 32],
            created_ms,
            retired_ms: None,
        }
    }

    #[test]
    fn an_old_key_file_is_taken_into_an_empty_table_only_and_a_retired_key_never_returns() {
        let db = Db::open_in_memory().unwrap();
        let ensure = |first: &TokenKey| db.call_blocking(|c| ensure(c, first)).unwrap();
        let legacy = key("legacy", b'L', 1_000);
        assert_eq!(ensure(&legacy), vec![legacy.clone()]);
        assert_eq!(ensure(&key("other", b'O', 2_000)), vec![legacy.clone()]);
        db.call_blocking(|c| add(c, Actor::Operator, &key("k2", b'2', 3_000)))
            .unwrap();
        let early = db
            .call_blocking(|c| retire(c, Actor::Operator, "legacy", 3_000 + SETTLE_MS - 1, false));
        assert!(matches!(early, Err(StoreError::Conflict(_))), "{early:?}");
        db.call_blocking(|c| retire(c, Actor::Operator, "legacy", 3_000 + SETTLE_MS, false))
            .unwrap();
        // Every key retired by hand: the next start adds a new random key, not the file's.
        db.call_blocking(|c| Ok(c.execute("UPDATE token_key SET retired_ms = 1", ())?))
            .unwrap();
        // (Each start proposes a key of a new id, the old file's secret in it.)
        let keys = ensure(&key("again", b'L', 9_000));
        let fresh = keys.iter().find(|k| k.retired_ms.is_none()).unwrap();
        assert_eq!(fresh.id, "again");
        assert_ne!(fresh.secret, legacy.secret);
        assert_eq!(fresh.secret.len(), 64);
    }

    #[test]
    fn the_last_key_added_signs_whatever_the_clocks_said() {
        let db = Db::open_in_memory().unwrap();
        db.call_blocking(|c| ensure(c, &key("k1", 1, 5_000)))
            .unwrap();
        // Added later by a process whose clock is behind.
        db.call_blocking(|c| add(c, Actor::Operator, &key("k2", 2, 4_000)))
            .unwrap();
        let keys = db.call_blocking(list).unwrap();
        assert_eq!(keys.last().map(|k| k.id.as_str()), Some("k2"));
        let refused = db.call_blocking(|c| retire(c, Actor::Operator, "k2", 9_999_999, true));
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{refused:?}"
        );
    }
}
