//! What the planner decides from: the records a push names as the server holds them, the caller, and a decision per change.

use std::collections::{BTreeSet, HashMap, HashSet};

use baylink_domain::{Date, EntityKind, Fields};
use baylink_sync::merge::merge_field;
use baylink_sync::{Change, EntityState, NodeId};
use serde_json::Value;
use uuid::Uuid;

use crate::store::caller::Role;

/// A record as the server holds it.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// Its stored kind.
    pub kind: String,
    /// The villages it lies in (its scope).
    pub villages: BTreeSet<String>,
    /// Its current values with their stamps (read for the records a push writes, not for those
    /// it only names).
    pub state: EntityState,
}

/// What the history keeps of a record compacted away.
pub struct Compacted {
    /// The newest stamp the server ever took for it.
    pub newest: baylink_sync::Stamp,
    /// Every field it ever had.
    pub fields: BTreeSet<String>,
    /// Its kind.
    pub kind: String,
    /// Its home village as it last stood.
    pub village: Option<String>,
}

/// What the server knows when it decides a push.
pub struct Facts<'a> {
    /// The caller's role.
    pub role: Role,
    /// The caller's villages.
    pub villages: &'a [String],
    /// The pushing device.
    pub device: NodeId,
    /// The last counter of this device the server applied.
    pub last_counter: u64,
    /// Server time.
    pub now_ms: u64,
    /// How far ahead of server time a stamp may be.
    pub max_ahead_ms: u64,
    /// Today, in China.
    pub today: Date,
    /// Every stored record the push names, as the record written or as a reference.
    pub records: &'a HashMap<Uuid, Held>,
    /// Records the push writes that the server does not hold but its history knows (deleted,
    /// and compacted away since: `store::retention`).
    pub compacted: &'a HashMap<Uuid, Compacted>,
}

/// The decision on one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Already processed: answered as the first time.
    Replay,
    /// Refused for good (or, for `clock_ahead`, until restamped).
    Refuse {
        /// Refusal code.
        code: &'static str,
        /// What is wrong, in Chinese and English.
        message: String,
    },
    /// Merged as sent.
    Apply,
    /// Accepted, and the server writes its own value instead: a server-owned field, or a field
    /// of a record's home village ([`HOME_ONLY`]) sent by a caller who holds it from elsewhere.
    Own,
}

impl Decision {
    pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> Decision {
        Decision::Refuse {
            code,
            message: message.into(),
        }
    }

    /// Whether the change is accepted (applied as sent or replaced by the server's value).
    pub fn accepted(&self) -> bool {
        matches!(self, Decision::Apply | Decision::Own)
    }
}

/// What the records decided so far in a push add to the server's facts.
pub(crate) struct World {
    /// Records this push creates (accepted), by kind.
    pub(crate) created: HashMap<Uuid, EntityKind>,
    /// Persons an accepted residence of this push names: they move into the caller's village.
    pub(crate) arrivals: HashSet<Uuid>,
    /// Derived fields to fill in, by record.
    pub(crate) fills: HashMap<Uuid, Fields>,
    /// Natural keys this push gave records (created, changed or brought back), by record: a
    /// second record given one in the same push is refused as if it were stored.
    pub(crate) claimed: HashMap<String, Uuid>,
    /// The stored live records of the push's facts by their natural key, read once when a key
    /// is first checked (`keys::held_keys`): the facts may hold thousands of records.
    pub(crate) held_keys: Option<HashMap<String, Vec<Uuid>>>,
}

/// A record's values with their stamps after the changes planned to apply.
pub(crate) fn merged_after(
    held: Option<&Held>,
    changes: &[Change],
    idx: &[usize],
    plan: &[Option<Decision>],
) -> EntityState {
    let mut state = held.map(|h| h.state.clone()).unwrap_or_default();
    for &i in idx {
        if plan[i] == Some(Decision::Apply) {
            merge_field(&mut state, &changes[i].field, changes[i].version());
        }
    }
    state
}

/// A record's values without their stamps.
pub(super) fn values(state: &EntityState) -> Fields {
    state
        .iter()
        .map(|(field, v)| (field.clone(), v.value.clone()))
        .collect()
}

/// The merged value of `field` in a state, as JSON (`Null` when absent).
pub(super) fn value_of<'a>(state: &'a EntityState, field: &str) -> &'a Value {
    state.get(field).map_or(&Value::Null, |v| &v.value)
}

/// A device's changes of one record of `kind`, numbered from 1, the one at index k stamped
/// `stamp(k)`: a push as the planner's tests send it.
#[cfg(test)]
pub(crate) fn numbered(
    kind: &str,
    entity: Uuid,
    device: NodeId,
    fields: impl IntoIterator<Item = (&'static str, Value)>,
    stamp: impl Fn(usize) -> baylink_sync::Stamp,
) -> Vec<Change> {
    fields
        .into_iter()
        .enumerate()
        .map(|(k, (field, value))| Change {
            id: baylink_sync::ChangeId {
                device,
                counter: k as u64 + 1,
            },
            kind: kind.into(),
            entity,
            field: field.into(),
            value,
            stamp: stamp(k),
            base: None,
        })
        .collect()
}
