//! Storage. Handlers, the console and the command line reach it only through the [`Store`]
//! trait ([`contract`]): one method per use case, each its own unit of work, with the contract
//! every backend keeps written at its top. [`Db`] is the SQLite backend ([`sqlite`]): embedded,
//! under the data directory, one writer connection and readers beside it.
//!
//! Layers of the SQLite backend; a module imports modules of the layers below its own, and
//! within the write path and the leaves only what its line says:
//! - the trait and its implementation: [`contract`], [`sqlite`], [`snapshot`];
//! - use cases, none importing another: [`push`], [`pull`], [`review`], [`records`],
//!   [`dashboard`], [`signin`], [`sessions`], [`alerts`], [`duplicates`], [`logins`],
//!   [`token_keys`];
//! - registries they share: [`accounts`], [`devices`];
//! - the planner, pure policy over facts the use cases load: [`authorize`];
//! - the shared write path and what it keeps in step: [`write`] (which reads the planner's lists
//!   of fields the server and the console own), [`state`] (records as one row each, and the
//!   unit of work's pending writes), [`scope`], [`summary`], [`watch`], [`holders`], [`refs`],
//!   [`values`];
//! - the handle: [`db`] (at start it migrates and refreshes summaries stored before they
//!   existed, through [`summary`]), [`checkpoint`];
//! - leaves: [`caller`], [`places`] (which audits its imports), [`audit`], [`error`].

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod authorize;
pub mod caller;
pub mod checkpoint;
pub mod conn;
pub mod contract;
pub mod dashboard;
pub mod db;
pub mod devices;
pub mod duplicates;
pub mod error;
pub(crate) mod group;
pub mod holders;
pub mod logins;
pub mod pg;
pub mod places;
pub mod pull;
pub mod push;
pub mod records;
pub mod refs;
pub mod retention;
pub mod review;
pub mod scope;
pub mod sessions;
pub mod signin;
pub mod snapshot;
pub mod sqlite;
pub mod state;
pub mod summary;
pub mod token_keys;
pub mod values;
pub mod watch;
pub mod write;

/// The SQLite binding the store uses, for tools and tests that look inside.
pub use rusqlite;

pub use contract::Store;
pub use db::Db;
pub use error::StoreError;

/// Milliseconds since the Unix epoch, by the server's clock (the one physical clock type,
/// `baylink_sync::SystemClock`).
pub fn now_ms() -> u64 {
    baylink_sync::PhysicalClock::now_ms(&baylink_sync::SystemClock)
}
