//! The change record: one write of one field of one entity, as a device's outbox holds it and
//! push carries it. Its id (device, counter) is unique, which makes push idempotent.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::merge::Versioned;
use crate::stamp::{NodeId, Stamp};

/// A change's unique id: the device that made it and that device's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChangeId {
    /// The device that made the change.
    pub device: NodeId,
    /// The device's counter, increasing with every change it makes.
    pub counter: u64,
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.device, self.counter)
    }
}

/// One field write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Unique id.
    pub id: ChangeId,
    /// Entity kind (`person`, ...); kinds this version does not know are relayed unchanged.
    pub kind: String,
    /// Entity id.
    pub entity: Uuid,
    /// Field name; unknown fields are relayed unchanged.
    pub field: String,
    /// The new value (`null` clears the field).
    #[serde(deserialize_with = "crate::bounded::value")]
    pub value: Value,
    /// When and where it was written.
    pub stamp: Stamp,
    /// The stamp of the value this write replaced on its device, if it had one: lets the
    /// receiver tell a concurrent edit from a sequential one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Stamp>,
}

impl Change {
    /// The value with its stamp, as the merge sees it.
    pub fn version(&self) -> Versioned {
        Versioned::new(self.value.clone(), self.stamp)
    }
}
