//! Devices for scenarios: a real store on a temporary file, its own clock, and the exchange of
//! outboxes between devices (what the server will relay, done directly).

use std::sync::Arc;

use baylink_domain::{EntityKind, Input};
use baylink_sync::{EntityState, ManualClock};
use mobile_core::{ApplyReport, Store};
use uuid::Uuid;

/// 2026-11-28T04:00:00Z, the scenarios' "now".
pub const NOW_MS: u64 = 1_795_838_400_000;

/// A village of Daya Bay (澳头街道桥西社区).
pub const VILLAGE: &str = "441303006001";

/// One officer's phone.
pub struct Device {
    /// The store, as the app holds it.
    pub store: Store,
    /// The phone's clock, which the scenario may set wrong.
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Device {
    /// A new phone for an officer, its database on a temporary file.
    pub fn new(officer: &str) -> Device {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let mut store = Store::open(dir.path().join("field.db"))
            .expect("store opens")
            .with_clock(clock.clone());
        store.set_user(officer).expect("user saved");
        Device {
            store,
            clock,
            _dir: dir,
        }
    }

    /// Captures a record, panicking on invalid input (scenarios use valid data).
    pub fn capture(&mut self, kind: EntityKind, pairs: &[(&str, &str)]) -> Uuid {
        self.store
            .capture(kind, &input(pairs))
            .expect("valid capture")
    }

    /// Edits a record, panicking on invalid input.
    pub fn edit(&mut self, id: Uuid, pairs: &[(&str, &str)]) {
        self.store.edit(id, &input(pairs)).expect("valid edit");
    }

    /// Every record with its merged fields and stamps.
    pub fn states(&self) -> std::collections::BTreeMap<Uuid, (String, EntityState)> {
        self.store.states().expect("states readable")
    }
}

/// The real time now, in milliseconds since the Unix epoch (for scenarios that need the
/// server's clock and a phone's to agree, or to disagree by a known amount).
pub fn real_now_ms() -> u64 {
    baylink_sync::PhysicalClock::now_ms(&baylink_sync::SystemClock)
}

/// A valid resident ID number: the first 17 digits and their check character.
pub fn resident_id(first17: &str) -> String {
    format!(
        "{first17}{}",
        baylink_domain::id_number::check_char(first17.as_bytes())
    )
}

/// Form input from pairs.
pub fn input(pairs: &[(&str, &str)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Sends every pending change of `from` to `to`, as a sync through a server would.
pub fn send(from: &Device, to: &mut Device) -> ApplyReport {
    let changes = from.store.outbox(usize::MAX).expect("outbox readable");
    to.store.apply_remote(&changes).expect("changes apply")
}

/// The password of every account the harness creates.
pub const PASSWORD: &str = "correct-horse-battery";

/// A real `baylink-server` on 127.0.0.1 (a random port), serving from a temporary data
/// directory, on its own runtime so devices can call it from the test thread.
pub struct Server {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's state.
    pub state: baylink_server::AppState,
    /// The server's database, to look inside.
    pub db: baylink_server::store::Db,
    data: std::path::PathBuf,
    /// The PostgreSQL database it serves from, when the tests run on PostgreSQL.
    postgres: Option<std::sync::Arc<Postgres>>,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The data directory's owner: none for [`Server::another_node`], which serves the first's.
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with Daya Bay's stations and villages and no accounts.
    pub fn start() -> Server {
        Self::start_with(|_| {})
    }

    /// [`Server::start`] with its configuration adjusted first (a restart keeps the default).
    pub fn start_with(adjust: impl FnOnce(&mut baylink_server::Config)) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("server");
        let postgres = postgres_if_asked().map(std::sync::Arc::new);
        let database = postgres.as_ref().map(|p| p.url.clone());
        let (url, state, db, runtime, shutdown) = Self::launch(&data, database, adjust);
        db.call_blocking(baylink_server::demo::seed_places)
            .expect("places seeded");
        Server {
            url,
            state,
            db,
            data,
            postgres,
            runtime: Some(runtime),
            shutdown: Some(shutdown),
            _dir: Some(dir),
        }
    }

    /// Another node over this server's database: a second server of its own (its own
    /// connections, runtime and port), as two processes over one database are. Drop it before
    /// this one.
    pub fn another_node(&self) -> Server {
        let database = self.postgres.as_ref().map(|p| p.url.clone());
        let (url, state, db, runtime, shutdown) = Self::launch(&self.data, database, |_| {});
        Server {
            url,
            state,
            db,
            data: self.data.clone(),
            postgres: self.postgres.clone(),
            runtime: Some(runtime),
            shutdown: Some(shutdown),
            _dir: None,
        }
    }

    fn launch(
        data: &std::path::Path,
        database: Option<String>,
        adjust: impl FnOnce(&mut baylink_server::Config),
    ) -> (
        String,
        baylink_server::AppState,
        baylink_server::store::Db,
        tokio::runtime::Runtime,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let mut config = baylink_server::Config::new(data);
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        config.database = database;
        adjust(&mut config);
        let (state, db) = baylink_server::AppState::open(config).expect("server state opens");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        runtime.spawn(async move {
            let _ = baylink_server::serve_until(listener, serving, async {
                let _ = rx.await;
            })
            .await;
        });
        (url, state, db, runtime, tx)
    }

    /// Adds an officer of one village.
    pub fn add_officer(&self, username: &str, village: &str) {
        self.add_account(
            username,
            baylink_server::store::accounts::Role::Officer,
            &[village.to_owned()],
        );
    }

    /// Adds a reviewer of a station (`441303006` 澳头, `441303007` 霞涌, `441303008` 西区).
    pub fn add_reviewer(&self, username: &str, station: &str) {
        self.add_account_at(
            username,
            baylink_server::store::accounts::Role::Reviewer,
            station,
            &[],
        );
    }

    /// Adds an account of the 澳头 station.
    pub fn add_account(
        &self,
        username: &str,
        role: baylink_server::store::accounts::Role,
        villages: &[String],
    ) {
        self.add_account_at(username, role, "441303006", villages);
    }

    fn add_account_at(
        &self,
        username: &str,
        role: baylink_server::store::accounts::Role,
        station: &str,
        villages: &[String],
    ) {
        let hash = baylink_server::auth::password::hash(PASSWORD).expect("hash");
        let new = baylink_server::store::accounts::NewAccount {
            username: username.to_owned(),
            display_name: username.to_owned(),
            role,
            station: Some(station.to_owned()),
            password_hash: hash,
            villages: villages.to_vec(),
        };
        self.db
            .call_blocking(|conn| {
                baylink_server::store::accounts::create_account(
                    conn,
                    baylink_server::store::audit::Actor::Operator,
                    &new,
                    NOW_MS,
                )
            })
            .expect("account created");
    }

    /// Stops the server (the process would exit here) and starts it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts the stopped server on its data. Same address is not guaranteed; devices keep the
    /// URL they signed in with, so tests re-point them with `Device::move_server`.
    fn start_again(&mut self) {
        let database = self.postgres.as_ref().map(|p| p.url.clone());
        let (url, state, db, runtime, shutdown) = Self::launch(&self.data, database, |_| {});
        self.url = url;
        self.state = state;
        self.db = db;
        self.runtime = Some(runtime);
        self.shutdown = Some(shutdown);
    }

    /// Stops the server, puts a backup in place of its database (the log beside it removed,
    /// as docs/operations.md says) and starts it again.
    pub fn restore(&mut self, copy: &std::path::Path) {
        self.stop();
        // Every connection to the database being replaced closes first, as with the process
        // stopped: the handles here, then the thread copying its log back (within 250 ms).
        let placeholder = baylink_server::store::Db::open_in_memory().expect("placeholder");
        self.state = baylink_server::AppState {
            store: std::sync::Arc::new(placeholder.clone()),
            ..self.state.clone()
        };
        self.db = placeholder;
        std::thread::sleep(std::time::Duration::from_millis(600));
        let database = self.data.join("baylink.db");
        std::fs::copy(copy, &database).expect("backup put in place");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
        }
        self.start_again();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }

    /// An account as the console acts for it (reviewers and administrators; officers to show
    /// they are refused).
    pub fn caller(&self, username: &str) -> baylink_server::store::caller::Caller {
        self.db
            .call_blocking(|c| {
                let account = baylink_server::store::accounts::account_by_username(c, username)
                    .expect("account readable")
                    .expect("account exists");
                let villages =
                    baylink_server::store::accounts::villages_of(c, &account).expect("villages");
                Ok(baylink_server::store::caller::Caller {
                    account: account.id,
                    role: account.role,
                    device: "console".into(),
                    villages,
                })
            })
            .expect("caller")
    }

    /// Runs a use case of the server's storage trait to its end, as a handler would.
    pub fn run<T>(
        &self,
        call: baylink_server::store::contract::StoreFuture<T>,
    ) -> Result<T, baylink_server::store::StoreError> {
        self.runtime
            .as_ref()
            .expect("the server runs")
            .block_on(call)
    }

    /// Reads the token keys from the database again, as the node does every 30 seconds.
    pub fn reload_keys(&self) {
        let (keys, store) = (self.state.keys.clone(), self.state.store.clone());
        self.runtime
            .as_ref()
            .expect("the server runs")
            .block_on(async move { keys.reload(store.as_ref()).await })
            .expect("keys read");
    }

    /// Everything the server holds about records, from its storage's backend-neutral snapshot.
    pub fn snapshot(&self) -> baylink_server::store::snapshot::Snapshot {
        self.run(self.state.store.snapshot()).expect("snapshot")
    }

    /// Runs a closure on the server's database, whichever backend holds it.
    pub fn query<T>(&self, f: impl FnOnce(&baylink_server::store::conn::Conn<'_>) -> T) -> T {
        self.db
            .call_blocking(|conn| Ok(f(conn)))
            .expect("query runs")
    }

    /// Whether this server keeps its data on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SQLite types for looking into the server's database.
pub use baylink_server::store::rusqlite as rusqlite_reexport;

/// A fresh database of the PostgreSQL cluster `BAYLINK_TEST_POSTGRES` names, dropped with the
/// last server using it.
pub use baylink_server::store::pg::FreshDatabase as Postgres;

/// The PostgreSQL cluster the PostgreSQL tests use, or `None` (see the server's own).
pub use baylink_server::store::pg::test_postgres;

/// A fresh database when `BAYLINK_E2E_BACKEND=postgres` asks the scenarios to run on
/// PostgreSQL (`./scripts/test` runs the server-sync scenarios so), else `None`.
fn postgres_if_asked() -> Option<Postgres> {
    if std::env::var("BAYLINK_E2E_BACKEND").ok()?.as_str() != "postgres" {
        return None;
    }
    let cluster = std::env::var("BAYLINK_TEST_POSTGRES")
        .expect("BAYLINK_E2E_BACKEND=postgres needs BAYLINK_TEST_POSTGRES");
    Some(Postgres::new(&cluster).expect("a fresh database"))
}

impl Device {
    /// Signs this phone in to the server as an account.
    pub fn login(&mut self, server: &Server, username: &str) {
        mobile_core::sync::login(
            &mut self.store,
            &server.url,
            username,
            PASSWORD,
            "test phone",
        )
        .expect("login succeeds");
    }

    /// Syncs, panicking on failure.
    pub fn sync(&mut self) -> mobile_core::SyncReport {
        self.try_sync().expect("sync succeeds")
    }

    /// Syncs.
    pub fn try_sync(&mut self) -> Result<mobile_core::SyncReport, mobile_core::Error> {
        mobile_core::sync::sync(&mut self.store, &|_: &str, _: u64, _: u64| {})
    }

    /// Points the session at a server's new address (after a restart on another port).
    pub fn move_server(&mut self, server: &Server) {
        self.store
            .set_server_url(&server.url)
            .expect("server address saved");
    }
}
