//! Devices and browsers an account signed in from before. A login that proves it comes from one
//! is throttled on its own key, apart from the failures counted on the account and the address:
//! guesses at an officer's password from anywhere else can lock the account for others, never
//! for the phone or browser the officer already uses.
//!
//! A phone proves it with the device key the server gave it at its last sign-in (stored hashed
//! in `device.key_hash`, see `store::accounts`); a console browser with a cookie the server
//! signed, naming the account, the browser and when it was issued.

use crate::auth::mac::MacKey;

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

    /// A new cookie value for a browser that just signed in to `account` at `now_s`.
    pub fn issue(&self, account: i64, now_s: u64) -> String {
        let browser = uuid::Uuid::new_v4().simple().to_string();
        let (account, now) = (account.to_string(), now_s.to_string());
        let tag = self.0.tag(&[&account, &browser, &now]);
        format!("{account}.{browser}.{now}.{tag}")
    }

    /// The throttle key of a browser whose cookie proves it signed in to `account` within
    /// [`BROWSER_TTL_S`], or `None`.
    pub fn check(&self, cookie: &str, account: i64, now_s: u64) -> Option<Vec<String>> {
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
        (named == account.to_string() && fresh && self.0.verify(&[named, browser, issued], tag))
            .then(|| vec![format!("browser:{browser}")])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_browser_cookie_proves_its_account_until_it_expires() {
        let key = BrowserKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let cookie = key.issue(7, 1_000);
        let throttle_key = key.check(&cookie, 7, 2_000).unwrap();
        assert!(throttle_key[0].starts_with("browser:"));
        assert_eq!(key.check(&cookie, 8, 2_000), None, "another account");
        assert_eq!(key.check(&cookie, 7, 1_000 + BROWSER_TTL_S + 1), None);
        let forged = cookie.replacen("7.", "8.", 1);
        assert_eq!(key.check(&forged, 8, 2_000), None);
        let other = BrowserKey::from_secret(b"another secret of thirty-two bytes");
        assert_eq!(other.check(&cookie, 7, 2_000), None);
        assert_eq!(key.check("7.x.1000", 7, 2_000), None);
    }
}
