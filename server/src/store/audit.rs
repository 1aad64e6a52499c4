//! The audit log: every console decision and administration step, written in the transaction of what it records.

use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;

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
pub fn require_admin(conn: &Conn<'_>, actor: Actor) -> Result<(), StoreError> {
    let Actor::Account(id) = actor else {
        return Ok(());
    };
    let admin: Option<bool> = conn
        .prepare_cached("SELECT role = 'admin' AND disabled = 0 FROM account WHERE id = ?1")?
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
    conn: &Conn<'_>,
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
pub fn audit_log(conn: &Conn<'_>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(audit_page(conn, &AuditFilter::default(), limit)?.entries)
}

/// Which audited actions to list: all of them unless narrowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this action (`device_sign_in`, `review`, …).
    pub action: Option<String>,
    /// Only this account's (a username; `operator` for the command line's).
    pub username: Option<String>,
    /// Only those at or after this time.
    pub since_ms: Option<u64>,
    /// Only those before this entry (the page after one ending there).
    pub before: Option<i64>,
}

/// A page of the audit log, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The id to ask `before` for the next (older) page, if there is one.
    pub older: Option<i64>,
}

/// How the audit log names the server's command line (entries with no account).
pub const OPERATOR: &str = "operator";

/// A page of audited actions, newest first, at most `limit`.
pub fn audit_page(
    conn: &Conn<'_>,
    filter: &AuditFilter,
    limit: u32,
) -> Result<AuditPage, StoreError> {
    let operator = filter.username.as_deref() == Some(OPERATOR);
    let mut stmt = conn.prepare_cached(
        "SELECT l.id, l.at_ms, a.username, l.action, l.target, l.detail FROM audit l
         LEFT JOIN account a ON a.id = l.account
         WHERE (CAST(?1 AS TEXT) IS NULL OR l.action = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR a.username = ?2)
           AND (CAST(?3 AS BIGINT) = 0 OR l.account IS NULL)
           AND (CAST(?4 AS BIGINT) IS NULL OR l.at_ms >= ?4)
           AND (CAST(?5 AS BIGINT) IS NULL OR l.id < ?5)
         ORDER BY l.id DESC LIMIT ?6",
    )?;
    let username = filter.username.as_deref().filter(|_| !operator);
    let mut ids = Vec::new();
    let rows = stmt.query_map(
        params![
            filter.action,
            username,
            operator,
            filter.since_ms.map(|ms| ms as i64),
            filter.before,
            i64::from(limit) + 1
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                AuditEntry {
                    at_ms: r.get::<_, i64>(1)? as u64,
                    username: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                },
            ))
        },
    )?;
    let mut entries = Vec::new();
    for row in rows {
        let (id, entry) = row?;
        ids.push(id);
        entries.push(entry);
    }
    // One more than asked for says whether an older page follows.
    let older = if entries.len() > limit as usize {
        entries.truncate(limit as usize);
        ids.get(limit as usize - 1).copied()
    } else {
        None
    };
    Ok(AuditPage { entries, older })
}

/// The actions the log holds, for a filter's choices.
pub fn audit_actions(conn: &Conn<'_>) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT action FROM audit ORDER BY action")?;
    let rows = stmt.query_map((), |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    #[test]
    fn the_log_pages_back_and_narrows_by_action_account_and_time() {
        let db = Db::open_in_memory().unwrap();
        db.call_blocking(|c| {
            c.execute_batch(
                "INSERT INTO account (id, username, display_name, role, password_hash, created_ms)
                 VALUES (7, 'chen', 'chen', 'admin', 'x', 0)",
            )?;
            for n in 0..250u64 {
                let (account, action) = match n % 3 {
                    0 => (Some(7), "review"),
                    1 => (None, "add_account"),
                    _ => (Some(7), "device_sign_in"),
                };
                audit(c, account, action, Some(&n.to_string()), None, 1_000 + n)?;
            }
            Ok(())
        })
        .unwrap();
        let page = |filter: &AuditFilter| db.read_blocking(|c| audit_page(c, filter, 100)).unwrap();
        let mut filter = AuditFilter::default();
        let mut seen = Vec::new();
        loop {
            let p = page(&filter);
            seen.extend(p.entries.iter().map(|e| e.target.clone().unwrap()));
            match p.older {
                Some(id) => filter.before = Some(id),
                None => break,
            }
        }
        assert_eq!(seen.len(), 250);
        assert_eq!(seen.first().map(String::as_str), Some("249"));
        assert_eq!(seen.last().map(String::as_str), Some("0"));
        let reviews = page(&AuditFilter {
            action: Some("review".into()),
            ..AuditFilter::default()
        });
        assert_eq!(reviews.entries.len(), 84);
        assert!(reviews.entries.iter().all(|e| e.action == "review"));
        let operator = page(&AuditFilter {
            username: Some("operator".into()),
            ..AuditFilter::default()
        });
        assert_eq!(operator.entries.len(), 83);
        assert!(operator.entries.iter().all(|e| e.username.is_none()));
        let chen = page(&AuditFilter {
            username: Some("chen".into()),
            since_ms: Some(1_200),
            ..AuditFilter::default()
        });
        assert!(
            chen.entries
                .iter()
                .all(|e| e.at_ms >= 1_200 && e.username.as_deref() == Some("chen"))
        );
        assert_eq!(chen.entries.len(), 34);
    }
}
