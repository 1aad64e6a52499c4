//! `baylink-server`: serve, and the administrator's commands (accounts, devices, stations).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use baylink_server::store::accounts::Role;
use baylink_server::store::audit::audit;
use baylink_server::store::contract::{Access, Actor, NewAccount};
use baylink_server::{AppError, AppState, Config, auth, demo};
use clap::{Arg, ArgAction, ArgMatches, Command};

/// mimalloc, not glibc's allocator: a push allocates for every field it reads, decides and
/// writes, and glibc's took about a fifth of its CPU (docs/performance.md, *The server's
/// allocator*).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flags of `serve`'s settings, which `config check` takes too.
fn serve_args() -> Vec<Arg> {
    vec![
        Arg::new("listen")
            .long("listen")
            .value_parser(clap::value_parser!(std::net::SocketAddr))
            .help("Address to listen on [default: 127.0.0.1:8080]"),
        Arg::new("secure-cookies")
            .long("secure-cookies")
            .action(ArgAction::SetTrue)
            .help("Mark console cookies Secure (served over TLS, directly or behind a proxy)"),
        Arg::new("trusted-proxy")
            .long("trusted-proxy")
            .action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(clap::value_parser!(baylink_server::forwarded::Cidr))
            .help(
                "A reverse proxy (address or network, repeatable or comma-separated) \
                 whose forwarded client address is taken; none by default",
            ),
        Arg::new("forwarded-header")
            .long("forwarded-header")
            .value_parser(clap::value_parser!(
                baylink_server::forwarded::ForwardedHeader
            ))
            .help(
                "The header the trusted proxies write it in: x-forwarded-for \
                 (default) or forwarded",
            ),
        Arg::new("drain-seconds")
            .long("drain-seconds")
            .value_parser(clap::value_parser!(u64))
            .help(
                "Seconds open requests may take to finish after SIGTERM or SIGINT \
                 [default: 30]",
            ),
        Arg::new("max-clock-ahead")
            .long("max-clock-ahead")
            .value_parser(clap::value_parser!(u64))
            .help("Seconds a change may be stamped ahead of server time [default: 300]"),
    ]
}

