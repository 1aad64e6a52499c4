//! Baylink's replication core: the hybrid logical clock, stamps, the field-level
//! last-writer-wins merge with detection of concurrent edits, change records, an in-memory
//! reference replica and the versioned wire types. Pure code, no I/O: the device store and the
//! server both call it, so the merge rule exists once.

pub mod auth;
pub mod bounded;
pub mod change;
pub mod cursor;
pub mod error;
pub mod hlc;
pub mod merge;
pub mod replica;
pub mod schema;
pub mod stamp;
pub mod wire;

pub use change::{Change, ChangeId};
pub use error::{Error, Result};
pub use hlc::{Clock, Hlc, ManualClock, PhysicalClock, SystemClock};
pub use merge::{EntityState, FieldPlan, Versioned, plan_field};
pub use replica::Replica;
pub use stamp::{NodeId, Stamp};
