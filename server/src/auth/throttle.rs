//! Throttling of failed logins, per account name and per client address: after a few failures
//! in a window, further attempts are refused until the window has passed. The attempts are kept
//! in the store, so every server node counts them (`store::logins` has the rule); here are the
//! keys an attempt counts under and the handle of one attempt.

use std::net::IpAddr;
use std::sync::Arc;

use crate::error::AppError;
use crate::store::{Store, now_ms};

/// Longest username a login may name (accounts have far shorter ones): a longer one is refused
/// before anything of it is remembered or logged.
pub const MAX_USERNAME: usize = 64;

/// The throttle keys of a login attempt, or `None` for a username too long to be anyone's. An
/// IPv6 address counts by its /64 network (one host is given a whole one), and its /48 counts
/// too, with a higher limit (`store::logins`): a site is given a /48, and whoever holds one
/// could otherwise guess from each of its 65,536 /64s in turn.
pub fn login_keys(username: &str, addr: Option<IpAddr>) -> Option<Vec<String>> {
    if username.chars().count() > MAX_USERNAME {
        return None;
    }
    let mut keys = vec![format!("user:{username}")];
    match addr.map(crate::forwarded::client_network) {
        None => keys.push("addr:-".to_owned()),
        Some(IpAddr::V4(v4)) => keys.push(format!("addr:{v4}")),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            keys.push(format!(
                "addr:{:x}:{:x}:{:x}:{:x}::/64",
                s[0], s[1], s[2], s[3]
            ));
            if let Some(site) = addr.and_then(crate::forwarded::client_site) {
                let s = site.segments();
                keys.push(format!("net:{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]));
            }
        }
    }
    Some(keys)
}

/// An attempt under way. End it with [`Reservation::succeed`] or [`Reservation::fail`]; one
/// dropped unended (its request was cancelled) is ended as a failure in the background. A
/// request cancelled while its reservation is being written leaves an attempt no one ends: it
/// counts as in flight for a minute (`store::logins::IN_FLIGHT_MS`), then as a failure.
pub struct Reservation {
    store: Arc<dyn Store>,
    attempt: Option<i64>,
}

impl Reservation {
    /// Reserves an attempt under every key, or refuses it with the seconds to wait.
    pub async fn reserve(
        store: &Arc<dyn Store>,
        keys: Vec<String>,
    ) -> Result<Reservation, AppError> {
        match store.reserve_login(keys, now_ms()).await? {
            Ok(attempt) => Ok(Reservation {
                store: Arc::clone(store),
                attempt: Some(attempt),
            }),
            Err(wait) => Err(AppError::Throttled(wait)),
        }
    }

    /// The attempt succeeded: its reservation is taken back, nothing else.
    pub async fn succeed(mut self) -> Result<(), AppError> {
        self.end(false).await
    }

    /// The attempt failed: it counts from now.
    pub async fn fail(mut self) -> Result<(), AppError> {
        self.end(true).await
    }

    async fn end(&mut self, failed: bool) -> Result<(), AppError> {
        if let Some(attempt) = self.attempt.take() {
            self.store.end_login(attempt, failed, now_ms()).await?;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        // Until then it counts as in flight, on an account as a failure already.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            runtime.spawn(async move {
                if let Err(e) = store.end_login(attempt, true, now_ms()).await {
                    tracing::warn!("login attempt not ended: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_ipv6_host_counts_by_its_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(login_keys("x", Some(a)), login_keys("x", Some(b)));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(login_keys("x", Some(mapped)).unwrap()[1], "addr:192.0.2.7");
        assert_eq!(login_keys(&"x".repeat(MAX_USERNAME + 1), Some(a)), None);
        // Another /64 of the same /48 is another address but the same site.
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let (ka, kc) = (
            login_keys("x", Some(a)).unwrap(),
            login_keys("x", Some(c)).unwrap(),
        );
        assert_ne!(ka[1], kc[1]);
        assert_eq!(ka[2], kc[2]);
        assert_eq!(ka[2], "net:2001:db8:1::/48");
        assert_eq!(login_keys("x", Some(mapped)).unwrap().len(), 2);
    }
}