fn cli() -> Command {
    let data = Arg::new("data")
        .long("data")
        .global(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help(
            "Data directory (the database, which holds the token keys) \
             [env: BAYLINK_SERVER_DATA] [default: baylink-server-data]",
        );
    let config = Arg::new("config")
        .long("config")
        .global(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help(
            "A TOML file of settings (docs/operations.md); environment and flags override it \
             [env: BAYLINK_CONFIG]",
        );
    Command::new("baylink-server")
        .about("Baylink sync server")
        .version(env!("CARGO_PKG_VERSION"))
        .arg(data)
        .arg(Arg::new("database").long("database").global(true).help(
            "Keep the data in this PostgreSQL database (postgres://user@host/db) \
                     rather than in SQLite under --data [env: BAYLINK_DATABASE_URL]",
        ))
        .arg(config)
        .arg(
            Arg::new("log-format")
                .long("log-format")
                .global(true)
                .value_parser(clap::value_parser!(baylink_server::config::LogFormat))
                .help("Log lines on standard error as text (default) or json"),
        )
        .subcommand_required(true)
        .subcommand(
            Command::new("serve")
                .about("Serve the API")
                .args(serve_args())
                .arg(
                    Arg::new("demo")
                        .long("demo")
                        .action(ArgAction::SetTrue)
                        .help("Seed Daya Bay's stations, villages, accounts and synthetic records"),
                ),
        )
        .subcommand(
            Command::new("config")
                .about("Configuration")
                .subcommand_required(true)
                .subcommand(
                    Command::new("check")
                        .about(
                            "Print the settings in effect and where each came from (default, \
                             file, environment, flag); refuse a wrong one. Takes serve's flags",
                        )
                        .args(serve_args()),
                ),
        )
        .subcommand(Command::new("migrate").about(
            "Bring the database's schema up to this version (serve does it too); \
             administration commands never do",
        ))
        .subcommand(
            Command::new("user")
                .about("Accounts")
                .subcommand_required(true)
                .subcommand(
                    Command::new("add")
                        .about("Add an account; the password is read from standard input")
                        .arg(Arg::new("username").required(true))
                        .arg(
                            Arg::new("role")
                                .long("role")
                                .required(true)
                                .value_parser(["officer", "reviewer", "admin"]),
                        )
                        .arg(Arg::new("name").long("name").help("Display name"))
                        .arg(Arg::new("station").long("station"))
                        .arg(
                            Arg::new("villages")
                                .long("villages")
                                .value_delimiter(',')
                                .num_args(1..),
                        ),
                )
                .subcommand(Command::new("list").about("List accounts"))
                .subcommand(
                    Command::new("disable")
                        .about("Disable an account")
                        .arg(Arg::new("username").required(true)),
                )
                .subcommand(
                    Command::new("enable")
                        .about("Enable an account")
                        .arg(Arg::new("username").required(true)),
                )
                .subcommand(
                    Command::new("password")
                        .about(
                            "Set an account's password, read from standard input; ends its \
                             sessions on every phone and browser",
                        )
                        .arg(Arg::new("username").required(true)),
                )
                .subcommand(
                    Command::new("assign")
                        .about("Set an officer's villages")
                        .arg(Arg::new("username").required(true))
                        .arg(
                            Arg::new("villages")
                                .long("villages")
                                .required(true)
                                .value_delimiter(',')
                                .num_args(1..),
                        ),
                ),
        )
        .subcommand(
            Command::new("device")
                .about("Devices")
                .subcommand_required(true)
                .subcommand(Command::new("list").about("List devices"))
                .subcommand(
                    Command::new("revoke")
                        .about("Revoke a lost device")
                        .arg(Arg::new("id").required(true)),
                ),
        )
        .subcommand(
            Command::new("key")
                .about("Token keys (kept in the database, shared by every server node)")
                .subcommand_required(true)
                .subcommand(Command::new("list").about("List token keys, the one that signs last"))
                .subcommand(Command::new("add").about(
                    "Add a key, which signs from now on (running servers take it within 30 \
                     seconds); the others keep verifying, so no one is signed out",
                ))
                .subcommand(
                    Command::new("retire")
                        .about(
                            "Retire a key that no longer signs: running servers take nothing it \
                             signed within 30 seconds (phones refresh their tokens unseen)",
                        )
                        .arg(Arg::new("id").required(true))
                        .arg(
                            Arg::new("at-once")
                                .long("at-once")
                                .action(ArgAction::SetTrue)
                                .help(
                                    "Retire it even if the key that signs was added under a \
                                     minute ago (a leaked key): servers that have not read the \
                                     keys yet may still sign with it for up to 30 seconds",
                                ),
                        ),
                ),
        )
        .subcommand(
            Command::new("station")
                .about("Stations and villages")
                .subcommand_required(true)
                .subcommand(Command::new("list").about("List stations and their villages"))
                .subcommand(
                    Command::new("import")
                        .about(
                            "Load stations and villages from a division-code list \
                             (code,name,level,parent: a street is a station, a village its \
                             parent's); without a file, Daya Bay's",
                        )
                        .arg(Arg::new("file").value_parser(clap::value_parser!(PathBuf))),
                ),
        )
        .subcommand(
            Command::new("show")
                .about("Show a record's current fields and its full history")
                .arg(Arg::new("id").required(true)),
        )
        .subcommand(
            Command::new("audit")
                .about("The audit log")
                .subcommand_required(true)
                .subcommand(
                    Command::new("export")
                        .about("Every audited action as CSV on standard output, newest first")
                        .arg(
                            Arg::new("since")
                                .long("since")
                                .help("Only those from this day on (YYYY-MM-DD, China time)"),
                        )
                        .arg(Arg::new("action").long("action").help("Only this action")),
                ),
        )
        .subcommand(
            Command::new("verify")
                .about("Check a database file (a backup): integrity, schema, what it holds")
                .arg(
                    Arg::new("file")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf)),
                ),
        )
        .subcommand(
            Command::new("restore")
                .about(
                    "Put a backup in place of the data directory's database (every server on \
                     it stopped); the database it replaces is kept beside it",
                )
                .arg(
                    Arg::new("file")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf)),
                ),
        )
        .subcommand(
            Command::new("compact")
                .about(
                    "Remove what every active device has applied: purge notes and the \
                     tombstones of deleted and merged-away records (the history is kept)",
                )
                .arg(
                    Arg::new("idle-days")
                        .long("idle-days")
                        .default_value("60")
                        .value_parser(clap::value_parser!(u32).range(1..))
                        .help(
                            "A device unseen for longer does not hold the compaction back; at \
                             its next sync it bootstraps again",
                        ),
                ),
        )
        .subcommand(
            Command::new("backup")
                .about("Write a consistent copy of the SQLite database (online, with VACUUM INTO)")
                .arg(
                    Arg::new("to")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(
                    Arg::new("force")
                        .long("force")
                        .action(ArgAction::SetTrue)
                        .help("Replace the file if it exists"),
                ),
        )
}

