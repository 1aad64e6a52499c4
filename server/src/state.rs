//! The state every handler shares.

use std::sync::Arc;

use crate::auth::keyring::{KeyRing, TokenKeys};
use crate::config::Config;
use crate::error::AppError;
use crate::store::token_keys::TokenKey;
use crate::store::{Db, Store, now_ms};

/// Storage, keys, configuration.
#[derive(Clone)]
pub struct AppState {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Token keys, as this node last read them from the store.
    pub keys: Arc<TokenKeys>,
    /// Configuration.
    pub config: Arc<Config>,
    /// What this process counted (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Pushes under way, by account.
    pub pushing: Arc<crate::pushing::Pushing>,
}

impl AppState {
    /// Opens the configuration's database (PostgreSQL when it names one, else the embedded
    /// SQLite file of its data directory): the state, and the database itself for seeding,
    /// backups and tests that look inside.
    pub fn open(config: Config) -> Result<(AppState, Db), AppError> {
        Self::open_with(config, Db::open, true)
    }

    /// [`AppState::open`] without migrating the database (administration commands, which may
    /// run beside a server): one of an older schema is refused.
    pub fn open_current(config: Config) -> Result<(AppState, Db), AppError> {
        Self::open_with(config, Db::open_current, false)
    }

    fn open_with(
        config: Config,
        open: fn(&std::path::Path) -> Result<Db, crate::store::StoreError>,
        migrate: bool,
    ) -> Result<(AppState, Db), AppError> {
        // The data directory holds a SQLite database; on PostgreSQL a command makes none.
        if config.database.is_none() {
            config.create_data_dir()?;
        }
        let legacy = config.legacy_secret()?;
        let imported = legacy.is_some();
        let first = new_token_key(legacy);
        let db = match &config.database {
            Some(url) if migrate => Db::open_postgres(url)?,
            Some(url) => Db::open_postgres_current(url)?,
            None => open(&config.database_path())?,
        };
        let stored = db.call_blocking(|c| crate::store::token_keys::ensure(c, &first))?;
        if imported && stored.iter().any(|k| k.id == first.id) {
            tracing::info!(
                key = %first.id,
                "secret.key taken as the first token key: the file is not used again and may be deleted"
            );
        }
        let state = AppState {
            store: Arc::new(db.clone()),
            keys: Arc::new(TokenKeys::new(
                KeyRing::from_stored(&stored)?,
                db.call_blocking(crate::store::db::instance)?,
            )),
            config: Arc::new(config),
            metrics: Arc::default(),
            pushing: Arc::default(),
        };
        Ok((state, db))
    }
}

/// A new token key: a random id, and the data directory's old `secret.key` as its secret if it
/// had one (so no one is signed out), else a random one.
pub fn new_token_key(legacy: Option<Vec<u8>>) -> TokenKey {
    TokenKey {
        id: new_key_id(),
        secret: legacy.unwrap_or_else(crate::store::token_keys::random_secret),
        created_ms: now_ms(),
        retired_ms: None,
    }
}

/// A new key id (its creation is recorded beside it; the id says nothing of the secret).
pub fn new_key_id() -> String {
    format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_key_file_becomes_the_first_key_and_its_tokens_stay_good() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(dir.path().join("secret.key"), "b".repeat(64)).unwrap();
        let (state, _db) = AppState::open(Config::new(dir.path())).unwrap();
        // A token from before: signed with the file's secret, naming no key.
        let claims = crate::auth::token::Claims {
            sub: 1,
            name: "o1".into(),
            role: crate::store::accounts::Role::Officer,
            dev: "d".into(),
            iat: 0,
            exp: 4_000_000_000,
            dgen: 0,
            agen: 0,
        };
        let before = crate::auth::token::Keys::from_secret("b".repeat(64).as_bytes())
            .unwrap()
            .issue(&claims)
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let taken = runtime.block_on(state.keys.verify(&before, state.store.as_ref()));
        assert_eq!(taken.unwrap(), claims);
        // Opened again, the same single key.
        drop(state);
        let (again, _db) = AppState::open(Config::new(dir.path())).unwrap();
        let keys = runtime.block_on(again.store.token_keys()).unwrap();
        assert_eq!(keys.len(), 1);
    }
}
