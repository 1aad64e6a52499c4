//! Devices and browsers an account signed in from before. A login that proves it comes from one
//! is throttled on its own key, apart from the failures counted on the account and the address:
//! guesses at an officer's password from anywhere else can lock the account for others, never
//! for the phone or browser the officer already uses.
//!
//! A phone proves it with the device key the server gave it (stored hashed in `device.key_hash`,
//! see `store::accounts`); a console browser with a cookie the server signed, naming the
//! account, the browser and when it was issued, and bound to the account's token generation and
//! password hash: disabling the account or changing its password ends every such cookie.

use sha2::{Digest, Sha256};

use crate::auth::mac::MacKey;
use crate::store::accounts::Account;

/// The cookie a console browser keeps.
pub const BROWSER_COOKIE: &str = "baylink_browser";
/// How long a browser stays known without signing in again (180 days).
pub const BROWSER_TTL_S: u64 = 180 * 24 * 3600;

/// The throttle key of a login from a device proven to be the account's.
pub fn device_throttle_key(device: &str) -> Vec<String> {
    vec![format!("device:{device}")]
}

/// Signs and checks known-browser cookies.
#[derive(Clone)]
pub struct BrowserKey(MacKey);

impl BrowserKey {
    /// The known-browser key of a token secret.
    pub fn from_secret(secret: &[u8]) -> BrowserKey {
        BrowserKey(MacKey::derive("baylink known browser", secret))
    }

    /// What a cookie's MAC covers besides the browser and the time: the account, its token
    /// generation and its password hash (hashed, so the cookie key never meets the hash itself).
    fn account_parts(account: &Account) -> [String; 2] {
        let binding = Sha256::digest(format!("{}\n{}", account.token_gen, account.password_hash));
        [
            account.id.to_string(),
            binding.iter().map(|b| format!("{b:02x}")).collect(),
        ]
    }

    fn tag(&self, account: &Account, browser: &str, issued: &str) -> String {
        let [id, binding] = Self::account_parts(account);
        self.0.tag(&[&id, browser, issued, &binding])
    }

    /// A new cookie value for a browser that just signed in to `account` at `now_s`.
    pub fn issue(&self, account: &Account, now_s: u64) -> String {
        let browser = uuid::Uuid::new_v4().simple().to_string();
        let now = now_s.to_string();
        let tag = self.tag(account, &browser, &now);
        format!("{}.{browser}.{now}.{tag}", account.id)
    }

    /// The throttle key of a browser whose cookie proves it signed in to `account` within
    /// [`BROWSER_TTL_S`] (since its last disabling or password change), or `None`.
    pub fn check(&self, cookie: &str, account: &Account, now_s: u64) -> Option<Vec<String>> {
        let mut parts = cookie.split('.');
        let (Some(named), Some(browser), Some(issued), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let fresh = issued
            .parse::<u64>()
            .is_ok_and(|t| t <= now_s && now_s - t <= BROWSER_TTL_S);
        let [id, binding] = Self::account_parts(account);
        let genuine = self.0.verify(&[&id, browser, issued, &binding], tag);
        (named == id && fresh && genuine).then(|| vec![format!("browser:{browser}")])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn account(id: i64) -> Account {
        Account {
            id,
            username: format!("r{id}"),
            display_name: String::new(),
            role: crate::store::accounts::Role::Reviewer,
            station: None,
            password_hash: "$argon2id$one".into(),
            disabled: false,
            token_gen: 0,
        }
    }

    #[test]
    fn a_browser_cookie_proves_its_account_until_it_expires_or_the_account_changes() {
        let key = BrowserKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let r7 = account(7);
        let cookie = key.issue(&r7, 1_000);
        let throttle_key = key.check(&cookie, &r7, 2_000).unwrap();
        assert!(throttle_key[0].starts_with("browser:"));
        assert_eq!(
            key.check(&cookie, &account(8), 2_000),
            None,
            "another account"
        );
        assert_eq!(key.check(&cookie, &r7, 1_000 + BROWSER_TTL_S + 1), None);
        let disabled_once = Account {
            token_gen: 1,
            ..account(7)
        };
        assert_eq!(key.check(&cookie, &disabled_once, 2_000), None);
        let new_password = Account {
            password_hash: "$argon2id$two".into(),
            ..account(7)
        };
        assert_eq!(key.check(&cookie, &new_password, 2_000), None);
        let forged = cookie.replacen("7.", "8.", 1);
        assert_eq!(key.check(&forged, &account(8), 2_000), None);
        let other = BrowserKey::from_secret(b"another secret of thirty-two bytes");
        assert_eq!(other.check(&cookie, &r7, 2_000), None);
        assert_eq!(key.check("7.x.1000", &r7, 2_000), None);
    }
}