/// Prints a line of a command's output. A reader gone away (`… | head`) ends the command
/// quietly, as other command-line tools do, instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(baylink_server::store::error::StoreError::Backend(format!("standard output: {e}")).into());
        }
    };
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let loaded = load(&matches);
    let json =
        matches!(&loaded, Ok((c, _)) if c.log_format == baylink_server::config::LogFormat::Json);
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, not for a file or the journal.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    match loaded.and_then(|(config, sources)| run(&matches, config, &sources)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings in effect: defaults, the file, the environment, the flags.
fn load(matches: &ArgMatches) -> Result<(Config, baylink_server::config::Sources), AppError> {
    use baylink_server::config::Settings;
    // An empty BAYLINK_CONFIG (an environment file's blank line) names no file.
    let from_env = std::env::var_os("BAYLINK_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let file = matches
        .get_one::<PathBuf>("config")
        .cloned()
        .or(from_env)
        .map(|path| Settings::from_file(&path))
        .transpose()?;
    let env = Settings::from_env(|name| std::env::var(name).ok())?;
    Config::load(file.as_ref(), &env, &flag_settings(matches))
}

fn text<'a>(m: &'a ArgMatches, name: &str) -> &'a str {
    m.get_one::<String>(name)
        .map(String::as_str)
        .unwrap_or_default()
}

/// The settings given as flags (global ones, and `serve`'s when serving).
fn flag_settings(matches: &ArgMatches) -> baylink_server::config::Settings {
    let mut flags = baylink_server::config::Settings {
        data: matches.get_one::<PathBuf>("data").cloned(),
        database: matches.get_one::<String>("database").cloned(),
        log_format: matches.get_one("log-format").copied(),
        ..Default::default()
    };
    let serving = match matches.subcommand() {
        Some(("serve", sub)) => Some(sub),
        Some(("config", config)) => config.subcommand_matches("check"),
        _ => None,
    };
    if let Some(sub) = serving {
        flags.listen = sub.get_one("listen").copied();
        flags.max_clock_ahead_s = sub.get_one("max-clock-ahead").copied();
        flags.secure_cookies = sub.get_flag("secure-cookies").then_some(true);
        flags.drain_s = sub.get_one("drain-seconds").copied();
        flags.trusted_proxies = sub
            .get_many::<baylink_server::forwarded::Cidr>("trusted-proxy")
            .map(|nets| nets.copied().collect());
        flags.forwarded_header = sub.get_one("forwarded-header").copied();
    }
    flags
}

