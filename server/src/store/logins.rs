//! Login attempts, shared by every server node over the database: the throttle's rule and the
//! rows it reads (`login_attempt`, one per key of an attempt in flight or failed within the
//! window).
//!
//! An attempt is reserved under every key before the password is checked, in one transaction,
//! and counts until it ends: on an account (and on a proven device or known browser, which
//! stand in for it), attempts in flight count as failures, so a burst of concurrent guesses
//! cannot all pass the check before any failure is counted; on an address (a station's
//! officers may share one behind its gateway) at most [`MAX_IN_FLIGHT`] attempts run at once.
//! An attempt that ends well takes back only its own rows, so one account's success never
//! clears the failures other attempts left on the same address; one that ends any other way is
//! a failure, and so is one in flight for longer than [`IN_FLIGHT_MS`] (its node died).

use crate::store::conn::{Conn, params};

use crate::store::error::StoreError;

/// Failures allowed per account (or proven device, or known browser) within the window.
pub const MAX_FAILURES: usize = 5;
/// Failures allowed per address within the window: higher, since a station's officers share
/// one behind its gateway, and one officer's mistyping (or someone's guesses at one account)
/// must not keep the others' new phones from signing in.
pub const MAX_ADDRESS_FAILURES: usize = 30;
/// Failures allowed per IPv6 /48 (a site) within the window, over all its /64s: four
/// addresses' worth, so that one holder of a /48 cannot guess from each of its networks in
/// turn, while a site's officers still have room for their mistakes.
pub const MAX_NETWORK_FAILURES: usize = 4 * MAX_ADDRESS_FAILURES;
/// The window, in milliseconds (15 minutes).
pub const WINDOW_MS: u64 = 15 * 60 * 1000;
/// Most attempts from one address checked at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// An attempt still in flight after this long never ended: its node died mid-check. It counts
/// as a failure (a password check takes well under a second).
pub const IN_FLIGHT_MS: u64 = 60 * 1000;

/// Seconds to wait before another attempt under `key`, 0 when one may be made now: the rule,
/// over the key's failures (when each failed) and attempts in flight.
pub fn wait_s(key: &str, failed_at_ms: &[u64], in_flight: usize, now_ms: u64) -> u64 {
    let recent: Vec<u64> = failed_at_ms
        .iter()
        .copied()
        .filter(|at| now_ms.saturating_sub(*at) < WINDOW_MS)
        .collect();
    // An account, a proven device or a known browser: attempts in flight count. An address or
    // a network is shared (a station's gateway): only its failures do.
    let network = key.starts_with("net:");
    let account = !key.starts_with("addr:") && !network;
    let (counted, allowed) = if account {
        (recent.len() + in_flight, MAX_FAILURES)
    } else if network {
        (recent.len(), MAX_NETWORK_FAILURES)
    } else {
        (recent.len(), MAX_ADDRESS_FAILURES)
    };
    if counted >= allowed {
        let oldest = recent.iter().min().copied().unwrap_or(now_ms);
        let left_ms = WINDOW_MS.saturating_sub(now_ms.saturating_sub(oldest));
        return (left_ms / 1000).max(1);
    }
    let most_in_flight = if network {
        4 * MAX_IN_FLIGHT
    } else {
        MAX_IN_FLIGHT
    };
    u64::from(!account && in_flight >= most_in_flight)
}

