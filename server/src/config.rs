//! Server configuration: where the data lives, where to listen, the limits of the protocol.
//! Every setting comes from, in rising precedence: its default, a TOML file (`--config`), an
//! environment variable (`BAYLINK_` and the setting's name in capitals; the data directory's
//! is `BAYLINK_SERVER_DATA`), a command-line flag. `baylink-server config check` prints the
//! result and where each value came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::AppError;
use crate::forwarded::{Cidr, ForwardedHeader};

/// Everything the server needs to know at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory: `baylink.db` lives here.
    pub data_dir: PathBuf,
    /// A PostgreSQL database to keep the data in instead (a connection string).
    pub database: Option<String>,
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
    /// How long a request may take, its body sent and its answer prepared (then `408`).
    pub body_timeout: std::time::Duration,
    /// How long a request body's reads may wait in all before 16 KiB of it arrive (then `408`).
    pub body_stall: std::time::Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections one client address (an IPv6 client's /64) holds at once; trusted
    /// proxies are not limited.
    pub max_connections_per_address: usize,
    /// How long open requests may take to finish once the server is told to stop.
    pub drain_timeout: std::time::Duration,
    /// Reverse proxies whose word on the client's address is taken (none by default: the
    /// address is the connection's).
    pub trusted_proxies: Vec<crate::forwarded::Cidr>,
    /// The header those proxies write the client's address in.
    pub forwarded_header: crate::forwarded::ForwardedHeader,
    /// How log lines are written.
    pub log_format: LogFormat,
}