fn run(
    matches: &ArgMatches,
    config: Config,
    sources: &baylink_server::config::Sources,
) -> Result<(), AppError> {
    let Some((command, sub)) = matches.subcommand() else {
        return Ok(());
    };
    if command == "config" {
        for (key, value, source) in config.describe(sources) {
            say!("{key:<18} = {value:<32} ({})", source.as_str());
        }
        return Ok(());
    }
    if config.database.is_some() && matches!(command, "backup" | "restore" | "verify") {
        return Err(AppError::BadRequest(format!(
            "{command} is for the embedded SQLite database; back up and restore PostgreSQL \
             with its own tools, pg_dump or base backups (docs/scale-out.md)"
        )));
    }
    if command == "serve" {
        check_data_dir(&config)?;
        let demo = sub.get_flag("demo");
        return serve(config, move |config| {
            let (state, db) = AppState::open(config)?;
            if demo {
                demo::seed(&db, &mut std::io::stdout())?;
            }
            Ok(state)
        });
    }
    if command == "verify" {
        let file = sub.get_one::<PathBuf>("file").cloned().unwrap_or_default();
        let v = baylink_server::store::db::verify(&file)?;
        say!(
            "{}: intact, schema {} (this server's {}); {} records, {} accounts, {} token keys in use, last sequence number {}",
            file.display(),
            v.schema,
            v.known,
            v.records,
            v.accounts,
            v.keys,
            v.seq
        );
        return Ok(());
    }
    if command == "restore" {
        let file = sub.get_one::<PathBuf>("file").cloned().unwrap_or_default();
        let kept = restore(&config, &file)?;
        say!(
            "restored {} as {}; the database it replaced is {}",
            file.display(),
            config.database_path().display(),
            kept.map_or_else(|| "none".into(), |k| k.display().to_string())
        );
        say!(
            "everything is as it was when the backup was taken: redo the device revocations, \
             disabled accounts, password and village changes made since (the replaced database's \
             audit log lists them)"
        );
        return Ok(());
    }
    if command == "migrate"
        && let Some(url) = config.database.clone()
    {
        let (before, known) = baylink_server::store::pg::schema_of(&url)?;
        AppState::open(config)?;
        match before {
            Some(found) if found == known => {
                say!("the database is at schema {known}: nothing to do")
            }
            Some(found) => say!("migrated the database from schema {found} to {known}"),
            None => say!("created the schema {known} in the database"),
        }
        return Ok(());
    }
    if command == "migrate" {
        let path = config.database_path();
        let (before, known) = baylink_server::store::db::schema_of(&path)?;
        // A server still running on the old schema would read tables changed beneath it (it
        // checks the schema when it opens the database only): held while the steps run.
        let lock = serve_lock(&config)?;
        if before.is_some_and(|found| found != known) && lock.try_lock().is_err() {
            return Err(AppError::Conflict(format!(
                "a server is running on {}: stop every server on it before migrating",
                config.data_dir.display()
            )));
        }
        AppState::open(config)?;
        drop(lock);
        match before {
            Some(found) if found == known => {
                say!("the database is at schema {known}: nothing to do")
            }
            Some(found) => say!("migrated the database from schema {found} to {known}"),
            None => say!("created the database at schema {known}"),
        }
        return Ok(());
    }
    // Reading a data directory that is not there is a mistyped --data, not a new server.
    let creates = matches!(
        (command, sub.subcommand_name()),
        ("user", Some("add")) | ("station", Some("import"))
    );
    match &config.database {
        None if !creates && !config.database_path().exists() => {
            return Err(AppError::NotFound(format!(
                "no database in {}: is --data (or --database) right? (`serve` or `migrate` \
                 creates one)",
                config.data_dir.display()
            )));
        }
        Some(url) if !creates && baylink_server::store::pg::schema_of(url)?.0.is_none() => {
            return Err(AppError::NotFound(
                "no Baylink schema in that PostgreSQL database: is --database right? \
                 (`serve` or `migrate` creates one)"
                    .into(),
            ));
        }
        _ => {}
    }
    // Held shared while the command runs, as a server holds it: a restore waits for it to end
    // (and it for a restore) rather than swap the database beneath its writes, whose commits
    // would go to a log the swap had just removed.
    let _serving = match &config.database {
        None => {
            let lock = serve_lock(&config)?;
            lock.lock_shared()
                .map_err(|e| AppError::Internal(format!("serve.lock: {e}")))?;
            Some(lock)
        }
        Some(_) => None,
    };
    // Administration never migrates: a server of the version before may be running on it.
    // Its writes wait for a busy server's writer for up to two minutes (`Db::open_current`).
    let (state, db) = AppState::open_current(config)?;
    // The administrator's commands go through the storage trait, as the console does, each
    // its own unit of work and audited as the operator's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Internal(format!("runtime: {e}")))?;
    let store = &state.store;
    match (command, sub.subcommand()) {
        ("user", Some(("add", m))) => {
            let password = read_password()?;
            let hash = auth::password::hash(&password)?;
            let villages: Vec<String> = m
                .get_many::<String>("villages")
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let username = text(m, "username");
            let new = NewAccount {
                username: username.to_owned(),
                display_name: m
                    .get_one::<String>("name")
                    .map_or(username, String::as_str)
                    .to_owned(),
                role: Role::parse(text(m, "role")).unwrap_or(Role::Officer),
                station: m.get_one::<String>("station").cloned(),
                password_hash: hash,
                villages,
            };
            wait(&runtime, store.create_account(Actor::Operator, new))?;
            say!("added {username}");
        }
        ("user", Some(("list", _))) => {
            for (a, villages) in wait(&runtime, store.accounts())? {
                let state = if a.disabled { "disabled" } else { "active" };
                let shown = if a.role == Role::Officer {
                    villages.join(",")
                } else {
                    format!("{} villages", villages.len())
                };
                say!(
                    "{:<16} {:<9} {:<8} {:<10} {} {}",
                    a.username,
                    a.role.as_str(),
                    state,
                    a.station.unwrap_or_default(),
                    a.display_name,
                    shown
                );
            }
        }
        ("user", Some((verb @ ("disable" | "enable"), m))) => {
            let access = if verb == "disable" {
                Access::Disabled
            } else {
                Access::Enabled
            };
            let username = text(m, "username").to_owned();
            wait(
                &runtime,
                store.set_access(Actor::Operator, username, access),
            )?;
            say!("{verb}d {}", text(m, "username"));
        }
        ("user", Some(("password", m))) => {
            let password = read_password()?;
            let hash = auth::password::hash(&password)?;
            let username = text(m, "username").to_owned();
            wait(
                &runtime,
                store.set_password(Actor::Operator, username, hash),
            )?;
            say!(
                "new password set for {}; its phones and browsers sign in again",
                text(m, "username")
            );
        }
        ("user", Some(("assign", m))) => {
            let villages: Vec<String> = m
                .get_many::<String>("villages")
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let shown = villages.join(",");
            let username = text(m, "username").to_owned();
            wait(
                &runtime,
                store.assign_villages(Actor::Operator, username, villages),
            )?;
            say!("{} now has {shown}", text(m, "username"));
        }
        ("device", Some(("list", _))) => {
            for (d, username) in wait(&runtime, store.devices())? {
                let state = if d.revoked { "revoked" } else { "active" };
                say!(
                    "{}  {:<16} {:<8} {:<20} last sync {}",
                    d.id,
                    username,
                    state,
                    d.name,
                    d.last_sync_ms.map_or("never".into(), time)
                );
            }
        }
        ("device", Some(("revoke", m))) => {
            let id = text(m, "id");
            let device = uuid::Uuid::parse_str(id.trim())
                .map_err(|_| AppError::NotFound(format!("no device `{id}`")))?;
            wait(&runtime, store.revoke_device(Actor::Operator, device))?;
            say!("revoked {}", text(m, "id"));
        }
        ("key", Some(("list", _))) => {
            let keys = wait(&runtime, store.token_keys())?;
            let signing = keys
                .iter()
                .rfind(|k| k.retired_ms.is_none())
                .map(|k| k.id.clone());
            for k in keys {
                let state = match k.retired_ms {
                    Some(ms) => format!("retired {}", time(ms)),
                    None if Some(&k.id) == signing.as_ref() => "signs".into(),
                    None => "verifies".into(),
                };
                say!("{}  added {}  {state}", k.id, time(k.created_ms));
            }
        }
        ("key", Some(("add", _))) => {
            let key = baylink_server::state::new_token_key(None);
            let id = key.id.clone();
            wait(&runtime, store.add_token_key(Actor::Operator, key))?;
            say!("added {id}: it signs from now on (running servers take it within 30 seconds)");
        }
        ("key", Some(("retire", m))) => {
            let id = text(m, "id").trim().to_owned();
            let now = baylink_server::store::now_ms();
            let at_once = m.get_flag("at-once");
            wait(
                &runtime,
                store.retire_token_key(Actor::Operator, id.clone(), now, at_once),
            )?;
            say!("retired {id} (running servers refuse what it signed within 30 seconds)");
        }
        ("audit", Some(("export", m))) => {
            let since_ms = match m.get_one::<String>("since") {
                Some(day) => Some(
                    baylink_domain::date::unix_ms_from_datetime(
                        &format!("{} 00:00:00", day.trim()),
                        baylink_domain::date::CHINA_OFFSET_MINUTES,
                    )
                    .ok_or_else(|| {
                        AppError::BadRequest(format!("--since: `{day}` is not a day (YYYY-MM-DD)"))
                    })? as u64,
                ),
                None => None,
            };
            let mut filter = baylink_server::store::contract::AuditFilter {
                action: m.get_one::<String>("action").cloned(),
                username: None,
                since_ms,
                before: None,
            };
            say!("time,account,action,target,detail");
            loop {
                let (page, _) = wait(&runtime, store.audit_page(filter.clone(), 1_000))?;
                for e in &page.entries {
                    let who = e
                        .username
                        .as_deref()
                        .unwrap_or(baylink_server::store::audit::OPERATOR);
                    let fields = [
                        time(e.at_ms),
                        who.to_owned(),
                        e.action.clone(),
                        e.target.clone().unwrap_or_default(),
                        e.detail.clone().unwrap_or_default(),
                    ];
                    let row: Vec<String> = fields
                        .iter()
                        .map(|f| baylink_server::console::csv_field(f))
                        .collect();
                    say!("{}", row.join(","));
                }
                match page.older {
                    Some(id) => filter.before = Some(id),
                    None => break,
                }
            }
        }
        ("station", Some(("list", _))) => {
            let stations = wait(&runtime, store.stations())?;
            if stations.is_empty() {
                say!(
                    "no stations yet: `station import [FILE]` loads them (Daya Bay's without a file)"
                );
            }
            for station in stations {
                say!(
                    "{} {} ({} villages)",
                    station.code,
                    station.name,
                    station.villages.len()
                );
                for (v, n) in station.villages {
                    say!("  {v} {n}");
                }
            }
        }
        ("station", Some(("import", m))) => {
            let list = match m.get_one::<PathBuf>("file") {
                Some(path) => std::fs::read_to_string(path).map_err(|e| {
                    AppError::BadRequest(format!("places: {}: {e}", path.display()))
                })?,
                None => demo::VILLAGES.to_owned(),
            };
            let imported = wait(&runtime, store.import_places(Actor::Operator, list))?;
            say!(
                "{} stations and {} villages added or changed",
                imported.stations,
                imported.villages
            );
        }
        ("show", _) => {
            let id = text(sub, "id").trim().to_lowercase();
            let found = match uuid::Uuid::parse_str(&id) {
                Ok(uuid) => wait(&runtime, store.record(uuid))?,
                Err(_) => None,
            };
            let Some(baylink_server::store::records::RecordView {
                kind,
                fields,
                history,
                ..
            }) = found
            else {
                return Err(AppError::NotFound(format!("no record {id}")));
            };
            say!("{kind} {id}");
            for (field, value) in fields {
                say!("  {field:<20} {value}");
            }
            say!("history:");
            for h in history {
                let at = baylink_domain::date::datetime_from_unix_ms(
                    h.at_ms as i64,
                    baylink_domain::date::CHINA_OFFSET_MINUTES,
                );
                let lost = if h.won { "" } else { " (lost the merge)" };
                let old = h.old_value.unwrap_or_else(|| "-".into());
                say!(
                    "  {at} {} {:<16} {old} -> {}{lost}",
                    h.username.unwrap_or_default(),
                    h.field,
                    h.value
                );
            }
        }
        ("compact", _) => {
            let days = sub.get_one::<u32>("idle-days").copied().unwrap_or(60);
            let idle_ms = u64::from(days) * 86_400_000;
            let done = wait(&runtime, store.compact(Actor::Operator, idle_ms))?;
            say!(
                "compacted up to sequence number {} ({} devices seen within {days} days): {} \
                 purge notes and {} deleted or merged-away records removed",
                done.horizon,
                done.active_devices,
                done.purge_notes,
                done.tombstones
            );
        }
        ("backup", _) => {
            let to = sub.get_one::<PathBuf>("to").cloned().unwrap_or_default();
            let live = std::fs::canonicalize(state.config.database_path()).ok();
            if live.is_some() && std::fs::canonicalize(&to).ok() == live {
                return Err(AppError::BadRequest(format!(
                    "{}: that is the database itself: back up to another file",
                    to.display()
                )));
            }
            if to.exists() && !sub.get_flag("force") {
                return Err(AppError::Conflict(format!(
                    "{} exists: name a new file, or add --force to replace it",
                    to.display()
                )));
            }
            if to.exists() {
                std::fs::remove_file(&to)
                    .map_err(|e| AppError::BadRequest(format!("{}: {e}", to.display())))?;
            }
            db.backup(&to)?;
            // A backup is a copy of every record and of the token keys: who took one, and where.
            let target = to.display().to_string();
            db.call_blocking(move |c| {
                audit(
                    c,
                    None,
                    "backup",
                    Some(&target),
                    None,
                    baylink_server::store::now_ms(),
                )
            })?;
            say!("backed up to {}", to.display());
        }
        _ => {}
    }
    Ok(())
}

