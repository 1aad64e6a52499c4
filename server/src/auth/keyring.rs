//! The token keys a node signs and verifies with, as last read from the store: the newest key
//! in use signs access tokens (naming it, `kid`), pull cursors and known-browser cookies; every
//! key in use verifies them. A key added on another node (or at the command line) is read
//! within [`RELOAD_EVERY`], or at once when a token names a key this node does not know yet;
//! until then this node signs with the key before it, which every node still takes.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use baylink_sync::wire::Cursor;
use jsonwebtoken::{Algorithm, Header};

use crate::auth::token::{Claims, Keys};
use crate::error::AppError;
use crate::store::Store;
use crate::store::accounts::Account;
use crate::store::token_keys::TokenKey;

/// How often a node reads the keys again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Least time between two reads prompted by tokens naming an unknown key (a forged `kid` must
/// not make every request read the store).
const RELOAD_AT_MOST: Duration = Duration::from_secs(1);

/// The keys in use, oldest first: the last signs. Retired keys are kept for one thing: a pull
/// cursor one of them signed is read for its position only (`cursor::position_only`), so a
/// phone offline across a key's retirement still syncs.
pub struct KeyRing {
    keys: Vec<(String, Keys)>,
    retired: Vec<Keys>,
}

/// Why a token was not taken.
enum Refused {
    /// It names a key this ring does not hold.
    UnknownKey,
    /// Otherwise (forged, expired, malformed).
    Error(AppError),
}

fn invalid() -> AppError {
    AppError::Unauthorized(
        baylink_sync::auth::unauthorized::INVALID_TOKEN,
        "access token invalid".into(),
    )
}

impl KeyRing {
    /// The ring of the stored keys not retired; refused when there is none.
    pub fn from_stored(stored: &[TokenKey]) -> Result<KeyRing, AppError> {
        let keys = stored
            .iter()
            .filter(|k| k.retired_ms.is_none())
            .map(|k| Ok((k.id.clone(), Keys::from_secret(&k.secret)?)))
            .collect::<Result<Vec<_>, AppError>>()?;
        if keys.is_empty() {
            return Err(AppError::Internal("no token key in use".into()));
        }
        let retired = stored
            .iter()
            .filter(|k| k.retired_ms.is_some())
            .map(|k| Keys::from_secret(&k.secret))
            .collect::<Result<Vec<_>, AppError>>()?;
        Ok(KeyRing { keys, retired })
    }

    fn signing(&self) -> &(String, Keys) {
        self.keys
            .last()
            .unwrap_or_else(|| unreachable!("a ring holds a key (from_stored)"))
    }

    fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The id of the key that signs.
    pub fn signing_id(&self) -> &str {
        &self.signing().0
    }

    /// Signs claims with the newest key, naming it.
    pub fn issue(&self, claims: &Claims) -> Result<String, AppError> {
        let (id, keys) = self.signing();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(id.clone());
        keys.issue_with(&header, claims)
    }

    fn check(&self, token: &str) -> Result<Claims, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Error(invalid()))?;
        match header.kid {
            Some(kid) => match self.keys.iter().find(|(id, _)| *id == kid) {
                Some((_, keys)) => keys.verify(token).map_err(Refused::Error),
                None => Err(Refused::UnknownKey),
            },
            // A token from before keys had ids: whichever key signed it.
            None => {
                let mut last = invalid();
                for (_, keys) in self.keys.iter().rev() {
                    match keys.verify(token) {
                        Ok(claims) => return Ok(claims),
                        Err(e) => last = e,
                    }
                }
                Err(Refused::Error(last))
            }
        }
    }

    /// Signs a pull cursor for `device` with the newest key, for the database `instance`.
    pub fn sign_cursor(&self, device: &str, cursor: &Cursor, instance: &str) -> Cursor {
        self.signing().1.cursor.sign(device, cursor, instance)
    }

    /// The cursor `device` presents, as a key in use signed it (see `CursorKey::open`); one a
    /// retired key signed, for its position only; any other is refused.
    pub fn open_cursor(
        &self,
        device: &str,
        cursor: Option<&Cursor>,
        instance: &str,
    ) -> Result<Option<Cursor>, AppError> {
        let mut refused = None;
        for (_, keys) in self.keys.iter().rev() {
            match keys.cursor.open(device, cursor.cloned(), instance) {
                Ok(opened) => return Ok(opened),
                Err(e) => refused = Some(e),
            }
        }
        for keys in &self.retired {
            if let Ok(Some(opened)) = keys.cursor.open(device, cursor.cloned(), instance) {
                return Ok(Some(crate::auth::cursor::position_only(&opened.0)));
            }
        }
        Err(refused.unwrap_or_else(invalid))
    }

    /// A new known-browser cookie, signed with the newest key.
    pub fn issue_browser(&self, account: &Account, now_s: u64) -> String {
        self.signing().1.browser.issue(account, now_s)
    }

    /// The throttle key of a browser whose cookie a key in use signed (see `BrowserKey::check`).
    pub fn check_browser(
        &self,
        cookie: &str,
        account: &Account,
        now_s: u64,
    ) -> Option<Vec<String>> {
        self.keys
            .iter()
            .rev()
            .find_map(|(_, keys)| keys.browser.check(cookie, account, now_s))
    }
}

