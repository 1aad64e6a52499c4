//! The state every handler shares.

use std::sync::Arc;

use crate::auth::throttle::Throttle;
use crate::auth::token::Keys;
use crate::config::Config;
use crate::error::AppError;
use crate::store::{Db, Store};

/// Storage, keys, configuration, throttle.
#[derive(Clone)]
pub struct AppState {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Token keys.
    pub keys: Keys,
    /// Configuration.
    pub config: Arc<Config>,
    /// Failed-login throttle.
    pub throttle: Arc<Throttle>,
}

impl AppState {
    /// Opens the embedded SQLite database of a configuration's data directory: the state, and
    /// the database itself for seeding, backups and tests that look inside.
    pub fn open(config: Config) -> Result<(AppState, Db), AppError> {
        // The key first: reading it creates the data directory the database goes in.
        let keys = Keys::from_secret(&config.secret()?)?;
        let db = Db::open(&config.database_path())?;
        let state = AppState {
            store: Arc::new(db.clone()),
            keys,
            config: Arc::new(config),
            throttle: Arc::default(),
        };
        Ok((state, db))
    }

    /// The state of a configuration over a store (the token key is read from the data
    /// directory).
    pub fn new(config: Config, store: Arc<dyn Store>) -> Result<AppState, AppError> {
        let keys = Keys::from_secret(&config.secret()?)?;
        Ok(AppState {
            store,
            keys,
            config: Arc::new(config),
            throttle: Arc::default(),
        })
    }
}