/// A time as the console shows it, in China time (said so).
fn time(ms: u64) -> String {
    let at = baylink_domain::date::datetime_from_unix_ms(
        ms as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    );
    format!("{at}+08:00")
}

/// Runs a store call to its end on the command line's runtime.
fn wait<T>(
    runtime: &tokio::runtime::Runtime,
    call: baylink_server::store::contract::StoreFuture<T>,
) -> Result<T, AppError> {
    Ok(runtime.block_on(call)?)
}

/// The first line of standard input: passwords never appear in argv or the shell history.
fn read_password() -> Result<String, AppError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| AppError::BadRequest(format!("password: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < 8 {
        return Err(AppError::BadRequest(
            "password: at least 8 characters, on standard input".into(),
        ));
    }
    Ok(password)
}

/// The lock every server on a data directory holds shared while it runs, and `restore` takes
/// alone: a database is never replaced under a running server.
fn serve_lock(config: &Config) -> Result<std::fs::File, AppError> {
    config.create_data_dir()?;
    let path = config.data_dir.join("serve.lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AppError::Internal(format!("{}: {e}", path.display())))
}

/// Puts a verified backup in place of the database, the one it replaces renamed beside it
/// (with its log): answers that one's new name, if there was one.
fn restore(config: &Config, file: &std::path::Path) -> Result<Option<PathBuf>, AppError> {
    let lock = serve_lock(config)?;
    if lock.try_lock().is_err() {
        return Err(AppError::Conflict(format!(
            "a server is running on {} (or an administration command): stop every server on it first",
            config.data_dir.display()
        )));
    }
    let live = config.database_path();
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    // The copy's own name too: cleared before the copy, it would take the backup with it.
    let incoming = live.with_file_name("baylink.db.incoming");
    if same(file, &live) || same(file, &incoming) {
        return Err(AppError::BadRequest(format!(
            "{} is the database itself or a restore's copy of a backup: restore a backup",
            file.display()
        )));
    }
    // A log or journal left with no database (moved away by hand without it) would be applied
    // to the copy put in its place.
    if let Some(leftover) = orphan_log(&live) {
        return Err(AppError::Conflict(format!(
            "{} is there without its database: SQLite would apply it to the backup; move it \
             away with the database it belongs to, then restore",
            leftover.display()
        )));
    }
    let verified = baylink_server::store::db::verify(file)?;
    let stamp = baylink_server::store::now_ms() / 1000;
    // The backup is copied in beside the database first, through SQLite (its own log's commits
    // come too), checked and synced; only then is the database moved aside and the copy put in
    // its place. A copy that fails leaves the database where it was.
    // One name, so that a restore cut short (Ctrl-C during the copy) leaves nothing the
    // next one does not clear first.
    let discard = |path: &std::path::Path| {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    discard(&incoming);
    let copied = baylink_server::store::db::copy_database(file, &incoming)
        .and_then(|()| baylink_server::store::db::verify(&incoming));
    match copied {
        Ok(copy) if copy.seq == verified.seq && copy.records == verified.records => {}
        Ok(copy) => {
            discard(&incoming);
            return Err(AppError::Internal(format!(
                "the copy of {} holds sequence number {} and {} records, the backup {} and {}",
                file.display(),
                copy.seq,
                copy.records,
                verified.seq,
                verified.records
            )));
        }
        Err(e) => {
            discard(&incoming);
            return Err(e.into());
        }
    }
    // A name no database kept before holds (two restores in one second).
    let kept = (0..)
        .map(|n| match n {
            0 => live.with_file_name(format!("baylink.db.replaced-{stamp}")),
            n => live.with_file_name(format!("baylink.db.replaced-{stamp}-{n}")),
        })
        .find(|name| !name.exists())
        .unwrap_or_default();
    let moved = live.exists();
    let failed = |e: String| {
        discard(&incoming);
        AppError::Internal(e)
    };
    if moved {
        // The database is kept by a second name (a hard link) and the copy then renamed over
        // it in one step: at no moment is there no `baylink.db`. Its log is folded into it
        // first (SQLite does at the last close; a server that stopped cleanly left none), so
        // that the file alone is the database kept, and no log of it is left beside the copy.
        fold_log(&live).map_err(|e| failed(format!("{}: its log: {e}", live.display())))?;
    }
    // Where the filesystem has no hard links (vfat, some network mounts) the database is
    // renamed aside instead, for the moment until the copy takes its name.
    let linked = moved && std::fs::hard_link(&live, &kept).is_ok();
    if moved && !linked {
        std::fs::rename(&live, &kept).map_err(|e| failed(format!("{}: {e}", kept.display())))?;
    }
    if let Err(e) = std::fs::rename(&incoming, &live) {
        match (moved, linked) {
            (true, true) => {
                let _ = std::fs::remove_file(&kept);
            }
            (true, false) => {
                let _ = std::fs::rename(&kept, &live);
            }
            _ => {}
        }
        return Err(failed(format!("{}: {e}", live.display())));
    }
    let _ = std::fs::remove_file(format!("{}-shm", live.display()));
    // The rename and the link themselves reach the disk with the directory.
    if let Ok(dir) = std::fs::File::open(&config.data_dir) {
        let _ = dir.sync_all();
    }
    // From here the backup is in place whatever fails: the error says so.
    let after = |e: String| {
        AppError::Internal(format!(
            "the backup is in place as {} (the database it replaced kept as {}), but {e}",
            live.display(),
            if moved {
                kept.display().to_string()
            } else {
                "nothing".into()
            }
        ))
    };
    let db = baylink_server::store::Db::open(&live).map_err(|e| after(e.to_string()))?;
    let (source, replaced) = (
        file.display().to_string(),
        moved.then(|| kept.display().to_string()),
    );
    db.call_blocking(move |c| {
        let now = baylink_server::store::now_ms();
        audit(c, None, "restore", Some(&source), replaced.as_deref(), now)
    })
    .map_err(|e| after(format!("its audit entry: {e}")))?;
    drop(db);
    own_like_data_dir(config);
    tracing::info!(schema = verified.schema, "restored");
    Ok(moved.then_some(kept))
}

/// A server about to create an empty database where a restore kept one aside says so: a
/// restore cut short, or a database moved away by hand, is otherwise served as a new district.
/// A log of the database found where the database is not is refused: SQLite would overwrite it
/// with the new database's, and the commits it holds with it.
fn check_data_dir(config: &Config) -> Result<(), AppError> {
    if config.database.is_some() || config.database_path().exists() {
        return Ok(());
    }
    if let Some(log) = orphan_log(&config.database_path()) {
        return Err(AppError::Conflict(format!(
            "{} is there without baylink.db: a new database would overwrite it; move it away \
             with the database it belongs to (or restore a backup), then serve",
            log.display()
        )));
    }
    let Ok(entries) = std::fs::read_dir(&config.data_dir) else {
        return Ok(());
    };
    let kept: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.starts_with("baylink.db.replaced-")
                && !["-wal", "-shm", "-journal"]
                    .iter()
                    .any(|s| name.ends_with(s))
        })
        .collect();
    if let Some(newest) = kept.iter().max() {
        tracing::warn!(
            kept = %newest,
            dir = %config.data_dir.display(),
            "no baylink.db here, but a database a restore kept aside is: starting with a new, empty one; \
             stop and `baylink-server restore` the kept one if that is not what you want"
        );
    }
    Ok(())
}