/// Settings as one source gives them (a file, the environment, the flags), each optional: the
/// names are the file's keys.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The data directory.
    pub data: Option<PathBuf>,
    /// A PostgreSQL connection string.
    pub database: Option<String>,
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Seconds a change may be stamped ahead of server time.
    pub max_clock_ahead_s: Option<u64>,
    /// Lifetime of access tokens, seconds.
    pub access_ttl_s: Option<u64>,
    /// Lifetime of refresh tokens, seconds.
    pub refresh_ttl_s: Option<u64>,
    /// Largest request body, bytes.
    pub max_body_bytes: Option<usize>,
    /// Console cookies `Secure`.
    pub secure_cookies: Option<bool>,
    /// Seconds a client may take to send a request's headers.
    pub header_timeout_s: Option<u64>,
    /// Seconds a request may take, its body sent and its answer prepared.
    pub body_timeout_s: Option<u64>,
    /// Seconds a request body's reads may wait in all before 16 KiB of it arrive.
    pub body_stall_s: Option<u64>,
    /// Most connections served at once.
    pub max_connections: Option<usize>,
    /// Most connections one client address holds at once.
    pub max_connections_per_address: Option<usize>,
    /// Seconds requests in flight may take to finish after SIGTERM or SIGINT.
    pub drain_s: Option<u64>,
    /// Trusted reverse proxies.
    pub trusted_proxies: Option<Vec<Cidr>>,
    /// The header they write the client's address in.
    pub forwarded_header: Option<ForwardedHeader>,
    /// Log lines as `text` or `json`.
    pub log_format: Option<LogFormat>,
}

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// For a person at a terminal.
    #[default]
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}`: text or json")),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(text: String) -> Result<LogFormat, String> {
        text.parse()
    }
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Its default.
    Default,
    /// The configuration file.
    File,
    /// An environment variable.
    Environment,
    /// A command-line flag.
    Flag,
}

impl Source {
    /// How `config check` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Environment => "environment",
            Source::Flag => "flag",
        }
    }
}

/// The environment variable of a setting.
pub fn env_name(key: &str) -> String {
    if key == "data" {
        return "BAYLINK_SERVER_DATA".into();
    }
    if key == "database" {
        return "BAYLINK_DATABASE_URL".into();
    }
    format!("BAYLINK_{}", key.to_ascii_uppercase())
}

impl Settings {
    /// The settings of a TOML file; an unknown key or a wrong type is refused, naming it.
    pub fn from_file(path: &Path) -> Result<Settings, AppError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::BadRequest(format!("config {}: {e}", path.display())))?;
        let mut settings: Settings = toml::from_str(&text)
            .map_err(|e| AppError::BadRequest(format!("config {}: {e}", path.display())))?;
        // A relative data directory is the file's neighbour, wherever the command runs from.
        if let (Some(data), Some(dir)) = (&settings.data, path.parent())
            && data.is_relative()
        {
            settings.data = Some(dir.join(data));
        }
        Ok(settings)
    }

    /// The settings the environment gives (`get` reads a variable).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, AppError> {
        fn parse<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            key: &str,
        ) -> Result<Option<T>, AppError> {
            let name = env_name(key);
            get(&name)
                .map(|value| {
                    value.trim().parse().map_err(|_| {
                        AppError::BadRequest(format!(
                            "{name}: `{value}` is not a valid {key} ({})",
                            expected(key)
                        ))
                    })
                })
                .transpose()
        }
        let proxies = get(&env_name("trusted_proxies"))
            .map(|list| {
                list.split(',')
                    .filter(|net| !net.trim().is_empty())
                    .map(|net| {
                        net.parse().map_err(|e: crate::forwarded::BadCidr| {
                            AppError::BadRequest(format!("BAYLINK_TRUSTED_PROXIES: {e}"))
                        })
                    })
                    .collect::<Result<Vec<Cidr>, AppError>>()
            })
            .transpose()?;
        Ok(Settings {
            data: get(&env_name("data")).map(PathBuf::from),
            database: get(&env_name("database")).filter(|url| !url.trim().is_empty()),
            listen: parse(&get, "listen")?,
            max_clock_ahead_s: parse(&get, "max_clock_ahead_s")?,
            access_ttl_s: parse(&get, "access_ttl_s")?,
            refresh_ttl_s: parse(&get, "refresh_ttl_s")?,
            max_body_bytes: parse(&get, "max_body_bytes")?,
            secure_cookies: parse(&get, "secure_cookies")?,
            header_timeout_s: parse(&get, "header_timeout_s")?,
            body_timeout_s: parse(&get, "body_timeout_s")?,
            body_stall_s: parse(&get, "body_stall_s")?,
            max_connections: parse(&get, "max_connections")?,
            max_connections_per_address: parse(&get, "max_connections_per_address")?,
            drain_s: parse(&get, "drain_s")?,
            trusted_proxies: proxies,
            forwarded_header: parse(&get, "forwarded_header")?,
            log_format: parse(&get, "log_format")?,
        })
    }
}

/// What a setting's value looks like, for a message refusing one.
fn expected(key: &str) -> &'static str {
    match key {
        "listen" => "an IP address and port, 127.0.0.1:8080",
        "secure_cookies" => "true or false",
        "forwarded_header" => "x-forwarded-for or forwarded",
        "log_format" => "text or json",
        _ => "a whole number",
    }
}

/// Where each setting's value came from, by name.
pub type Sources = BTreeMap<&'static str, Source>;

impl Config {
    /// The configuration of the sources in rising precedence: defaults, `file`, `env`, `flags`.
    pub fn load(
        file: Option<&Settings>,
        env: &Settings,
        flags: &Settings,
    ) -> Result<(Config, Sources), AppError> {
        let mut config = Config::new("baylink-server-data");
        let mut sources = Sources::new();
        for key in SETTINGS {
            sources.insert(key, Source::Default);
        }
        let layers = [
            (file, Source::File),
            (Some(env), Source::Environment),
            (Some(flags), Source::Flag),
        ];
        for (settings, source) in layers {
            if let Some(settings) = settings {
                config.apply(settings, source, &mut sources);
            }
        }
        // Judged once, on the result: a file and a variable may each be half of a valid pair.
        config.check(&sources)?;
        Ok((config, sources))
    }

    fn apply(&mut self, s: &Settings, source: Source, sources: &mut Sources) {
        // Each setting given: its value taken (as the field wants it), its source noted.
        macro_rules! take {
            ($key:ident, |$v:ident| $apply:expr) => {
                if let Some($v) = s.$key.clone() {
                    $apply;
                    sources.insert(stringify!($key), source);
                }
            };
        }
        take!(data, |v| self.data_dir = v);
        take!(database, |v| self.database = Some(v));
        take!(listen, |v| self.listen = v);
        take!(max_clock_ahead_s, |v| self.max_clock_ahead_ms =
            v.saturating_mul(1000));
        take!(access_ttl_s, |v| self.access_ttl_s = v);
        take!(refresh_ttl_s, |v| self.refresh_ttl_s = v);
        take!(max_body_bytes, |v| self.max_body_bytes = v);
        take!(secure_cookies, |v| self.secure_cookies = v);
        take!(header_timeout_s, |v| self.header_timeout =
            Duration::from_secs(v));
        take!(body_timeout_s, |v| self.body_timeout =
            Duration::from_secs(v));
        take!(body_stall_s, |v| self.body_stall = Duration::from_secs(v));
        take!(max_connections, |v| self.max_connections = v);
        take!(max_connections_per_address, |v| self
            .max_connections_per_address =
            v);
        take!(drain_s, |v| self.drain_timeout = Duration::from_secs(v));
        take!(trusted_proxies, |v| self.trusted_proxies = v);
        take!(forwarded_header, |v| self.forwarded_header = v);
        take!(log_format, |v| self.log_format = v);
    }

    /// Refuses values no server can run with, naming the setting, its value and its source.
    fn check(&self, sources: &Sources) -> Result<(), AppError> {
        let within = |key: &'static str, value: u64, least: u64, most: u64, why: &str| {
            if (least..=most).contains(&value) {
                return Ok(());
            }
            let from = sources
                .get(key)
                .copied()
                .unwrap_or(Source::Default)
                .as_str();
            Err(AppError::BadRequest(format!(
                "{key} = {value} (from the {from}): must be from {least} to {most}{why}"
            )))
        };
        const YEAR_S: u64 = 365 * 24 * 3600;
        if self.data_dir.as_os_str().is_empty() {
            return Err(AppError::BadRequest("data: must name a directory".into()));
        }
        if let Some(url) = &self.database
            && let Err(e) = parse_database(url)
        {
            let from = sources
                .get("database")
                .copied()
                .unwrap_or(Source::Default)
                .as_str();
            return Err(AppError::BadRequest(format!(
                "database (from the {from}): not a PostgreSQL connection string \
                 (postgres://user@host/db or host=… dbname=…): {e}"
            )));
        }
        within(
            "max_clock_ahead_s",
            self.max_clock_ahead_ms / 1000,
            0,
            24 * 3600,
            "",
        )?;
        within("access_ttl_s", self.access_ttl_s, 1, 24 * 3600, "")?;
        within(
            "refresh_ttl_s",
            self.refresh_ttl_s,
            self.access_ttl_s,
            10 * YEAR_S,
            " (at least access_ttl_s)",
        )?;
        within(
            "max_body_bytes",
            self.max_body_bytes as u64,
            64 * 1024,
            1 << 30,
            " (a push of one record must fit)",
        )?;
        within(
            "header_timeout_s",
            self.header_timeout.as_secs(),
            1,
            3600,
            "",
        )?;
        within("body_timeout_s", self.body_timeout.as_secs(), 1, 3600, "")?;
        within("body_stall_s", self.body_stall.as_secs(), 1, 3600, "")?;
        within(
            "max_connections",
            self.max_connections as u64,
            1,
            100_000,
            "",
        )?;
        within(
            "max_connections_per_address",
            self.max_connections_per_address as u64,
            1,
            100_000,
            "",
        )?;
        within("drain_s", self.drain_timeout.as_secs(), 0, 3600, "")?;
        Ok(())
    }

    /// The effective settings as `config check` prints them: name, value, source.
    pub fn describe(&self, sources: &Sources) -> Vec<(&'static str, String, Source)> {
        let proxies: Vec<String> = self.trusted_proxies.iter().map(Cidr::to_string).collect();
        let values = [
            ("data", self.data_dir.display().to_string()),
            (
                "database",
                self.database.as_deref().map_or_else(
                    || "(SQLite in the data directory)".into(),
                    describe_database,
                ),
            ),
            ("listen", self.listen.to_string()),
            (
                "max_clock_ahead_s",
                (self.max_clock_ahead_ms / 1000).to_string(),
            ),
            ("access_ttl_s", self.access_ttl_s.to_string()),
            ("refresh_ttl_s", self.refresh_ttl_s.to_string()),
            ("max_body_bytes", self.max_body_bytes.to_string()),
            ("secure_cookies", self.secure_cookies.to_string()),
            (
                "header_timeout_s",
                self.header_timeout.as_secs().to_string(),
            ),
            ("body_timeout_s", self.body_timeout.as_secs().to_string()),
            ("body_stall_s", self.body_stall.as_secs().to_string()),
            ("max_connections", self.max_connections.to_string()),
            (
                "max_connections_per_address",
                self.max_connections_per_address.to_string(),
            ),
            ("drain_s", self.drain_timeout.as_secs().to_string()),
            ("trusted_proxies", format!("[{}]", proxies.join(", "))),
            ("forwarded_header", self.forwarded_header.name().to_owned()),
            (
                "log_format",
                match self.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .to_owned(),
            ),
        ];
        values
            .into_iter()
            .map(|(key, value)| {
                (
                    key,
                    value,
                    sources.get(key).copied().unwrap_or(Source::Default),
                )
            })
            .collect()
    }
}

/// A PostgreSQL connection string read as the server will read it; refused, without repeating
/// it, when it names no database server or a host with `@` in it (a password's unencoded `@`:
/// the rest of the password would be taken for the host).
pub fn parse_database(url: &str) -> Result<tokio_postgres::Config, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    let odd = config.get_hosts().iter().any(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => name.contains('@'),
        tokio_postgres::config::Host::Unix(_) => false,
    });
    if odd {
        return Err("a host with `@` in it: write an `@` in a password as %40".into());
    }
    Ok(config)
}

/// A PostgreSQL connection string as it may be shown: rebuilt from what it names (user, hosts,
/// ports, database), a password as `***`, nothing copied from its text; a string that does not
/// parse is not shown at all.
pub fn describe_database(url: &str) -> String {
    let Ok(config) = parse_database(url) else {
        return "(not a PostgreSQL connection string)".into();
    };
    let user = config.get_user().unwrap_or("");
    let password = if config.get_password().is_some() {
        ":***"
    } else {
        ""
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                // A socket's directory percent-encoded, so that the text shown connects when
                // given back (`postgresql://app@%2Frun%2Fpostgresql/baylink`).
                tokio_postgres::config::Host::Unix(dir) => dir
                    .display()
                    .to_string()
                    .chars()
                    .map(|c| match c {
                        '%' | '/' | ':' | '@' | ',' | '?' | '#' | ' ' => {
                            format!("%{:02X}", c as u32)
                        }
                        c => c.to_string(),
                    })
                    .collect(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let dbname = config.get_dbname().unwrap_or(user);
    format!("postgresql://{user}{password}@{}/{dbname}", hosts.join(","))
}

