//! Sync with the server: the HTTP client and the engine that pushes the outbox, pulls the
//! villages' state and applies both to the store.

pub mod client;
pub mod engine;

pub use client::Client;
pub use engine::{
    Http, NEWS_KEPT, PUSH_BATCH, PUSH_BYTES, Progress, SyncNews, SyncReport, Transport, login,
    logout, sync, sync_with,
};
