//! Storage: embedded SQLite under the data directory. Handlers never write SQL; they call the
//! functions of this module's submodules through [`Db::call`] (writes) or [`Db::read`] (reads),
//! which run them off the async workers. One writer connection serialises writes, which also
//! makes sequence numbers become visible in commit order (a pull never skips a change); reads
//! run beside it in snapshots. This is the narrow interface a PostgreSQL backend would implement.
//!
//! Layers, each importing only those below it:
//! - use cases: [`push`], [`pull`], [`review`], [`records`], [`dashboard`], [`sessions`],
//!   [`accounts`], [`devices`], [`alerts`], [`duplicates`];
//! - the planner, pure policy over facts the use cases load: [`authorize`];
//! - the shared write path and what it keeps in step: [`write`], [`scope`], [`summary`],
//!   [`watch`], [`audit`], [`holders`], [`refs`];
//! - leaves: [`caller`], [`places`], [`error`], [`db`].

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod authorize;
pub mod caller;
pub mod dashboard;
pub mod db;
pub mod devices;
pub mod duplicates;
pub mod error;
pub mod holders;
pub mod places;
pub mod pull;
pub mod push;
pub mod records;
pub mod refs;
pub mod review;
pub mod scope;
pub mod sessions;
pub mod summary;
pub mod values;
pub mod watch;
pub mod write;

/// The SQLite binding the store uses, for tools and tests that look inside.
pub use rusqlite;

pub use db::Db;

/// Milliseconds since the Unix epoch, by the server's clock (the one physical clock type,
/// `baylink_sync::SystemClock`).
pub fn now_ms() -> u64 {
    baylink_sync::PhysicalClock::now_ms(&baylink_sync::SystemClock)
}
