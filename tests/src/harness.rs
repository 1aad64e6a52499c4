//! Devices for scenarios: a real store on a temporary file, its own clock, and the exchange of
//! outboxes between devices (what the server will relay, done directly).

use std::sync::Arc;

use baylink_domain::{EntityKind, Input};
use baylink_sync::{EntityState, ManualClock};
use mobile_core::{ApplyReport, Store};
use uuid::Uuid;

/// 2026-11-28T04:00:00Z, the scenarios' "now".
pub const NOW_MS: u64 = 1_795_838_400_000;

/// A village of Daya Bay (澳头街道桥西社区).
pub const VILLAGE: &str = "441303006001";

/// One officer's phone.
pub struct Device {
    /// The store, as the app holds it.
    pub store: Store,
    /// The phone's clock, which the scenario may set wrong.
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Device {
    /// A new phone for an officer, its database on a temporary file.
    pub fn new(officer: &str) -> Device {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let mut store = Store::open(dir.path().join("field.db"))
            .expect("store opens")
            .with_clock(clock.clone());
        store.set_user(officer).expect("user saved");
        Device {
            store,
            clock,
            _dir: dir,
        }
    }

    /// Captures a record, panicking on invalid input (scenarios use valid data).
    pub fn capture(&mut self, kind: EntityKind, pairs: &[(&str, &str)]) -> Uuid {
        self.store
            .capture(kind, &input(pairs))
            .expect("valid capture")
    }

    /// Edits a record, panicking on invalid input.
    pub fn edit(&mut self, id: Uuid, pairs: &[(&str, &str)]) {
        self.store.edit(id, &input(pairs)).expect("valid edit");
    }

    /// Every record with its merged fields and stamps.
    pub fn states(&self) -> std::collections::BTreeMap<Uuid, (String, EntityState)> {
        self.store.states().expect("states readable")
    }
}

/// Form input from pairs.
pub fn input(pairs: &[(&str, &str)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Sends every pending change of `from` to `to`, as a sync through a server would.
pub fn send(from: &Device, to: &mut Device) -> ApplyReport {
    let changes = from.store.outbox(usize::MAX).expect("outbox readable");
    to.store.apply_remote(&changes).expect("changes apply")
}
