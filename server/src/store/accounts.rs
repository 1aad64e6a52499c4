//! Stations, villages, accounts, devices and refresh tokens.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::store::error::StoreError;

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A village officer: captures and syncs their villages.
    Officer,
    /// A station reviewer: the station's villages.
    Reviewer,
    /// An administrator: everything.
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    /// The role of a stored name.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Officer, Role::Reviewer, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

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

fn account_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
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

/// Adds or renames a station: 1 when that changed anything, else 0.
pub fn upsert_station(conn: &Connection, code: &str, name: &str) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT INTO station (code, name) VALUES (?1, ?2)
         ON CONFLICT (code) DO UPDATE SET name = excluded.name WHERE name IS NOT excluded.name",
        params![code, name],
    )?)
}

/// Adds, renames or moves a village: 1 when that changed anything, else 0.
pub fn upsert_village(
    conn: &Connection,
    code: &str,
    name: &str,
    station: &str,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT INTO village (code, name, station) VALUES (?1, ?2, ?3)
         ON CONFLICT (code) DO UPDATE SET name = excluded.name, station = excluded.station
         WHERE name IS NOT excluded.name OR station IS NOT excluded.station",
        params![code, name, station],
    )?)
}

/// A station with its villages.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Station {
    /// Station code (the street's division code).
    pub code: String,
    /// Name.
    pub name: String,
    /// Its villages: (code, name).
    pub villages: Vec<(String, String)>,
}

/// Every station with its villages.
pub fn stations(conn: &Connection) -> Result<Vec<Station>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT code, name FROM station ORDER BY code")?;
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut villages =
        conn.prepare("SELECT code, name FROM village WHERE station = ?1 ORDER BY code")?;
    for (code, name) in rows {
        let list = villages
            .query_map([&code], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        out.push(Station {
            code,
            name,
            villages: list,
        });
    }
    Ok(out)
}

/// A new account before it is stored.
pub struct NewAccount<'a> {
    /// Sign-in name.
    pub username: &'a str,
    /// Name shown to people.
    pub display_name: &'a str,
    /// Role.
    pub role: Role,
    /// Station.
    pub station: Option<&'a str>,
    /// argon2id PHC string.
    pub password_hash: &'a str,
    /// Villages (officers).
    pub villages: &'a [String],
}

/// A kind of place an account can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A police station (a street).
    Station,
    /// A village.
    Village,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Station => "station",
            Place::Village => "village",
        }
    }
}

/// Whether the server holds the place with this code.
pub fn holds(conn: &Connection, place: Place, code: &str) -> Result<bool, StoreError> {
    let sql = match place {
        Place::Station => "SELECT EXISTS (SELECT 1 FROM station WHERE code = ?1)",
        Place::Village => "SELECT EXISTS (SELECT 1 FROM village WHERE code = ?1)",
    };
    Ok(conn.query_row(sql, [code], |r| r.get(0))?)
}

/// The error for a place the server does not hold, naming it and how places are loaded.
fn unknown(place: Place, code: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{} `{code}` does not exist (places are loaded with `baylink-server station import`)",
        place.name()
    ))
}

/// Stores a new account; a taken username is a conflict.
pub fn create_account(
    conn: &mut Connection,
    new: &NewAccount<'_>,
    now_ms: u64,
) -> Result<i64, StoreError> {
    let tx = conn.transaction()?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM account WHERE username = ?1)",
        [new.username],
        |r| r.get(0),
    )?;
    if exists {
        return Err(StoreError::Conflict(format!(
            "username `{}` is taken",
            new.username
        )));
    }
    if let Some(station) = new.station {
        if !holds(&tx, Place::Station, station)? {
            return Err(unknown(Place::Station, station));
        }
    }
    tx.execute(
        "INSERT INTO account (username, display_name, role, station, password_hash, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            new.username,
            new.display_name,
            new.role.as_str(),
            new.station,
            new.password_hash,
            now_ms as i64
        ],
    )?;
    let id = tx.last_insert_rowid();
    set_villages(&tx, id, new.villages)?;
    tx.commit()?;
    Ok(id)
}

