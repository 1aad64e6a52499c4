//! Server configuration: where the data lives, where to listen, the limits of the protocol.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::AppError;

/// Everything the server needs to know at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory: `baylink.db` lives here.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How far ahead of server time a change's stamp may be (milliseconds).
    pub max_clock_ahead_ms: u64,
    /// Lifetime of access tokens (seconds).
    pub access_ttl_s: u64,
    /// Lifetime of refresh tokens (seconds).
    pub refresh_ttl_s: u64,
    /// Largest request body accepted (bytes).
    pub max_body_bytes: usize,
    /// Mark console cookies `Secure` (when served over TLS, directly or behind a proxy).
    pub secure_cookies: bool,
    /// How long a client may take to send a request's headers.
    pub header_timeout: std::time::Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long open requests may take to finish once the server is told to stop.
    pub drain_timeout: std::time::Duration,
    /// Reverse proxies whose word on the client's address is taken (none by default: the
    /// address is the connection's).
    pub trusted_proxies: Vec<crate::forwarded::Cidr>,
    /// The header those proxies write the client's address in.
    pub forwarded_header: crate::forwarded::ForwardedHeader,
}

impl Config {
    /// Defaults that work on a first run: `./baylink-server-data`, 127.0.0.1:8080.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_clock_ahead_ms: 5 * 60_000,
            access_ttl_s: 15 * 60,
            refresh_ttl_s: 30 * 24 * 3600,
            max_body_bytes: 8 * 1024 * 1024,
            secure_cookies: false,
            header_timeout: crate::listen::HEADER_TIMEOUT,
            max_connections: crate::listen::MAX_CONNECTIONS,
            drain_timeout: crate::listen::DRAIN_TIMEOUT,
            trusted_proxies: Vec::new(),
            forwarded_header: crate::forwarded::ForwardedHeader::default(),
        }
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("baylink.db")
    }

    /// The token secret of a data directory from before keys were kept in the database
    /// (`secret.key`), imported as the first key so no one is signed out; `None` when there is
    /// none. Creates the data directory (readable by the owner only) if need be.
    pub fn legacy_secret(&self) -> Result<Option<Vec<u8>>, AppError> {
        self.create_data_dir()?;
        let path = self.data_dir.join("secret.key");
        if !path.exists() {
            return Ok(None);
        }
        let secret = std::fs::read(&path).map_err(io("read secret.key"))?;
        if secret.len() < crate::store::token_keys::MIN_SECRET {
            return Err(AppError::Internal(
                "secret.key is shorter than 32 bytes".into(),
            ));
        }
        Ok(Some(secret))
    }
}

impl Config {
    /// Creates the data directory if need be, readable by its owner only (`0700`): it holds the
    /// database and the token key.
    pub fn create_data_dir(&self) -> Result<(), AppError> {
        std::fs::create_dir_all(&self.data_dir).map_err(io("create data directory"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("data directory permissions"))?;
        }
        Ok(())
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> AppError {
    move |e| AppError::Internal(format!("{what}: {e}"))
}
