//! Throttling of failed logins, per account name and per client address: after a few failures
//! in a window, further attempts are refused until the window has passed.
//!
//! An attempt is reserved under every key before the password is checked, in one step under
//! one lock, and counts until it ends: on an account (and on a proven device or known browser,
//! which stand in for it), attempts in flight count as failures, so a
//! burst of concurrent guesses cannot all pass the check before any failure is counted; on an
//! address (a station's officers may share one behind its gateway) at most [`MAX_IN_FLIGHT`]
//! attempts run at once. An attempt that ends well takes back only its own reservation, so one
//! account's success never clears the failures other attempts left on the same address; one that
//! ends any other way is a failure. Memory is bounded: at most [`MAX_KEYS`] keys.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed per account (or proven device, or known browser) within the window.
const MAX_FAILURES: usize = 5;
/// Failures allowed per address within the window: higher, since a station's officers share
/// one behind its gateway, and one officer's mistyping (or someone's guesses at one account)
/// must not keep the others' new phones from signing in.
const MAX_ADDRESS_FAILURES: usize = 30;
/// The window.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most keys remembered.
pub const MAX_KEYS: usize = 50_000;
/// Most attempts from one address checked at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Longest username a login may name (accounts have far shorter ones): a longer one is refused
/// before anything of it is remembered or logged.
pub const MAX_USERNAME: usize = 64;

/// The throttle keys of a login attempt, or `None` for a username too long to be anyone's. An
/// IPv6 address counts by its /64 network: one host is given a whole one.
pub fn login_keys(username: &str, addr: Option<IpAddr>) -> Option<Vec<String>> {
    let addr = match addr {
        None => "-".to_owned(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    };
    (username.chars().count() <= MAX_USERNAME)
        .then(|| vec![format!("user:{username}"), format!("addr:{addr}")])
}

/// What is known of one key.
#[derive(Default)]
struct Attempts {
    /// When recent attempts failed.
    failed: Vec<Instant>,
    /// Attempts being checked now.
    in_flight: usize,
}

/// Recent failures and attempts in flight, by key (`user:NAME`, `addr:IP`).
#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Attempts>>,
}

/// An attempt under way: a failure unless [`Reservation::succeed`] is called.
pub struct Reservation {
    throttle: Arc<Throttle>,
    keys: Vec<String>,
    done: bool,
}

