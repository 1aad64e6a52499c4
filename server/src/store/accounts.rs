//! Stations, villages, accounts, devices and refresh tokens.

use crate::store::conn::{Conn, Optional, params};

use crate::store::audit::{Actor, audit, require_admin};
use crate::store::error::StoreError;

/// The role an account has (kept with the caller, whom every use case takes).
pub use crate::store::caller::Role;
use crate::store::places::Place;
use crate::store::places::holds;
use crate::store::places::unknown;

/// An account as stored.
#[derive(Clone, Debug)]
pub struct Account {
    /// Row id.
    pub id: i64,
    /// Sign-in name.
    pub username: String,
    /// Name shown to people.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Station (reviewers, and officers for reporting).
    pub station: Option<String>,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// Disabled accounts cannot sign in or sync.
    pub disabled: bool,
    /// Generation of its access tokens: moved on when the account is disabled.
    pub token_gen: i64,
}

fn account_from_row(
    r: &crate::store::conn::Row<'_>,
) -> Result<Account, crate::store::conn::SqlError> {
    let role: String = r.get(3)?;
    Ok(Account {
        id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::Officer),
        station: r.get(4)?,
        password_hash: r.get(5)?,
        disabled: r.get(6)?,
        token_gen: r.get(7)?,
    })
}

const ACCOUNT_COLUMNS: &str =
    "id, username, display_name, role, station, password_hash, disabled, token_gen";

/// A new account before it is stored.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Sign-in name.
    pub username: String,
    /// Name shown to people.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Station.
    pub station: Option<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Villages (officers).
    pub villages: Vec<String>,
}

/// Whether an account may sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// It may.
    Enabled,
    /// It may not, and everything it holds ends.
    Disabled,
}

/// Stores a new account with its audit entry; a taken username is a conflict.
pub fn create_account(
    conn: &Conn<'_>,
    actor: Actor,
    new: &NewAccount,
    now_ms: u64,
) -> Result<i64, StoreError> {
    let tx = conn.transaction()?;
    require_admin(&tx, actor)?;
    // The audit log names the server's command line so: an account of that name would pass
    // for it there, and its actions would be listed among the command line's.
    if new
        .username
        .eq_ignore_ascii_case(crate::store::audit::OPERATOR)
    {
        return Err(StoreError::Invalid(format!(
            "username: `{}` is how the audit log names the server's command line",
            new.username
        )));
    }
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM account WHERE username = ?1)",
        [&new.username],
        |r| r.get(0),
    )?;
    if exists {
        return Err(StoreError::Conflict(format!(
            "username `{}` is taken",
            new.username
        )));
    }
    if let Some(station) = new.station.as_deref()
        && !holds(&tx, Place::Station, station)?
    {
        return Err(unknown(Place::Station, station));
    }
    let id: i64 = tx.query_row(
        "INSERT INTO account (username, display_name, role, station, password_hash, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![
            new.username,
            new.display_name,
            new.role.as_str(),
            new.station,
            new.password_hash,
            now_ms as i64
        ],
        |r| r.get(0),
    )?;
    set_villages(&tx, id, &new.villages)?;
    let detail = format!("{} {}", new.role.as_str(), new.villages.join(","));
    audit(
        &tx,
        actor.account(),
        "add_account",
        Some(&new.username),
        Some(detail.trim_end()),
        now_ms,
    )?;
    tx.commit()?;
    Ok(id)
}

fn set_villages(conn: &Conn<'_>, account: i64, villages: &[String]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM account_village WHERE account = ?1", [account])?;
    for village in villages {
        if !holds(conn, Place::Village, village)? {
            return Err(unknown(Place::Village, village));
        }
        conn.execute(
            "INSERT INTO account_village (account, village) VALUES (?1, ?2)",
            params![account, village],
        )?;
    }
    Ok(())
}

