//! Hybrid logical clock: 48 bits of milliseconds since the Unix epoch and a 16-bit counter in one
//! `u64`, so readings order as integers. Physical time comes from outside (`PhysicalClock`) and
//! is corrected by the offset to server time learned at each sync; phones' clocks are often wrong.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One reading of a hybrid logical clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(u64);

impl Hlc {
    /// The smallest reading, below every real one.
    pub const ZERO: Hlc = Hlc(0);
    const COUNTER_BITS: u32 = 16;
    const MAX_MILLIS: u64 = (1 << 48) - 1;

    /// A reading from milliseconds (48 bits kept) and a counter.
    pub fn new(millis: u64, counter: u16) -> Hlc {
        Hlc((millis.min(Self::MAX_MILLIS) << Self::COUNTER_BITS) | u64::from(counter))
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }

    /// The logical counter within the millisecond.
    pub fn counter(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }

    /// The packed form, ordered like the reading.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The reading from its packed form.
    pub fn from_u64(packed: u64) -> Hlc {
        Hlc(packed)
    }

    /// The next reading after this one in the same or a later millisecond.
    fn successor(self) -> Hlc {
        match self.counter() {
            u16::MAX => Hlc::new(self.millis() + 1, 0),
            c => Hlc::new(self.millis(), c + 1),
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A source of physical time in milliseconds since the Unix epoch.
pub trait PhysicalClock: Send + Sync {
    /// Now, as this clock reads it (which may be wrong by days on a phone).
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl PhysicalClock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that tests and simulations set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ms))
    }

    /// Sets the reading.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the reading forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl PhysicalClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The state of one node's hybrid logical clock: the last reading issued and the correction
/// to apply to its physical clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    last: Hlc,
    offset_ms: i64,
}

impl Clock {
    /// A clock resuming from its last reading and offset (as persisted by the store).
    pub fn new(last: Hlc, offset_ms: i64) -> Clock {
        Clock { last, offset_ms }
    }

    /// The last reading issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Milliseconds to add to the physical clock to get server time.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Physical time corrected by the learned offset.
    pub fn corrected(&self, physical_ms: u64) -> u64 {
        physical_ms.saturating_add_signed(self.offset_ms)
    }

    /// A new reading for a local event: later than every reading before it.
    pub fn tick(&mut self, physical_ms: u64) -> Hlc {
        let now = Hlc::new(self.corrected(physical_ms), 0);
        self.last = if now > self.last {
            now
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Takes in a reading from another node, so that later local readings order after it.
    pub fn observe(&mut self, remote: Hlc) {
        self.last = self.last.max(remote);
    }

    /// Learns the offset to server time from a server reading `server_ms` received when the
    /// physical clock read `physical_ms`.
    pub fn learn_offset(&mut self, server_ms: u64, physical_ms: u64) {
        self.offset_ms = server_ms as i64 - physical_ms as i64;
    }

    /// Forgets readings above `floor`: after the server refused stamps from a clock that ran
    /// ahead, the node restamps from corrected time instead of staying in the future forever.
    pub fn rebase(&mut self, floor: Hlc) {
        self.last = floor;
    }
}

/// Whether a stamp lies further in the future than the server allows.
pub fn too_far_ahead(stamp: Hlc, server_now_ms: u64, max_ahead_ms: u64) -> bool {
    stamp.millis() > server_now_ms.saturating_add(max_ahead_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_millis_and_counter_in_order() {
        let a = Hlc::new(1_700_000_000_000, 7);
        assert_eq!((a.millis(), a.counter()), (1_700_000_000_000, 7));
        assert!(Hlc::new(1, u16::MAX) < Hlc::new(2, 0));
        assert_eq!(Hlc::from_u64(a.as_u64()), a);
    }

    #[test]
    fn ticks_are_strictly_increasing_even_when_time_stands_still_or_goes_back() {
        let mut clock = Clock::default();
        let a = clock.tick(1000);
        let b = clock.tick(1000);
        let c = clock.tick(500);
        assert!(a < b && b < c);
        assert_eq!(c.millis(), 1000);
        let mut full = Clock::new(Hlc::new(5, u16::MAX), 0);
        assert_eq!(full.tick(1), Hlc::new(6, 0));
    }

    #[test]
    fn observing_a_later_reading_moves_the_clock_past_it() {
        let mut clock = Clock::default();
        clock.observe(Hlc::new(9_000, 3));
        assert_eq!(clock.tick(1_000), Hlc::new(9_000, 4));
    }

    #[test]
    fn a_learned_offset_corrects_a_wrong_phone_clock() {
        let day = 86_400_000;
        let mut clock = Clock::default();
        // The phone runs two days ahead; the server says its real time.
        clock.learn_offset(10 * day, 12 * day);
        assert_eq!(clock.offset_ms(), -2 * day as i64);
        let ahead = Clock::new(Hlc::new(12 * day, 0), clock.offset_ms());
        let mut rebased = ahead;
        rebased.rebase(Hlc::new(10 * day - 5, 0));
        assert_eq!(rebased.tick(12 * day + 10).millis(), 10 * day + 10);
        assert!(too_far_ahead(Hlc::new(12 * day, 0), 10 * day, 5 * 60_000));
        assert!(!too_far_ahead(
            Hlc::new(10 * day + 1000, 0),
            10 * day,
            5 * 60_000
        ));
    }

    proptest! {
        #[test]
        fn any_interleaving_of_ticks_and_observations_is_monotonic(
            events in prop::collection::vec((any::<bool>(), 0u64..1_000_000, 0u64..2_000_000), 1..200)
        ) {
            let mut clock = Clock::default();
            let mut last = Hlc::ZERO;
            for (local, physical, remote) in events {
                if local {
                    let t = clock.tick(physical);
                    prop_assert!(t > last);
                    prop_assert!(t.millis() >= physical);
                    last = t;
                } else {
                    let r = Hlc::new(remote, 0);
                    clock.observe(r);
                    prop_assert!(clock.last() >= r);
                    last = clock.last();
                }
            }
        }
    }
}