/// A log or journal of the database at `live` left where the database itself is not (moved
/// away by hand without it): SQLite would apply it to, or overwrite it with, whatever database
/// is put or created there.
fn orphan_log(live: &std::path::Path) -> Option<PathBuf> {
    if live.exists() {
        return None;
    }
    ["-wal", "-journal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", live.display())))
        .find(|log| log.exists())
}

/// Folds a database's log (`-wal`) into its file, if it has one: the file is then the whole
/// database, and SQLite removes the log at the last close.
fn fold_log(path: &std::path::Path) -> Result<(), String> {
    let log = PathBuf::from(format!("{}-wal", path.display()));
    if !log.exists() {
        return Ok(());
    }
    let conn =
        baylink_server::store::rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| e.to_string())
    .and_then(|busy| match busy {
        0 => Ok(()),
        _ => Err("the log could not be checkpointed".into()),
    })?;
    conn.close().map_err(|(_, e)| e.to_string())?;
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
        return Err(format!(
            "{} is still there after its checkpoint",
            log.display()
        ));
    }
    Ok(())
}

/// Gives the restored database (and the lock file) the data directory's owner: a restore run as
/// root must leave files the service's own user can open. Where that cannot be done, says so.
fn own_like_data_dir(config: &Config) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(&config.data_dir) else {
        return;
    };
    let live = config.database_path().display().to_string();
    let files = [
        PathBuf::from(&live),
        PathBuf::from(format!("{live}-wal")),
        PathBuf::from(format!("{live}-shm")),
        config.data_dir.join("serve.lock"),
    ];
    for path in files {
        let Ok(file) = std::fs::metadata(&path) else {
            continue;
        };
        if (file.uid(), file.gid()) == (dir.uid(), dir.gid()) {
            continue;
        }
        if let Err(e) = std::os::unix::fs::chown(&path, Some(dir.uid()), Some(dir.gid())) {
            eprintln!(
                "warning: {} is owned by uid {}, the data directory by uid {} ({e}): give it the \
                 directory's owner (chown) before starting the server",
                path.display(),
                file.uid(),
                dir.uid()
            );
        }
    }
}