fn set_villages(conn: &Connection, account: i64, villages: &[String]) -> Result<(), StoreError> {
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

/// Replaces an officer's villages.
pub fn assign_villages(
    conn: &mut Connection,
    username: &str,
    villages: &[String],
) -> Result<(), StoreError> {
    let account = account_by_username(conn, username)?.ok_or_else(|| no_account(username))?;
    let tx = conn.transaction()?;
    set_villages(&tx, account.id, villages)?;
    tx.commit()?;
    Ok(())
}

fn no_account(username: &str) -> StoreError {
    StoreError::NotFound(format!("no account `{username}`"))
}

/// Disables or enables an account; disabling also ends its devices' sessions.
pub fn set_disabled(conn: &Connection, username: &str, disabled: bool) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE account SET disabled = ?2 WHERE username = ?1",
        params![username, disabled],
    )?;
    if n == 0 {
        return Err(no_account(username));
    }
    if disabled {
        // Everything it holds ends now: refresh tokens, access tokens, console sessions, and
        // the device keys that exempt its devices from the lockout.
        conn.execute(
            "UPDATE device SET key_hash = NULL, prev_key_hash = NULL
             WHERE account = (SELECT id FROM account WHERE username = ?1)",
            [username],
        )?;
        conn.execute(
            "UPDATE refresh_token SET spent = 1 WHERE account = (SELECT id FROM account WHERE username = ?1)",
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
    }
    Ok(())
}

/// The account with this sign-in name.
pub fn account_by_username(
    conn: &Connection,
    username: &str,
) -> Result<Option<Account>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM account WHERE username = ?1");
    Ok(conn
        .query_row(&sql, [username], account_from_row)
        .optional()?)
}

/// The account with this id.
pub fn account_by_id(conn: &Connection, id: i64) -> Result<Option<Account>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM account WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], account_from_row).optional()?)
}

/// Every account, by username.
pub fn accounts(conn: &Connection) -> Result<Vec<Account>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM account ORDER BY username");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], account_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The villages an account sees and writes: an officer's own, a reviewer's station's, all for
/// an administrator.
pub fn villages_of(conn: &Connection, account: &Account) -> Result<Vec<String>, StoreError> {
    let (sql, arg): (&str, rusqlite::types::Value) = match account.role {
        Role::Officer => (
            "SELECT village FROM account_village WHERE account = ?1 ORDER BY village",
            account.id.into(),
        ),
        Role::Reviewer => (
            "SELECT code FROM village WHERE station = ?1 ORDER BY code",
            account.station.clone().unwrap_or_default().into(),
        ),
        Role::Admin => (
            "SELECT code FROM village WHERE ?1 IS NOT NULL ORDER BY code",
            1.into(),
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([arg], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A registered device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Device {
    /// The device's node id.
    pub id: String,
    /// The account it belongs to.
    pub account: i64,
    /// Its name as the officer gave it.
    pub name: String,
    /// Revoked devices are refused and wipe themselves.
    pub revoked: bool,
    /// Last change counter processed.
    pub last_counter: u64,
    /// Last successful sync.
    pub last_sync_ms: Option<u64>,
    /// Villages it held at its last complete pull (JSON list).
    pub villages: Option<String>,
    /// Generation of its access tokens: moved on when it signs out.
    pub token_gen: i64,
    /// Whether it was given a device key (see [`issue_device_key`]).
    pub has_key: bool,
}

/// The device with this id.
pub fn device(conn: &Connection, id: &str) -> Result<Option<Device>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, account, name, revoked, last_counter, last_sync_ms, villages, token_gen,
                 key_hash IS NOT NULL FROM device WHERE id = ?1",
            [id],
            device_from_row,
        )
        .optional()?;
    Ok(row)
}

fn device_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        account: r.get(1)?,
        name: r.get(2)?,
        revoked: r.get(3)?,
        last_counter: r.get::<_, i64>(4)? as u64,
        last_sync_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        villages: r.get(6)?,
        token_gen: r.get(7)?,
        has_key: r.get(8)?,
    })
}

/// Every device, with its account's username.
pub fn devices(conn: &Connection) -> Result<Vec<(Device, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT d.id, d.account, d.name, d.revoked, d.last_counter, d.last_sync_ms, d.villages,
             d.token_gen, d.key_hash IS NOT NULL, a.username
         FROM device d JOIN account a ON a.id = d.account ORDER BY a.username, d.registered_ms",
    )?;
    let rows = stmt.query_map([], |r| Ok((device_from_row(r)?, r.get(9)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Registers a device at login, or notes that it was seen; a revoked device stays revoked. A
/// device belongs to the account it was first registered to, for ever: a login naming another
/// account's device is refused (device ids are public: every stamp names its writer's).
pub fn register_device(
    conn: &Connection,
    id: &str,
    account: i64,
    name: &str,
    now_ms: u64,
) -> Result<Device, StoreError> {
    if device(conn, id)?.is_some_and(|d| d.account != account) {
        return Err(StoreError::Conflict(
            "device_id：此设备已登记在其他警员的账号下。请原警员同步后退出；换人使用须以新设备登录（重新安装应用，或在命令行客户端用新的 --data 目录） / device_id: this device is registered to another officer's account. That officer syncs and signs out; another officer signs in as a new device (a new app install, or a new --data directory for the command-line client)".into(),
        ));
    }
    conn.execute(
        "INSERT INTO device (id, account, name, registered_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, last_seen_ms = excluded.last_seen_ms",
        params![id, account, name, now_ms as i64],
    )?;
    device(conn, id)?.ok_or_else(|| StoreError::Backend("device vanished".into()))
}

/// Revokes a lost device: its tokens die, its next call is refused and it wipes itself.
pub fn revoke_device(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let n = conn.execute("UPDATE device SET revoked = 1 WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no device `{id}`")));
    }
    conn.execute("UPDATE refresh_token SET spent = 1 WHERE device = ?1", [id])?;
    Ok(())
}

