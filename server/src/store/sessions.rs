//! Console sessions: opaque cookies stored hashed, each with its CSRF token.

use crate::store::accounts::{self, Account, Role};
use crate::store::audit::audit;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use sha2::{Digest, Sha256};

pub(crate) fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Opens a console session with its audit entry; returns (cookie value, CSRF token).
pub fn open_session(
    conn: &Conn<'_>,
    account: i64,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<(String, String), StoreError> {
    let (cookie, csrf) = (random_token(), random_token());
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO console_session (hash, account, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash(&cookie), account, csrf, now_ms as i64, (now_ms + ttl_ms) as i64],
    )?;
    audit(&tx, Some(account), "console_login", None, None, now_ms)?;
    tx.commit()?;
    Ok((cookie, csrf))
}

/// A console sign-in as stored: the account, its villages and the session's CSRF token.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    /// The account.
    pub account: Account,
    /// Its villages.
    pub villages: Vec<String>,
    /// The session's CSRF token.
    pub csrf: String,
}

/// The console session of a cookie: current, its account enabled and not an officer's.
pub fn console_session(
    conn: &Conn<'_>,
    cookie: &str,
    now_ms: u64,
) -> Result<Option<ConsoleSession>, StoreError> {
    let Some((account, csrf)) = session(conn, cookie, now_ms)? else {
        return Ok(None);
    };
    let Some(account) = accounts::account_by_id(conn, account)? else {
        return Ok(None);
    };
    if account.disabled || account.role == Role::Officer {
        return Ok(None);
    }
    let villages = accounts::villages_of(conn, &account)?;
    Ok(Some(ConsoleSession {
        account,
        villages,
        csrf,
    }))
}

/// The account and CSRF token of a live session cookie.
pub fn session(
    conn: &Conn<'_>,
    cookie: &str,
    now_ms: u64,
) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT account, csrf FROM console_session WHERE hash = ?1 AND expires_ms > ?2",
            params![hash(cookie), now_ms as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Ends a console session.
pub fn close_session(conn: &Conn<'_>, cookie: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM console_session WHERE hash = ?1",
        [hash(cookie)],
    )?;
    Ok(())
}
