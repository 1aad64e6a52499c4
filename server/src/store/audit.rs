//! The audit log: every console decision and administration step, written in the transaction of what it records.

use crate::store::error::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

/// Who made an administration decision, for its audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// An administrator's console account.
    Account(i64),
    /// The operator at the server's command line.
    Operator,
}

impl Actor {
    /// The account recorded in the audit log (none for the operator).
    pub fn account(self) -> Option<i64> {
        match self {
            Actor::Account(id) => Some(id),
            Actor::Operator => None,
        }
    }
}

/// Refuses administration by anyone but an enabled administrator, judged from the stored
/// account, not from what the caller claims (the operator at the command line may).
pub fn require_admin(conn: &Connection, actor: Actor) -> Result<(), StoreError> {
    let Actor::Account(id) = actor else {
        return Ok(());
    };
    let admin: Option<bool> = conn
        .prepare_cached("SELECT role = 'admin' AND NOT disabled FROM account WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match admin {
        Some(true) => Ok(()),
        _ => Err(StoreError::Forbidden(
            "only an administrator may do this".into(),
        )),
    }
}

/// Records an audited action.
pub fn audit(
    conn: &Connection,
    account: Option<i64>,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, account, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![now_ms as i64, account, action, target, detail])?;
    Ok(())
}

/// One audited action, for the audit log page.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditEntry {
    /// When.
    pub at_ms: u64,
    /// Who (username), if known.
    pub username: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Details.
    pub detail: Option<String>,
}

/// The newest audited actions.
pub fn audit_log(conn: &Connection, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.at_ms, a.username, l.action, l.target, l.detail FROM audit l
         LEFT JOIN account a ON a.id = l.account ORDER BY l.id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditEntry {
            at_ms: r.get::<_, i64>(0)? as u64,
            username: r.get(1)?,
            action: r.get(2)?,
            target: r.get(3)?,
            detail: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