/// Binds the listener, then opens the state while `/livez` answers (a migration may take
/// minutes), and serves until SIGTERM or SIGINT, draining open requests.
fn serve(
    config: Config,
    open: impl FnOnce(Config) -> Result<AppState, AppError> + Send + 'static,
) -> Result<(), AppError> {
    // Held shared until the process ends: `restore` waits for every server to stop.
    let lock = serve_lock(&config)?;
    lock.lock_shared()
        .map_err(|e| AppError::Internal(format!("serve.lock: {e}")))?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| AppError::Internal(format!("runtime: {e}")))?;
    let served = runtime.block_on(async move {
        let listen = config.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| AppError::Internal(format!("bind {listen}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| AppError::Internal(e.to_string()))?;
        let proxies: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(
            %local,
            trusted_proxies = %proxies.join(","),
            forwarded_header = config.forwarded_header.name(),
            "opening the database (migrating it if need be); /livez answers meanwhile"
        );
        let data = match &config.database {
            Some(url) => format!(
                "data in PostgreSQL: {}",
                baylink_server::config::describe_database(url)
            ),
            None => format!("data in {}", config.data_dir.display()),
        };
        let opening = config.clone();
        let ready = move || {
            // A server whose output nobody reads any more keeps serving.
            let _ = writeln!(
                std::io::stdout(),
                "baylink-server listening on http://{local} ({data})"
            );
            tracing::info!(%local, "ready");
        };
        let served = baylink_server::serve_opening(
            listener,
            &config,
            move || open(opening),
            ready,
            baylink_server::stop_signal(),
        )
        .await;
        tracing::info!("stopped");
        served
    });
    // A migration cut short by the stop is not waited for: its transaction rolls back.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    served
}
