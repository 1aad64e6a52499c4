//! The state every handler shares.

use std::sync::Arc;

use crate::auth::throttle::Throttle;
use crate::auth::token::Keys;
use crate::config::Config;
use crate::error::AppError;
use crate::store::Db;

/// Database, keys, configuration, throttle.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Token keys.
    pub keys: Keys,
    /// Configuration.
    pub config: Arc<Config>,
    /// Failed-login throttle.
    pub throttle: Arc<Throttle>,
}

impl AppState {
    /// Opens the data directory of a configuration.
    pub fn open(config: Config) -> Result<AppState, AppError> {
        let keys = Keys::from_secret(&config.secret()?)?;
        let db = Db::open(&config.database_path())?;
        Ok(AppState {
            db,
            keys,
            config: Arc::new(config),
            throttle: Arc::default(),
        })
    }
}
