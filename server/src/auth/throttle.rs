//! Throttling of failed logins, per account name and per client address: after a few failures
//! in a window, further attempts are refused until the window has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per key within the window.
const MAX_FAILURES: usize = 5;
/// The window.
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Recent failures by key (`user:NAME`, `addr:IP`).
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Throttle {
    /// Seconds to wait before `key` may try again, if it must wait.
    pub fn check(&self, key: &str) -> Option<u64> {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let entry = map.entry(key.to_owned()).or_default();
        entry.retain(|t| now.duration_since(*t) < WINDOW);
        if entry.len() < MAX_FAILURES {
            return None;
        }
        let oldest = entry.iter().min().copied().unwrap_or(now);
        Some(
            WINDOW
                .saturating_sub(now.duration_since(oldest))
                .as_secs()
                .max(1),
        )
    }

    /// Records a failure.
    pub fn fail(&self, key: &str) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key.to_owned()).or_default().push(Instant::now());
    }

    /// Forgets failures after a success.
    pub fn succeed(&self, key: &str) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_failure_in_a_row_waits() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES {
            assert_eq!(t.check("user:a"), None);
            t.fail("user:a");
        }
        assert!(t.check("user:a").is_some_and(|s| s > 0));
        assert_eq!(t.check("user:b"), None);
        t.succeed("user:a");
        assert_eq!(t.check("user:a"), None);
    }
}