/// A node's key ring, read again from the store now and then, and the database instance its
/// cursors name (`cursor::mac_parts`).
pub struct TokenKeys {
    ring: RwLock<Arc<KeyRing>>,
    read_at: Mutex<Instant>,
    instance: String,
}

impl TokenKeys {
    /// A node's keys, starting from a ring read from the store, over the database `instance`
    /// (empty for one never put back from a backup).
    pub fn new(ring: KeyRing, instance: String) -> TokenKeys {
        TokenKeys {
            instance,
            ring: RwLock::new(Arc::new(ring)),
            // As if read a while ago: the first unknown key reads again at once.
            read_at: Mutex::new(
                Instant::now()
                    .checked_sub(RELOAD_AT_MOST)
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    /// The ring as last read.
    pub fn current(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the keys from the store again.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), AppError> {
        let stored = store.token_keys().await?;
        let ring = KeyRing::from_stored(&stored)?;
        let mut held = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        if held.ids() != ring.ids() {
            // An operator checks here that every node took a key change.
            tracing::info!(
                signs = ring.signing_id(),
                verify = ring.keys.len(),
                "token keys read"
            );
        }
        *held = Arc::new(ring);
        drop(held);
        *self.read_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }

    /// Reads the keys again unless that was done in the last second (a forged key id must not
    /// make every request read the store); answers whether it read them.
    async fn reload_if_due(&self, store: &dyn Store) -> bool {
        let due = {
            let mut read_at = self.read_at.lock().unwrap_or_else(PoisonError::into_inner);
            let due = read_at.elapsed() >= RELOAD_AT_MOST;
            if due {
                // Claimed now, so requests arriving meanwhile do not read too.
                *read_at = Instant::now();
            }
            due
        };
        if !due {
            return false;
        }
        match self.reload(store).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("token keys not read again: {e}");
                false
            }
        }
    }

    /// Verifies an access token: a token naming a key this node has not read yet reads the
    /// keys again before it is refused.
    pub async fn verify(&self, token: &str, store: &dyn Store) -> Result<Claims, AppError> {
        match self.current().check(token) {
            Ok(claims) => return Ok(claims),
            Err(Refused::Error(e)) => return Err(e),
            Err(Refused::UnknownKey) => {}
        }
        self.reload_if_due(store).await;
        self.current()
            .check(token)
            .map_err(|refused| match refused {
                Refused::UnknownKey => invalid(),
                Refused::Error(e) => e,
            })
    }

    /// Opens a pull cursor (`KeyRing::open_cursor`): one no key this node holds opens reads the
    /// keys again first, as it may come from a node that signs with a key added since.
    pub async fn open_cursor(
        &self,
        device: &str,
        cursor: Option<&Cursor>,
        store: &dyn Store,
    ) -> Result<Option<Cursor>, AppError> {
        let refused = match self.current().open_cursor(device, cursor, &self.instance) {
            Ok(opened) => return Ok(opened),
            Err(e) => e,
        };
        if self.reload_if_due(store).await {
            return self.current().open_cursor(device, cursor, &self.instance);
        }
        Err(refused)
    }

    /// Signs a pull cursor for `device` (`KeyRing::sign_cursor`).
    pub fn sign_cursor(&self, device: &str, cursor: &Cursor) -> Cursor {
        self.current().sign_cursor(device, cursor, &self.instance)
    }

    /// Checks a known-browser cookie (`KeyRing::check_browser`), reading the keys again first
    /// when none this node holds signed it.
    pub async fn check_browser(
        &self,
        cookie: &str,
        account: &Account,
        now_s: u64,
        store: &dyn Store,
    ) -> Option<Vec<String>> {
        if let Some(keys) = self.current().check_browser(cookie, account, now_s) {
            return Some(keys);
        }
        if self.reload_if_due(store).await {
            return self.current().check_browser(cookie, account, now_s);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::accounts::Role;

    fn key(id: &str, secret: u8, retired: bool) -> TokenKey {
        TokenKey {
            id: id.into(),
            secret: vec![secret; 32],
            created_ms: u64::from(secret),
            retired_ms: retired.then_some(9),
        }
    }

    fn claims() -> Claims {
        crate::auth::token::tests::claims(4_000_000_000)
    }

    fn taken(ring: &KeyRing, token: &str) -> bool {
        ring.check(token).is_ok()
    }

    #[test]
    fn a_key_added_signs_the_old_one_verifies_until_retired() {
        let old = KeyRing::from_stored(&[key("k1", 1, false)]).unwrap();
        let before = old.issue(&claims()).unwrap();
        let unnamed = Keys::from_secret(&[1; 32])
            .unwrap()
            .issue(&claims())
            .unwrap();
        let both = KeyRing::from_stored(&[key("k1", 1, false), key("k2", 2, false)]).unwrap();
        assert_eq!(both.signing_id(), "k2");
        let after = both.issue(&claims()).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(),
            Some("k2")
        );
        assert!(taken(&both, &before) && taken(&both, &after) && taken(&both, &unnamed));
        // The old ring does not know k2 yet: the node reads the keys again (TokenKeys::verify).
        assert!(matches!(old.check(&after), Err(Refused::UnknownKey)));
        let retired = KeyRing::from_stored(&[key("k1", 1, true), key("k2", 2, false)]).unwrap();
        assert!(taken(&retired, &after));
        assert!(!taken(&retired, &before) && !taken(&retired, &unnamed));
        // A token naming k2 but signed with another secret is refused, not retried.
        let forged = KeyRing::from_stored(&[key("k2", 3, false)])
            .unwrap()
            .issue(&claims())
            .unwrap();
        assert!(matches!(retired.check(&forged), Err(Refused::Error(_))));
        assert!(KeyRing::from_stored(&[key("k1", 1, true)]).is_err());
    }

    #[test]
    fn a_cursor_of_a_retired_key_keeps_its_position_and_a_forged_one_is_refused() {
        let old = KeyRing::from_stored(&[key("k1", 1, false)]).unwrap();
        let cursor = Cursor("s42:441303006001".into());
        let signed = old.sign_cursor("dev", &cursor, "");
        let rotated = KeyRing::from_stored(&[key("k1", 1, false), key("k2", 2, false)]).unwrap();
        assert_eq!(
            rotated.open_cursor("dev", Some(&signed), "").unwrap(),
            Some(cursor)
        );
        let retired = KeyRing::from_stored(&[key("k1", 1, true), key("k2", 2, false)]).unwrap();
        assert_eq!(
            retired.open_cursor("dev", Some(&signed), "").unwrap(),
            Some(Cursor("s42".into()))
        );
        assert!(retired.open_cursor("other", Some(&signed), "").is_err());
        let forged = KeyRing::from_stored(&[key("k9", 9, false)])
            .unwrap()
            .sign_cursor("dev", &Cursor("s1:x".into()), "");
        assert!(retired.open_cursor("dev", Some(&forged), "").is_err());
    }

    #[test]
    fn a_browser_cookie_of_a_retired_key_proves_nothing() {
        let account = Account {
            id: 7,
            username: "r7".into(),
            display_name: String::new(),
            role: Role::Reviewer,
            station: None,
            password_hash: "$argon2id$one".into(),
            disabled: false,
            token_gen: 0,
        };
        let old = KeyRing::from_stored(&[key("k1", 1, false)]).unwrap();
        let cookie = old.issue_browser(&account, 1_000);
        let rotated = KeyRing::from_stored(&[key("k1", 1, false), key("k2", 2, false)]).unwrap();
        assert!(rotated.check_browser(&cookie, &account, 2_000).is_some());
        let retired = KeyRing::from_stored(&[key("k1", 1, true), key("k2", 2, false)]).unwrap();
        assert_eq!(retired.check_browser(&cookie, &account, 2_000), None);
    }

    proptest::proptest! {
        /// Whatever key id a hostile client names and whatever secret it signs with, a token is
        /// taken only when a key in use (by the id it names, or any, when it names none) signed
        /// it: never one a retired key or a guessed secret signed.
        #[test]
        fn only_a_key_in_use_makes_a_token(
            kid in proptest::option::of("[ -~]{0,24}"),
            secret in proptest::collection::vec(proptest::prelude::any::<u8>(), 32..40),
            signer in 0usize..3,
        ) {
            let ring = KeyRing::from_stored(&[key("k1", 1, true), key("k2", 2, false), key("k3", 3, false)])
                .unwrap();
            // Signed with the retired key, a key in use, or the client's own secret.
            let (signed_with, in_use) = match signer {
                0 => (vec![1u8; 32], false),
                1 => (vec![3u8; 32], true),
                _ => (secret.clone(), secret == vec![2u8; 32] || secret == vec![3u8; 32]),
            };
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.clone();
            let token = Keys::from_secret(&signed_with).unwrap().issue_with(&header, &claims()).unwrap();
            let names_its_signer = match kid.as_deref() {
                None => true,
                Some("k3") => signed_with == vec![3u8; 32],
                Some("k2") => signed_with == vec![2u8; 32],
                Some(_) => false,
            };
            proptest::prop_assert_eq!(taken(&ring, &token), in_use && names_its_signer);
        }
    }
}
