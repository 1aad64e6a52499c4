//! Sync with the server: the HTTP client and the engine that pushes the outbox, pulls the
//! villages' state and applies both to the store.

pub mod client;
pub mod engine;

pub use client::Client;
pub use engine::{Progress, SyncReport, login, logout, sync};