/// Replaces an officer's villages, with its audit entry.
pub fn assign_villages(
    conn: &Conn<'_>,
    actor: Actor,
    username: &str,
    villages: &[String],
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    require_admin(&tx, actor)?;
    let account = account_by_username(&tx, username)?.ok_or_else(|| no_account(username))?;
    set_villages(&tx, account.id, villages)?;
    audit(
        &tx,
        actor.account(),
        "assign_villages",
        Some(username),
        Some(&villages.join(",")),
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

fn no_account(username: &str) -> StoreError {
    StoreError::NotFound(format!("no account `{username}`"))
}

/// Disables or enables an account, with its audit entry; disabling also ends its devices'
/// sessions.
pub fn set_access(
    conn: &Conn<'_>,
    actor: Actor,
    username: &str,
    access: Access,
    now_ms: u64,
) -> Result<(), StoreError> {
    let disabled = access == Access::Disabled;
    let tx = conn.transaction()?;
    require_admin(&tx, actor)?;
    let conn = &tx;
    let n = conn.execute(
        "UPDATE account SET disabled = ?2 WHERE username = ?1",
        params![username, disabled],
    )?;
    if n == 0 {
        return Err(no_account(username));
    }
    if disabled {
        end_sessions(conn, username)?;
    }
    let action = if disabled {
        "disable_account"
    } else {
        "enable_account"
    };
    audit(conn, actor.account(), action, Some(username), None, now_ms)?;
    tx.commit()?;
    Ok(())
}

/// Ends everything an account holds: refresh tokens, access tokens, console sessions, and the
/// device keys that exempt its devices from the lockout.
fn end_sessions(conn: &Conn<'_>, username: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE device SET key_hash = NULL, prev_key_hash = NULL
         WHERE account = (SELECT id FROM account WHERE username = ?1)",
        [username],
    )?;
    // Removed, not marked spent: a phone presenting one afterwards is told its session ended,
    // not taken for a thief replaying a spent token.
    conn.execute(
        "DELETE FROM refresh_token WHERE account = (SELECT id FROM account WHERE username = ?1)",
        [username],
    )?;
    conn.execute(
        "UPDATE account SET token_gen = token_gen + 1 WHERE username = ?1",
        [username],
    )?;
    conn.execute(
        "DELETE FROM console_session WHERE account = (SELECT id FROM account WHERE username = ?1)",
        [username],
    )?;
    Ok(())
}

/// Gives an account a new password (its hash) and ends every session it holds, as a password
/// that may have gone with a lost phone must: each phone and browser signs in again with the
/// new one. Audited.
pub fn set_password(
    conn: &Conn<'_>,
    actor: Actor,
    username: &str,
    password_hash: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    require_admin(&tx, actor)?;
    let n = tx.execute(
        "UPDATE account SET password_hash = ?2 WHERE username = ?1",
        params![username, password_hash],
    )?;
    if n == 0 {
        return Err(no_account(username));
    }
    end_sessions(&tx, username)?;
    audit(
        &tx,
        actor.account(),
        "set_password",
        Some(username),
        None,
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// The account with this sign-in name.
pub fn account_by_username(conn: &Conn<'_>, username: &str) -> Result<Option<Account>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM account WHERE username = ?1");
    Ok(conn
        .query_row(&sql, [username], account_from_row)
        .optional()?)
}

/// The account with this id.
pub fn account_by_id(conn: &Conn<'_>, id: i64) -> Result<Option<Account>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM account WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], account_from_row).optional()?)
}

/// Every account, by username.
pub fn accounts(conn: &Conn<'_>) -> Result<Vec<Account>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM account ORDER BY username");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map((), account_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The villages an account sees and writes: an officer's own, a reviewer's station's, all for
/// an administrator.
pub fn villages_of(conn: &Conn<'_>, account: &Account) -> Result<Vec<String>, StoreError> {
    let (sql, arg): (&str, crate::store::conn::Value) = match account.role {
        Role::Officer => (
            "SELECT village FROM account_village WHERE account = ?1 ORDER BY village",
            account.id.into(),
        ),
        Role::Reviewer => (
            "SELECT code FROM village WHERE station = ?1 ORDER BY code",
            account.station.clone().unwrap_or_default().into(),
        ),
        Role::Admin => (
            "SELECT code FROM village WHERE CAST(?1 AS BIGINT) IS NOT NULL ORDER BY code",
            1.into(),
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([arg], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
