//! Devices: registration, revocation, device keys and refresh tokens.

use crate::store::audit::{Actor, audit, require_admin};
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use sha2::{Digest, Sha256};

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
pub fn device(conn: &Conn<'_>, id: &str) -> Result<Option<Device>, StoreError> {
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

pub(crate) fn device_from_row(
    r: &crate::store::conn::Row<'_>,
) -> Result<Device, crate::store::conn::SqlError> {
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
pub fn devices(conn: &Conn<'_>) -> Result<Vec<(Device, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT d.id, d.account, d.name, d.revoked, d.last_counter, d.last_sync_ms, d.villages,
             d.token_gen, d.key_hash IS NOT NULL, a.username
         FROM device d JOIN account a ON a.id = d.account ORDER BY a.username, d.registered_ms",
    )?;
    let rows = stmt.query_map((), |r| Ok((device_from_row(r)?, r.get(9)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Registers a device at login, or notes that it was seen; a revoked device stays revoked. A
/// device belongs to the account it was first registered to, for ever: a login naming another
/// account's device is refused (device ids are public: every stamp names its writer's).
pub fn register_device(
    conn: &Conn<'_>,
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
pub fn revoke_device(
    conn: &Conn<'_>,
    actor: Actor,
    id: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    require_admin(&tx, actor)?;
    let n = tx.execute("UPDATE device SET revoked = 1 WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no device `{id}`")));
    }
    tx.execute("UPDATE refresh_token SET spent = 1 WHERE device = ?1", [id])?;
    audit(
        &tx,
        actor.account(),
        "revoke_device",
        Some(id),
        None,
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// The SHA-256 of a token, as stored.
pub(crate) fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 244 random bits from the operating system's generator, as hex.
pub(crate) fn random_secret() -> String {
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
    conn: &Conn<'_>,
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
    conn: &Conn<'_>,
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
    conn: &Conn<'_>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRefused {
    /// Unknown, expired, or for another device.
    Invalid,
    /// Spent already: the device's session is revoked.
    Reused,
}

/// Spends a refresh token of a device; returns its account. Spending a spent token revokes
/// every refresh token of that device (a stolen token was used).
pub fn spend_refresh_token(
    conn: &Conn<'_>,
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
pub fn end_session(conn: &Conn<'_>, device: &str) -> Result<(), StoreError> {
    // Both or neither: refresh tokens spent with access tokens still good would be half a logout.
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE refresh_token SET spent = 1 WHERE device = ?1",
        [device],
    )?;
    tx.execute(
        "UPDATE device SET token_gen = token_gen + 1 WHERE id = ?1",
        [device],
    )?;
    tx.commit()?;
    Ok(())
}
