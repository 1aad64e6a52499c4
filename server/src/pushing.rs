//! Pushes under way, by account. A push holds its body while it arrives (up to the body limit,
//! for as long as the body timeout) and its changes until they are applied, whether or not its
//! client waits for the answer: an account's pushes past [`PER_ACCOUNT`] are refused (`429
//! busy`, `Retry-After: 1`) before their body is read, so one account cannot hold the server's
//! memory with bodies it sends slowly or many at once. A phone has one under way (the next is
//! read and encoded while it is applied, and sent once it is answered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Most pushes of one account under way at once: a phone's one, another phone of the same
/// officer's, and those of a phone whose connection was cut, still being applied or read until
/// the body timeout.
pub const PER_ACCOUNT: usize = 4;

/// The pushes under way, counted by account.
#[derive(Debug, Default)]
pub struct Pushing {
    under_way: Mutex<HashMap<i64, usize>>,
}

/// One push under way; it ends when dropped.
#[derive(Debug)]
pub struct Slot {
    pushing: Arc<Pushing>,
    account: i64,
}

impl Pushing {
    /// A slot for a push of `account`, unless it has [`PER_ACCOUNT`] under way already.
    pub fn enter(self: &Arc<Self>, account: i64) -> Option<Slot> {
        let mut under_way = self
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = under_way.entry(account).or_default();
        if *count >= PER_ACCOUNT {
            return None;
        }
        *count += 1;
        Some(Slot {
            pushing: Arc::clone(self),
            account,
        })
    }

    /// How many pushes `account` has under way.
    pub fn under_way(&self, account: i64) -> usize {
        let under_way = self
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        under_way.get(&account).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut under_way = self
            .pushing
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = under_way.get_mut(&self.account) {
            *count -= 1;
            // An account with none under way takes no room.
            if *count == 0 {
                under_way.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_has_at_most_its_share_under_way_and_a_slot_ended_is_free_again() {
        let pushing = Arc::new(Pushing::default());
        let held: Vec<Slot> = (0..PER_ACCOUNT)
            .map(|_| pushing.enter(1).expect("within the share"))
            .collect();
        assert!(pushing.enter(1).is_none());
        // Another account is not held up by the first.
        let other = pushing.enter(2).expect("another account");
        assert_eq!(pushing.under_way(1), PER_ACCOUNT);
        drop(held);
        assert_eq!(pushing.under_way(1), 0);
        assert!(pushing.under_way.lock().unwrap().get(&1).is_none());
        assert!(pushing.enter(1).is_some());
        drop(other);
        assert_eq!(pushing.under_way(2), 0);
    }
}