/// Reserves an attempt under every key: its id, or the seconds to wait when a key has had its
/// failures (or, for an address, its attempts at once). Attempts past the window are forgotten.
pub fn reserve(
    conn: &Conn<'_>,
    keys: &[String],
    now_ms: u64,
) -> Result<Result<i64, u64>, StoreError> {
    let tx = conn.transaction()?;
    tx.prepare_cached("DELETE FROM login_attempt WHERE at_ms <= ?1")?
        .execute([now_ms.saturating_sub(WINDOW_MS) as i64])?;
    let mut wait = 0;
    for key in keys {
        let (mut failed, mut in_flight) = (Vec::new(), 0);
        let mut rows =
            tx.prepare_cached("SELECT at_ms, failed FROM login_attempt WHERE key = ?1")?;
        let mut rows = rows.query([key])?;
        while let Some(row) = rows.next()? {
            let (at, done): (i64, bool) = (row.get(0)?, row.get(1)?);
            let at = at as u64;
            if done || now_ms.saturating_sub(at) >= IN_FLIGHT_MS {
                failed.push(at);
            } else {
                in_flight += 1;
            }
        }
        wait = wait.max(wait_s(key, &failed, in_flight, now_ms));
    }
    if wait > 0 {
        tx.commit()?;
        return Ok(Err(wait));
    }
    let attempt: i64 = tx.query_row(
        "SELECT coalesce(max(attempt), 0) + 1 FROM login_attempt",
        (),
        |r| r.get(0),
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO login_attempt (key, attempt, at_ms, failed) VALUES (?1, ?2, ?3, 0)",
    )?;
    for key in keys {
        insert.execute(params![key, attempt, now_ms as i64])?;
    }
    drop(insert);
    tx.commit()?;
    Ok(Ok(attempt))
}

/// Ends an attempt: a success takes its rows back, a failure counts from now.
pub fn end(conn: &Conn<'_>, attempt: i64, failed: bool, now_ms: u64) -> Result<(), StoreError> {
    if failed {
        conn.prepare_cached("UPDATE login_attempt SET failed = 1, at_ms = ?2 WHERE attempt = ?1")?
            .execute(params![attempt, now_ms as i64])?;
    } else {
        conn.prepare_cached("DELETE FROM login_attempt WHERE attempt = ?1")?
            .execute([attempt])?;
    }
    Ok(())
}