/// The SHA-256 of a token, as stored.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 244 random bits from the operating system's generator, as hex.
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Gives a device a new device key (stored hashed) and returns it. The key before it keeps
/// counting, or `kept` when the login proved that one (the key the phone holds): if the answer
/// with the new key is lost, the phone still proves itself with the one it has.
pub fn issue_device_key(
    conn: &Connection,
    device: &str,
    kept: Option<&str>,
) -> Result<String, StoreError> {
    let key = random_secret();
    conn.execute(
        "UPDATE device SET prev_key_hash = COALESCE(?3, key_hash), key_hash = ?2 WHERE id = ?1",
        params![device, token_hash(&key), kept.map(token_hash)],
    )?;
    Ok(key)
}

/// How a login's device key matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMatch {
    /// No key, or not one of this device of this account (or it is revoked).
    No,
    /// The key last given.
    Current,
    /// The key before it (the answer with the last one may have been lost).
    Previous,
}

/// How `key` matches the keys given to `device`, a device of `account` not revoked. One query
/// whether or not the account exists. (The stored values are hashes of 244 random bits:
/// comparing them in variable time reveals nothing.)
pub fn device_key_matches(
    conn: &Connection,
    device: &str,
    account: Option<i64>,
    key: &str,
) -> Result<KeyMatch, StoreError> {
    let stored: Option<(i64, bool, Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT account, revoked, key_hash, prev_key_hash FROM device WHERE id = ?1",
            [device],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let hash = token_hash(key);
    Ok(match stored {
        Some((owner, false, current, previous)) if Some(owner) == account => {
            if current.is_some_and(|h| h == hash) {
                KeyMatch::Current
            } else if previous.is_some_and(|h| h == hash) {
                KeyMatch::Previous
            } else {
                KeyMatch::No
            }
        }
        _ => KeyMatch::No,
    })
}

/// Issues a new refresh token for a device (stored hashed); returns the token itself.
pub fn issue_refresh_token(
    conn: &Connection,
    device: &str,
    account: i64,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<String, StoreError> {
    let token = random_secret();
    conn.execute(
        "INSERT INTO refresh_token (hash, device, account, issued_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash(&token), device, account, now_ms as i64, (now_ms + ttl_ms) as i64],
    )?;
    Ok(token)
}

/// Why a refresh token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshRefused {
    /// Unknown, expired, or for another device.
    Invalid,
    /// Spent already: the device's session is revoked.
    Reused,
}

/// Spends a refresh token of a device; returns its account. Spending a spent token revokes
/// every refresh token of that device (a stolen token was used).
pub fn spend_refresh_token(
    conn: &mut Connection,
    token: &str,
    device: &str,
    now_ms: u64,
) -> Result<Result<i64, RefreshRefused>, StoreError> {
    let tx = conn.transaction()?;
    let row: Option<(String, i64, i64, bool)> = tx
        .query_row(
            "SELECT device, account, expires_ms, spent FROM refresh_token WHERE hash = ?1",
            [token_hash(token)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let outcome = match row {
        Some((owner, _, _, _)) if owner != device => Err(RefreshRefused::Invalid),
        Some((_, _, _, true)) => {
            tx.execute(
                "UPDATE refresh_token SET spent = 1 WHERE device = ?1",
                [device],
            )?;
            Err(RefreshRefused::Reused)
        }
        Some((_, _, expires, false)) if expires as u64 <= now_ms => Err(RefreshRefused::Invalid),
        Some((_, account, _, false)) => {
            tx.execute(
                "UPDATE refresh_token SET spent = 1 WHERE hash = ?1",
                [token_hash(token)],
            )?;
            Ok(account)
        }
        None => Err(RefreshRefused::Invalid),
    };
    tx.commit()?;
    Ok(outcome)
}

/// Ends a device's session (logout): every refresh token of it is spent, and every access token
/// issued to it stops working.
pub fn end_session(conn: &Connection, device: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE refresh_token SET spent = 1 WHERE device = ?1",
        [device],
    )?;
    conn.execute(
        "UPDATE device SET token_gen = token_gen + 1 WHERE id = ?1",
        [device],
    )?;
    Ok(())
}