impl Throttle {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attempts>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves an attempt under every key; or the seconds to wait when a key has had its
    /// failures (or, for an address, its attempts at once).
    pub fn reserve(self: &Arc<Self>, keys: &[String]) -> Result<Reservation, u64> {
        let mut map = self.map();
        let now = Instant::now();
        let mut wait = 0;
        for key in keys {
            let Some(entry) = map.get_mut(key) else {
                continue;
            };
            entry.failed.retain(|t| now.duration_since(*t) < WINDOW);
            // An account, a proven device or a known browser: attempts in flight count. An address
            // is shared (a station's gateway): only its failures do.
            let account = !key.starts_with("addr:");
            let counted = entry.failed.len() + if account { entry.in_flight } else { 0 };
            let allowed = if account {
                MAX_FAILURES
            } else {
                MAX_ADDRESS_FAILURES
            };
            if counted >= allowed {
                let oldest = entry.failed.iter().min().copied().unwrap_or(now);
                let left = WINDOW.saturating_sub(now.duration_since(oldest)).as_secs();
                wait = wait.max(left.max(1));
            } else if !account && entry.in_flight >= MAX_IN_FLIGHT {
                wait = wait.max(1);
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for key in keys {
            if !map.contains_key(key) && map.len() >= MAX_KEYS {
                forget_stalest(&mut map, now);
            }
            map.entry(key.clone()).or_default().in_flight += 1;
        }
        Ok(Reservation {
            throttle: Arc::clone(self),
            keys: keys.to_vec(),
            done: false,
        })
    }

    fn end(&self, keys: &[String], failed: bool) {
        let mut map = self.map();
        let now = Instant::now();
        for key in keys {
            if let Some(entry) = map.get_mut(key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                if failed {
                    entry.failed.push(now);
                }
                if entry.in_flight == 0 && entry.failed.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Reservation {
    /// The attempt succeeded: its reservation is taken back, nothing else.
    pub fn succeed(mut self) {
        self.done = true;
        self.throttle.end(&self.keys, false);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.end(&self.keys, true);
        }
    }
}

/// Makes room for a key: expired ones go, and if none had, the one whose last failure is oldest
/// among those not throttled (a flood of new names must not buy a throttled account its
/// failures back); keys with attempts in flight stay.
fn forget_stalest(map: &mut HashMap<String, Attempts>, now: Instant) {
    let before = map.len();
    map.retain(|_, a| a.in_flight > 0 || a.failed.iter().any(|t| now.duration_since(*t) < WINDOW));
    if map.len() < before {
        return;
    }
    let stalest = |throttled: bool| {
        map.iter()
            .filter(|(_, a)| a.in_flight == 0 && (a.failed.len() >= MAX_FAILURES) == throttled)
            .min_by_key(|(_, a)| a.failed.iter().max().copied())
            .map(|(key, _)| key.clone())
    };
    let stalest = stalest(false).or_else(|| stalest(true));
    if let Some(key) = stalest {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keys(user: &str, addr: &str) -> Vec<String> {
        vec![format!("user:{user}"), format!("addr:{addr}")]
    }

    #[test]
    fn the_sixth_failure_in_a_row_waits() {
        let t = Arc::new(Throttle::default());
        for _ in 0..MAX_FAILURES {
            // Dropped without success: a failure.
            drop(t.reserve(&keys("a", "1")).unwrap());
        }
        assert!(t.reserve(&keys("a", "2")).is_err_and(|s| s > 0));
        // Another account behind the same address still signs in, until the address has had
        // its own, higher, count of failures.
        t.reserve(&keys("b", "1")).unwrap().succeed();
        for n in MAX_FAILURES..MAX_ADDRESS_FAILURES {
            drop(t.reserve(&keys(&format!("u{n}"), "1")).unwrap());
        }
        assert!(t.reserve(&keys("b", "1")).is_err(), "the address waits");
        assert!(t.reserve(&keys("b", "2")).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_account_before_any_is_checked() {
        let t = Arc::new(Throttle::default());
        let held: Vec<Reservation> = (0..16)
            .filter_map(|n| t.reserve(&keys("a", &n.to_string())).ok())
            .collect();
        assert_eq!(held.len(), MAX_FAILURES);
        // Many officers behind one gateway sign in at once, each to their own account.
        let at_once: Vec<Reservation> = (0..MAX_IN_FLIGHT)
            .map(|n| t.reserve(&keys(&format!("o{n}"), "gateway")).unwrap())
            .collect();
        assert!(t.reserve(&keys("late", "gateway")).is_err());
        for r in at_once {
            r.succeed();
        }
        assert!(t.reserve(&keys("late", "gateway")).is_ok());
    }

    #[test]
    fn a_success_takes_back_its_own_attempt_and_no_one_elses() {
        let t = Arc::new(Throttle::default());
        for _ in 0..MAX_FAILURES - 1 {
            drop(t.reserve(&keys("victim", "1")).unwrap());
        }
        // The attacker's own account succeeds from the same address: the address keeps the
        // failures of the guesses at the victim's password.
        t.reserve(&keys("attacker", "1")).unwrap().succeed();
        drop(t.reserve(&keys("victim", "1")).unwrap());
        assert!(t.reserve(&keys("victim", "1")).is_err());
        for n in 0..MAX_ADDRESS_FAILURES - MAX_FAILURES {
            drop(t.reserve(&keys(&format!("guess{n}"), "1")).unwrap());
        }
        assert!(t.reserve(&keys("attacker", "1")).is_err());
    }

    #[test]
    fn a_proven_device_counts_its_attempts_in_flight_like_an_account() {
        let t = Arc::new(Throttle::default());
        let device = crate::auth::known::device_throttle_key("d");
        let held: Vec<Reservation> = (0..16).filter_map(|_| t.reserve(&device).ok()).collect();
        assert_eq!(held.len(), MAX_FAILURES);
    }

    #[test]
    fn an_ipv6_host_counts_by_its_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(login_keys("x", Some(a)), login_keys("x", Some(b)));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(login_keys("x", Some(mapped)).unwrap()[1], "addr:192.0.2.7");
        assert_eq!(login_keys(&"x".repeat(MAX_USERNAME + 1), Some(a)), None);
    }

    #[test]
    fn a_flood_of_new_names_does_not_free_a_throttled_account() {
        let t = Arc::new(Throttle::default());
        for _ in 0..MAX_FAILURES {
            drop(t.reserve(&[String::from("user:victim")]).unwrap());
        }
        for n in 0..MAX_KEYS + 10 {
            drop(t.reserve(&[format!("user:{n}")]));
        }
        assert!(t.reserve(&[String::from("user:victim")]).is_err());
    }

    #[test]
    fn memory_stays_bounded_however_many_names_are_tried() {
        let t = Arc::new(Throttle::default());
        for n in 0..MAX_KEYS + 100 {
            drop(t.reserve(&[format!("user:{n}")]));
        }
        assert!(t.len() <= MAX_KEYS, "{}", t.len());
    }
}