/// How many keys have attempts remembered.
pub fn keys_remembered(conn: &Conn<'_>) -> Result<u64, StoreError> {
    let count: i64 = conn.query_row("SELECT count(DISTINCT key) FROM login_attempt", (), |r| {
        r.get(0)
    })?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn keys(user: &str, addr: &str) -> Vec<String> {
        vec![format!("user:{user}"), format!("addr:{addr}")]
    }

    /// A store's throttle, the clock set by the test.
    struct Throttle(Db);

    impl Throttle {
        fn new() -> Throttle {
            Throttle(Db::open_in_memory().unwrap())
        }

        fn reserve(&self, keys: &[String], now_ms: u64) -> Result<i64, u64> {
            self.0.call_blocking(|c| reserve(c, keys, now_ms)).unwrap()
        }

        fn end(&self, attempt: i64, failed: bool, now_ms: u64) {
            self.0
                .call_blocking(|c| end(c, attempt, failed, now_ms))
                .unwrap();
        }

        /// Reserves and fails at once.
        fn fail(&self, keys: &[String], now_ms: u64) {
            let attempt = self.reserve(keys, now_ms).unwrap();
            self.end(attempt, true, now_ms);
        }
    }

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn guesses_from_every_64_of_one_48_are_throttled_together_and_no_other_site_is() {
        let t = Throttle::new();
        let from = |net: u16, sub: u16, user: u32| {
            let addr: std::net::IpAddr = format!("2001:db8:{net:x}:{sub:x}::1").parse().unwrap();
            crate::auth::throttle::login_keys(&format!("u{user}"), Some(addr)).unwrap()
        };
        // Each guess from a /64 of its own, at an account of its own: no address or account
        // reaches its limit, the site does.
        for n in 0..MAX_NETWORK_FAILURES as u16 {
            t.fail(&from(1, n, u32::from(n)), T + u64::from(n));
        }
        let later = T + 1_000;
        assert!(t.reserve(&from(1, 9_999, 9_999), later).is_err());
        // Another site, and an IPv4 client, are not held back.
        assert!(t.reserve(&from(2, 0, 1), later).is_ok());
        let v4 = crate::auth::throttle::login_keys("u1", Some([192, 0, 2, 1].into())).unwrap();
        assert!(t.reserve(&v4, later).is_ok());
        // After the window the site may try again.
        assert!(
            t.reserve(&from(1, 9_999, 9_999), T + WINDOW_MS + 1_000)
                .is_ok()
        );
    }

    #[test]
    fn the_sixth_failure_in_a_row_waits_until_the_window_has_passed() {
        let t = Throttle::new();
        for _ in 0..MAX_FAILURES {
            t.fail(&keys("a", "1"), T);
        }
        assert_eq!(
            t.reserve(&keys("a", "2"), T + 1_000),
            Err(WINDOW_MS / 1000 - 1)
        );
        // Another account behind the same address still signs in, until the address has had
        // its own, higher, count of failures.
        let b = t.reserve(&keys("b", "1"), T).unwrap();
        t.end(b, false, T);
        for n in MAX_FAILURES..MAX_ADDRESS_FAILURES {
            t.fail(&keys(&format!("u{n}"), "1"), T);
        }
        assert!(t.reserve(&keys("b", "1"), T).is_err(), "the address waits");
        assert!(t.reserve(&keys("b", "2"), T).is_ok());
        // The window passes: the account may try again.
        assert!(t.reserve(&keys("a", "3"), T + WINDOW_MS).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_account_before_any_is_checked() {
        let t = Throttle::new();
        let held = (0..16)
            .filter(|n| t.reserve(&keys("a", &n.to_string()), T).is_ok())
            .count();
        assert_eq!(held, MAX_FAILURES);
        // Many officers behind one gateway sign in at once, each to their own account.
        let at_once: Vec<i64> = (0..MAX_IN_FLIGHT)
            .map(|n| t.reserve(&keys(&format!("o{n}"), "gateway"), T).unwrap())
            .collect();
        assert!(t.reserve(&keys("late", "gateway"), T).is_err());
        for attempt in at_once {
            t.end(attempt, false, T);
        }
        assert!(t.reserve(&keys("late", "gateway"), T).is_ok());
    }

    #[test]
    fn an_attempt_whose_node_died_counts_as_a_failure() {
        let t = Throttle::new();
        for _ in 0..MAX_FAILURES - 1 {
            t.fail(&keys("a", "1"), T);
        }
        // Reserved, never ended.
        t.reserve(&keys("a", "1"), T).unwrap();
        let later = T + IN_FLIGHT_MS;
        assert!(t.reserve(&keys("a", "1"), later).is_err());
        // The address counts it too, once it is stale.
        for n in 0..MAX_ADDRESS_FAILURES - MAX_FAILURES {
            t.fail(&keys(&format!("g{n}"), "1"), later);
        }
        assert!(t.reserve(&keys("other", "1"), later).is_err());
    }

    #[test]
    fn a_success_takes_back_its_own_attempt_and_no_one_elses() {
        let t = Throttle::new();
        for _ in 0..MAX_FAILURES - 1 {
            t.fail(&keys("victim", "1"), T);
        }
        // The attacker's own account succeeds from the same address: the address keeps the
        // failures of the guesses at the victim's password.
        let own = t.reserve(&keys("attacker", "1"), T).unwrap();
        t.end(own, false, T);
        t.fail(&keys("victim", "1"), T);
        assert!(t.reserve(&keys("victim", "1"), T).is_err());
        for n in 0..MAX_ADDRESS_FAILURES - MAX_FAILURES {
            t.fail(&keys(&format!("guess{n}"), "1"), T);
        }
        assert!(t.reserve(&keys("attacker", "1"), T).is_err());
    }

    #[test]
    fn a_proven_device_counts_its_attempts_in_flight_like_an_account() {
        let t = Throttle::new();
        let device = crate::auth::known::device_throttle_key("d");
        let held = (0..16).filter(|_| t.reserve(&device, T).is_ok()).count();
        assert_eq!(held, MAX_FAILURES);
    }

    #[test]
    fn attempts_past_the_window_are_forgotten() {
        let t = Throttle::new();
        for n in 0..200 {
            t.fail(&keys(&format!("u{n}"), &format!("10.0.0.{n}")), T);
        }
        assert_eq!(t.0.call_blocking(keys_remembered).unwrap(), 400);
        t.reserve(&keys("late", "1"), T + WINDOW_MS).unwrap();
        assert_eq!(t.0.call_blocking(keys_remembered).unwrap(), 2);
    }

    /// One step of a hostile client (or several, on several nodes: they share the store).
    #[derive(Clone, Debug)]
    enum Step {
        /// Reserve an attempt at account `user` from address `addr`.
        Try { user: u8, addr: u8 },
        /// End the oldest attempt in flight: a success or a failure.
        End { failed: bool },
        /// Let time pass (seconds).
        Wait(u32),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3u8, 0..3u8).prop_map(|(user, addr)| Step::Try { user, addr }),
            4 => any::<bool>().prop_map(|failed| Step::End { failed }),
            1 => (0..400u32).prop_map(Step::Wait),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// However attempts interleave, end and age, an account never has more passwords
        /// checked in a window than it is allowed failures, counting those still being checked:
        /// every granted attempt is followed in the log, and at each grant the account's
        /// failures within the window plus its attempts in flight are under the limit.
        #[test]
        fn no_account_gets_more_guesses_than_its_limit(steps in proptest::collection::vec(step(), 1..120)) {
            let t = Throttle::new();
            let mut now = T;
            // Attempts in flight: (id, user, addr, reserved at); ended failures: (user, at).
            let mut in_flight: Vec<(i64, u8, u8, u64)> = Vec::new();
            let mut failed: Vec<(u8, u8, u64)> = Vec::new();
            for step in steps {
                match step {
                    Step::Try { user, addr } => {
                        // Reserved by a node that died: a failure from when it was reserved.
                        let dead = |at: u64| now - at >= IN_FLIGHT_MS && now - at < WINDOW_MS;
                        let recent_user = failed
                            .iter()
                            .filter(|(u, _, at)| *u == user && now - at < WINDOW_MS)
                            .count()
                            + in_flight.iter().filter(|(_, u, _, at)| *u == user && dead(*at)).count();
                        let live_user = in_flight.iter().filter(|(_, u, _, at)| *u == user && now - at < IN_FLIGHT_MS).count();
                        let recent_addr = failed
                            .iter()
                            .filter(|(_, a, at)| *a == addr && now - at < WINDOW_MS)
                            .count()
                            + in_flight.iter().filter(|(_, _, a, at)| *a == addr && dead(*at)).count();
                        let live_addr = in_flight.iter().filter(|(_, _, a, at)| *a == addr && now - at < IN_FLIGHT_MS).count();
                        let allowed = recent_user + live_user < MAX_FAILURES
                            && recent_addr < MAX_ADDRESS_FAILURES
                            && live_addr < MAX_IN_FLIGHT;
                        match t.reserve(&keys(&user.to_string(), &addr.to_string()), now) {
                            Ok(id) => {
                                proptest::prop_assert!(allowed, "granted past the limit");
                                in_flight.push((id, user, addr, now));
                            }
                            Err(wait) => {
                                proptest::prop_assert!(!allowed, "refused within the limit");
                                proptest::prop_assert!((1..=WINDOW_MS / 1000).contains(&wait));
                            }
                        }
                    }
                    Step::End { failed: fail } => {
                        // The oldest attempt still being checked ends; one whose node died never does.
                        if let Some(i) = in_flight.iter().position(|(_, _, _, at)| now - at < IN_FLIGHT_MS) {
                            let (id, user, addr, _) = in_flight.remove(i);
                            t.end(id, fail, now);
                            if fail {
                                failed.push((user, addr, now));
                            }
                        }
                    }
                    Step::Wait(seconds) => now += u64::from(seconds) * 1000,
                }
            }
        }
    }
}