/// Every setting's name (the file's keys).
pub const SETTINGS: [&str; 17] = [
    "data",
    "database",
    "listen",
    "max_clock_ahead_s",
    "access_ttl_s",
    "refresh_ttl_s",
    "max_body_bytes",
    "secure_cookies",
    "header_timeout_s",
    "body_timeout_s",
    "body_stall_s",
    "max_connections",
    "max_connections_per_address",
    "drain_s",
    "trusted_proxies",
    "forwarded_header",
    "log_format",
];

impl Config {
    /// Defaults that work on a first run: `./baylink-server-data`, 127.0.0.1:8080.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            database: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_clock_ahead_ms: 5 * 60_000,
            access_ttl_s: 15 * 60,
            refresh_ttl_s: 30 * 24 * 3600,
            max_body_bytes: 8 * 1024 * 1024,
            secure_cookies: false,
            header_timeout: crate::listen::HEADER_TIMEOUT,
            body_timeout: crate::listen::BODY_TIMEOUT,
            body_stall: crate::stall::BODY_STALL,
            max_connections: crate::listen::MAX_CONNECTIONS,
            max_connections_per_address: crate::listen::MAX_CONNECTIONS_PER_ADDRESS,
            drain_timeout: crate::listen::DRAIN_TIMEOUT,
            trusted_proxies: Vec::new(),
            forwarded_header: crate::forwarded::ForwardedHeader::default(),
            log_format: LogFormat::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let file = settings(
            r#"listen = "127.0.0.1:9000"
               access_ttl_s = 600
               drain_s = 5
               trusted_proxies = ["10.0.0.0/8", "::1"]
               forwarded_header = "forwarded""#,
        )
        .unwrap();
        let vars = [
            ("BAYLINK_ACCESS_TTL_S", "900"),
            ("BAYLINK_MAX_CONNECTIONS", "64"),
        ];
        let env = Settings::from_env(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        let flags = Settings {
            drain_s: Some(7),
            ..Settings::default()
        };
        let (config, sources) = Config::load(Some(&file), &env, &flags).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.access_ttl_s, 900);
        assert_eq!(config.max_connections, 64);
        assert_eq!(config.drain_timeout, Duration::from_secs(7));
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.forwarded_header, ForwardedHeader::Forwarded);
        assert_eq!(config.data_dir, PathBuf::from("baylink-server-data"));
        assert_eq!(sources["listen"], Source::File);
        assert_eq!(sources["access_ttl_s"], Source::Environment);
        assert_eq!(sources["drain_s"], Source::Flag);
        assert_eq!(sources["refresh_ttl_s"], Source::Default);
        // Every setting is described, once.
        let described = config.describe(&sources);
        assert_eq!(described.len(), SETTINGS.len());
        for (key, (name, _, _)) in SETTINGS.iter().zip(&described) {
            assert_eq!(key, name);
        }
    }

    #[test]
    fn a_wrong_setting_is_refused_naming_it() {
        let typo = settings("listn = \"127.0.0.1:1\"").unwrap_err().to_string();
        assert!(typo.contains("unknown field `listn`"), "{typo}");
        let wrong = settings("access_ttl_s = \"soon\"").unwrap_err().to_string();
        assert!(wrong.contains("access_ttl_s"), "{wrong}");
        let net = settings("trusted_proxies = [\"10.0.0.0/40\"]")
            .unwrap_err()
            .to_string();
        assert!(net.contains("10.0.0.0/40"), "{net}");
        let env = Settings::from_env(|n| (n == "BAYLINK_LISTEN").then(|| "nowhere".to_owned()));
        let env = env.unwrap_err().to_string();
        assert!(env.contains("BAYLINK_LISTEN"), "{env}");
        let short = Settings {
            refresh_ttl_s: Some(60),
            ..Settings::default()
        };
        let refused = Config::load(None, &Settings::default(), &short).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("refresh_ttl_s = 60 (from the flag)"),
            "{refused}"
        );
        let huge = Settings {
            max_connections: Some(usize::MAX),
            ..Settings::default()
        };
        let refused = Config::load(Some(&huge), &Settings::default(), &Settings::default());
        let refused = refused.unwrap_err().to_string();
        assert!(
            refused.starts_with("max_connections = ") && refused.contains("file"),
            "{refused}"
        );
    }

    #[test]
    fn the_result_of_every_source_is_judged_not_each_alone() {
        // The file's refresh lifetime is below the default access lifetime; the environment
        // shortens that: together they are good.
        let file = settings("refresh_ttl_s = 600").unwrap();
        let env = Settings {
            access_ttl_s: Some(300),
            ..Settings::default()
        };
        let (config, _) = Config::load(Some(&file), &env, &Settings::default()).unwrap();
        assert_eq!((config.access_ttl_s, config.refresh_ttl_s), (300, 600));
    }

    #[test]
    fn a_database_is_shown_without_its_password_in_any_spelling() {
        for (url, shown) in [
            (
                "postgres://app:s3%40cret@db.internal:5433/baylink",
                "postgresql://app:***@db.internal:5433/baylink",
            ),
            (
                "postgres://app:s3@cret@db.internal:5433/baylink",
                "(not a PostgreSQL connection string)",
            ),
            (
                "postgres://app@db.internal/baylink?password=s3cret",
                "postgresql://app:***@db.internal:5432/baylink",
            ),
            (
                "host=db.internal user=app password='s3 cret' dbname=baylink",
                "postgresql://app:***@db.internal/baylink",
            ),
            (
                "host=/run/postgresql user=app password = s3cret dbname=baylink",
                "postgresql://app:***@%2Frun%2Fpostgresql/baylink",
            ),
            (
                "host=/tmp/pg port=5433 user=app dbname=baylink",
                "postgresql://app@%2Ftmp%2Fpg:5433/baylink",
            ),
            ("not a database", "(not a PostgreSQL connection string)"),
        ] {
            let described = describe_database(url);
            assert_eq!(described, shown, "{url}");
            // What is shown without a password connects where the setting did.
            if !described.starts_with('(') && !described.contains("***") {
                let (given, back) = (
                    parse_database(url).unwrap(),
                    parse_database(&described).unwrap(),
                );
                assert_eq!(given.get_hosts(), back.get_hosts(), "{url}");
                assert_eq!(given.get_ports(), back.get_ports(), "{url}");
                assert_eq!(given.get_dbname(), back.get_dbname(), "{url}");
            }
            assert!(
                !described.contains("s3") && !described.contains("cret"),
                "{url}"
            );
        }
    }

    #[test]
    fn a_database_that_is_no_connection_string_is_refused_naming_the_setting() {
        let bad = Settings {
            database: Some("host=db sslmode=bogus".into()),
            ..Settings::default()
        };
        let refused = Config::load(None, &bad, &Settings::default()).unwrap_err();
        let refused = refused.to_string();
        assert!(
            refused.starts_with("database (from the environment)"),
            "{refused}"
        );
        assert!(!refused.contains("host=db"), "{refused}");
    }
}
