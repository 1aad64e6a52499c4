//! A device's sign-in, refresh and access-token check: accounts and devices read and written
//! together, each step one unit of work.

use crate::store::conn::Conn;

use crate::store::accounts::{self, Account};
use crate::store::devices::{self, Device, KeyMatch, RefreshRefused};
use crate::store::error::StoreError;

/// The device and account an access token names, as stored now.
#[derive(Clone, Debug)]
pub struct TokenHolder {
    /// The device.
    pub device: Option<Device>,
    /// The account.
    pub account: Option<Account>,
    /// The account's villages.
    pub villages: Vec<String>,
}

/// Reads the device and account of an access token.
pub fn token_holder(
    conn: &Conn<'_>,
    device: &str,
    account: i64,
) -> Result<TokenHolder, StoreError> {
    let device = devices::device(conn, device)?;
    let account = accounts::account_by_id(conn, account)?;
    let villages = match &account {
        Some(a) => accounts::villages_of(conn, a)?,
        None => Vec::new(),
    };
    Ok(TokenHolder {
        device,
        account,
        villages,
    })
}

/// What a device key presented at sign-in proved.
#[derive(Clone, Debug)]
pub struct SignInLookup {
    /// The account of that name, if any.
    pub account: Option<Account>,
    /// Whether the device key is the device's current or previous one, for that account.
    pub key: KeyMatch,
}

/// The account of a sign-in name and what the presented device key proves.
pub fn sign_in_lookup(
    conn: &Conn<'_>,
    username: &str,
    device: &str,
    key: Option<&str>,
) -> Result<SignInLookup, StoreError> {
    let account = accounts::account_by_username(conn, username)?;
    let key = match key {
        Some(key) => {
            devices::device_key_matches(conn, device, account.as_ref().map(|a| a.id), key)?
        }
        None => KeyMatch::No,
    };
    Ok(SignInLookup { account, key })
}

/// When a session hands the device a new device key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewKey {
    /// A sign-in that proved the key last given: the device keeps it.
    Keep,
    /// Any other sign-in: a new key; the one the device proved (the key before the last), or
    /// else the last one, keeps counting beside it.
    Rotate(Option<String>),
    /// A refresh: a key only when the device has none yet (registered before device keys).
    IfMissing,
}

/// A device session opened: what the sign-in answer carries besides the access token.
#[derive(Clone, Debug)]
pub struct DeviceSession {
    /// The refresh token.
    pub refresh_token: String,
    /// The account's villages.
    pub villages: Vec<String>,
    /// Their names, by code, as the server's places hold them.
    pub village_names: std::collections::BTreeMap<String, String>,
    /// The device's token generation, for the access token.
    pub device_gen: i64,
    /// A new device key, when one was issued.
    pub device_key: Option<String>,
}

/// Opens a device session in one transaction: a refresh token, and a device key as `key` says.
pub fn open_device_session(
    conn: &Conn<'_>,
    device: &str,
    account: &Account,
    now_ms: u64,
    ttl_ms: u64,
    key: NewKey,
) -> Result<DeviceSession, StoreError> {
    let tx = conn.transaction()?;
    // A sign-in (not a refresh, which every phone makes every few minutes) is audited with it.
    if key != NewKey::IfMissing {
        let proven = if key == NewKey::Keep {
            "proven device"
        } else {
            "new device key"
        };
        crate::store::audit::audit(
            &tx,
            Some(account.id),
            "device_sign_in",
            Some(device),
            Some(proven),
            now_ms,
        )?;
    }
    let refresh_token = devices::issue_refresh_token(&tx, device, account.id, now_ms, ttl_ms)?;
    let stored = devices::device(&tx, device)?;
    let device_gen = stored.as_ref().map_or(0, |d| d.token_gen);
    let device_key = match key {
        NewKey::Keep => None,
        NewKey::IfMissing if stored.is_some_and(|d| d.has_key) => None,
        NewKey::IfMissing => Some(devices::issue_device_key(&tx, device, None)?),
        NewKey::Rotate(kept) => Some(devices::issue_device_key(&tx, device, kept.as_deref())?),
    };
    // The villages of the account as stored now, not as the caller read it.
    let stored = accounts::account_by_id(&tx, account.id)?
        .ok_or_else(|| StoreError::NotFound("no such account".into()))?;
    let villages = accounts::villages_of(&tx, &stored)?;
    let village_names = crate::store::places::village_names(&tx, &villages)?;
    tx.commit()?;
    Ok(DeviceSession {
        refresh_token,
        villages,
        village_names,
        device_gen,
        device_key,
    })
}

/// A refresh token spent.
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// The account it was issued to, or why it was refused.
    pub outcome: Result<i64, RefreshRefused>,
    /// That account, if it still exists.
    pub account: Option<Account>,
    /// Whether the device was revoked.
    pub revoked: bool,
}

/// Spends a refresh token and reads what the new session needs.
pub fn spend_refresh_token(
    conn: &Conn<'_>,
    token: &str,
    device: &str,
    now_ms: u64,
) -> Result<Refreshed, StoreError> {
    let outcome = devices::spend_refresh_token(conn, token, device, now_ms)?;
    let account = match outcome {
        Ok(id) => accounts::account_by_id(conn, id)?,
        Err(_) => None,
    };
    let revoked = devices::device(conn, device)?.is_some_and(|d| d.revoked);
    Ok(Refreshed {
        outcome,
        account,
        revoked,
    })
}
