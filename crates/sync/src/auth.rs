//! The sign-in part of the wire: what a device sends to sign in and refresh, what the server
//! answers, and the codes of its `401` answers. Both sides use these types, so they cannot drift.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
    /// The device's node id (a UUID it generated).
    pub device_id: String,
    /// A name for the device.
    #[serde(default)]
    pub device_name: String,
    /// The device key this device was given at its last sign-in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
}

/// `POST /api/v1/auth/refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// The device the token was issued to.
    pub device_id: String,
    /// The refresh token.
    pub refresh_token: String,
}

/// The account as a device sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Username.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role: `officer`, `reviewer` or `admin`.
    pub role: String,
    /// Station.
    #[serde(default)]
    pub station: Option<String>,
}

/// The answer to a sign-in or a refresh: tokens and who they are for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Bearer token for the API.
    pub access_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Single-use token for the next refresh.
    pub refresh_token: String,
    /// The account.
    pub account: AccountView,
    /// Villages the account sees and writes.
    pub villages: Vec<String>,
    /// Their names (`桥西社区居民委员会`), by code, for a phone to show; a server before this
    /// version sends none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub village_names: std::collections::BTreeMap<String, String>,
    /// Server time, for the device's clock correction.
    pub server_time_ms: u64,
    /// A new device key, sent at every sign-in (and at a refresh when the device has none): the
    /// device keeps it and sends it at its next sign-in. Absent when the last one stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
}

/// Codes of the server's `401` answers, which a device acts on.
pub mod unauthorized {
    /// Wrong username or password (one answer for both).
    pub const BAD_CREDENTIALS: &str = "bad_credentials";
    /// No access token was sent.
    pub const MISSING_TOKEN: &str = "missing_token";
    /// The access token expired: refresh it and ask again.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// The access token is not valid (forged, signed with a key since retired, signed out, or of
    /// an old token generation): refresh it; a refused refresh means signing in again.
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// The device was revoked: it must wipe its data.
    pub const DEVICE_REVOKED: &str = "device_revoked";
    /// The account is disabled.
    pub const ACCOUNT_DISABLED: &str = "account_disabled";
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_sign_in_from_a_device_without_a_key_leaves_the_key_out_and_reads_back() {
        let request = LoginRequest {
            username: "o006001".into(),
            password: "pw".into(),
            device_id: "d".into(),
            device_name: String::new(),
            device_key: None,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(!text.contains("device_key"), "{text}");
        assert_eq!(
            serde_json::from_str::<LoginRequest>(&text).unwrap(),
            request
        );
        // An older client's body without a name still reads.
        let old: LoginRequest =
            serde_json::from_str(r#"{"username":"u","password":"p","device_id":"d"}"#).unwrap();
        assert_eq!(old.device_name, "");
    }
}
