//! The database handle: one writer connection, readers beside it in snapshots, the write-ahead log checkpointed beside the writer, numbered migrations.

use crate::store::caller::Caller;
use crate::store::checkpoint::{WRITER_CHECKPOINT, checkpoint_beside};
use crate::store::conn::Conn;
use crate::store::error::StoreError;
use crate::store::group;
use crate::store::pg::Pg;
use crate::store::{now_ms, push};
use baylink_sync::Change;
use baylink_sync::wire::ChangeResult;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicI64, Ordering};

/// Makes the database readable by its owner only: a new file is created `0600` before SQLite
/// opens it (SQLite gives its log and shared-memory files the database's mode), and the files of
/// an existing database are set so.
#[cfg(unix)]
pub(crate) fn private_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| StoreError::Backend(format!("database file: {e}"));
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        // The log and shared-memory files come and go with the last connection of another
        // handle (a server still closing, another node starting): one gone meanwhile is fine.
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(fail)?,
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn private_files(_: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Migration steps; step `i` brings the schema to version `i + 1`. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("sql/001_init.sql"),
    include_str!("sql/002_console.sql"),
    include_str!("sql/003_review.sql"),
    include_str!("sql/004_feed.sql"),
    include_str!("sql/005_feed_kind.sql"),
    include_str!("sql/006_feed_values.sql"),
    include_str!("sql/007_fewer_index_pages.sql"),
    include_str!("sql/008_token_generations.sql"),
    include_str!("sql/009_device_keys.sql"),
    include_str!("sql/010_address_code_index.sql"),
    include_str!("sql/011_records.sql"),
    include_str!("sql/012_shared_state.sql"),
    include_str!("sql/013_alert_raised.sql"),
    include_str!("sql/014_retention.sql"),
    include_str!("sql/015_summary_rowid.sql"),
    include_str!("sql/016_first_write.sql"),
    include_str!("sql/017_history_device.sql"),
    include_str!("sql/018_by_position.sql"),
];

/// The server's database handle, cheap to clone: one writer connection, and reader connections
/// beside it for work that only reads.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
}

/// The database a [`Db`] holds its data in.
#[derive(Clone)]
enum Backend {
    /// Embedded SQLite.
    Sqlite(Sqlite),
    /// A PostgreSQL server, shared by every node.
    Postgres(Arc<Pg>),
}

/// The SQLite database: one writer connection, readers beside it.
#[derive(Clone)]
struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
    /// Set only by [`Db::numbering_before_the_lock`]: the deliberately broken backend.
    early: Option<Arc<AtomicI64>>,
    /// Pushes waiting for the writer, applied together (`store::group`).
    pushes: Arc<group::Queue>,
}

/// Idle reader connections to the database file (none for a database in memory, whose reads go
/// to the writer).
pub(crate) struct Readers {
    path: Option<std::path::PathBuf>,
    idle: Mutex<Vec<Connection>>,
}

/// Plans made without looking at bound values. Otherwise SQLite compares a parameter's value
/// with a partial index's condition (`id_number IS NOT NULL`) and compiles the statement again
/// at every new binding: a cached key lookup was compiled anew for each record a push names.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Puts the database in write-ahead-log mode. From the rollback journal (a database made by
/// other tools) the switch needs the file to itself, and SQLite answers "database is locked" at
/// once, without waiting, while a second server starting beside this one migrates it: so the
/// switch is tried again for as long as a busy lock is waited for elsewhere.
fn log_mode(conn: &Connection) -> Result<(), StoreError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            done => return Ok(done?),
        }
    }
}

/// How long an administration command's write waits for the write lock (`Db::open_current`).
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

thread_local! {
    /// When this thread's write began waiting for the lock, and whether that was said.
    static WAITING: std::cell::Cell<(Option<std::time::Instant>, bool)> =
        const { std::cell::Cell::new((None, false)) };
}

/// SQLite's busy handler of an administration command's writer, beside a running server whose
/// writer may hold the write lock most of the time, letting it go for an instant between
/// commits: SQLite takes no turns between processes, and its own wait (ten seconds, trying every
/// tenth of one) was seen to run out. This one tries every few milliseconds for up to
/// [`PATIENCE`], saying so after two seconds. `count` is how often it was called for this wait
/// (0 the first time). True: try again.
fn patient(count: i32) -> bool {
    let now = std::time::Instant::now();
    let (since, told) = match (count, WAITING.with(std::cell::Cell::get)) {
        (0, _) | (_, (None, _)) => (now, false),
        (_, (Some(since), told)) => (since, told),
    };
    let waited = now - since;
    if waited >= PATIENCE {
        tracing::warn!(
            "gave up after {} s: the server's writer held the database all along; try again \
             when fewer phones push",
            PATIENCE.as_secs()
        );
        WAITING.with(|w| w.set((None, false)));
        return false;
    }
    let tell = !told && waited >= std::time::Duration::from_secs(2);
    if tell {
        tracing::warn!(
            "waiting for the server's writer to let go of the database (up to {} s)",
            PATIENCE.as_secs()
        );
    }
    WAITING.with(|w| w.set((Some(since), told || tell)));
    std::thread::sleep(std::time::Duration::from_millis(2));
    true
}

/// A summary row of a record stored before the summary table existed, which an open refreshes.
const STALE_SUMMARY: &str = "updated_seq = 0 AND label = ''";

/// Whether opening a database may migrate it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Migrate {
    Yes,
    No,
}

/// The schema of the database at `path` and this build's: read without changing anything
/// (`None` when there is no database yet).
pub fn schema_of(path: &Path) -> Result<(Option<i64>, i64), StoreError> {
    let known = MIGRATIONS.len() as i64;
    if !path.exists() {
        return Ok((None, known));
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let found = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((Some(found), known))
}

/// The database's instance: set in a backup's copy (`Db::backup`), empty for a database never
/// put back from one.
pub fn instance(conn: &Conn<'_>) -> Result<String, StoreError> {
    use crate::store::conn::Optional;
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = 'instance'", (), |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or_default())
}

/// A unit of work that writes, on PostgreSQL: on a connection for writing; each of its
/// transactions holds the writer lock (`store::pg`).
fn write_pg<T>(
    pg: &Pg,
    f: impl FnOnce(&Conn<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let session = pg.writer_session()?;
    f(&Conn::Pg(&session))
}

/// A unit of work that reads, on PostgreSQL: one snapshot, beside the writer.
fn read_pg<T>(
    pg: &Pg,
    f: impl FnOnce(&Conn<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let session = pg.session()?;
    session.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let out = f(&Conn::Pg(&session));
    if session
        .batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .is_err()
    {
        // Its state unknown, the connection is not handed to the next reader.
        session.discard();
    }
    out
}

/// Prepared statements a SQLite connection keeps (rusqlite keeps 16): a push alone runs
/// several dozen distinct ones, which were compiled again on every call.
const STATEMENTS_KEPT: usize = 256;

/// Reader connections kept open when idle.
pub(crate) const IDLE_READERS: usize = 4;

impl Db {
    /// Opens (creating if need be) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        Self::open_as(path, Migrate::Yes)
    }

    /// Opens the database file without migrating it (administration commands, which may run
    /// beside a server of the version before): a database of an older schema is refused, naming
    /// `baylink-server migrate`; a new one is created. Its writes wait for a busy server's
    /// writer up to [`PATIENCE`].
    pub fn open_current(path: &Path) -> Result<Db, StoreError> {
        Self::open_as(path, Migrate::No)
    }

    fn open_as(path: &Path, migrate: Migrate) -> Result<Db, StoreError> {
        private_files(path)?;
        let mut conn = Connection::open(path)?;
        Self::prepare(&mut conn, migrate)?;
        // Checkpoints run beside the writer (below). Under an ingest their copies never reach
        // the log's end, and only this checkpoint, in a commit, starts the log over: it holds
        // every push while it syncs, so it comes seldom (at 50,000 pages, 200 MB, the writer
        // was seen in that sync a sixth of the time). The log may reach a gigabyte meanwhile.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT)?;
        let conn = Arc::new(Mutex::new(conn));
        checkpoint_beside(path, Arc::downgrade(&conn))?;
        let readers = Readers {
            path: Some(path.to_owned()),
            idle: Mutex::new(Vec::new()),
        };
        Ok(Db {
            backend: Backend::Sqlite(Sqlite {
                conn,
                readers: Arc::new(readers),
                early: None,
                pushes: Arc::default(),
            }),
        })
    }

    /// A database in memory (tests).
    pub fn open_in_memory() -> Result<Db, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        Self::prepare(&mut conn, Migrate::Yes)?;
        let readers = Readers {
            path: None,
            idle: Mutex::new(Vec::new()),
        };
        Ok(Db {
            backend: Backend::Sqlite(Sqlite {
                conn: Arc::new(Mutex::new(conn)),
                readers: Arc::new(readers),
                early: None,
                pushes: Arc::default(),
            }),
        })
    }

    /// Connects to a PostgreSQL database (`postgres://…`) and brings its schema up to date.
    pub fn open_postgres(url: &str) -> Result<Db, StoreError> {
        Ok(Db {
            backend: Backend::Postgres(Arc::new(Pg::open(url, true)?)),
        })
    }

    /// Connects to a PostgreSQL database without migrating it (administration commands).
    pub fn open_postgres_current(url: &str) -> Result<Db, StoreError> {
        Ok(Db {
            backend: Backend::Postgres(Arc::new(Pg::open(url, false)?)),
        })
    }

    /// Statements sent to PostgreSQL so far by this node, each a round trip (`None` on SQLite,
    /// where a statement is a function call).
    pub fn statements_sent(&self) -> Option<u64> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.statements_sent()),
        }
    }

    /// Whether the data is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    fn sqlite(&self) -> Result<&Sqlite, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s),
            Backend::Postgres(_) => Err(StoreError::Backend(
                "this is done by PostgreSQL's own tools on a PostgreSQL database".into(),
            )),
        }
    }

    fn prepare(conn: &mut Connection, migrate: Migrate) -> Result<(), StoreError> {
        match migrate {
            Migrate::Yes => conn.busy_timeout(std::time::Duration::from_secs(10))?,
            // An administration command, perhaps beside a running server.
            Migrate::No => conn.busy_handler(Some(patient))?,
        }
        conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
        // A transaction takes the write lock when it begins, where a busy lock is waited for.
        // A deferred one that has read already is refused at once (SQLITE_BUSY, no waiting)
        // if another connection holds that lock at its first write: a reader checking the
        // log's header after a commit holds it for an instant, and a push failed with
        // "database is locked". It also makes two processes over one file (two nodes, or an
        // administration command beside the server) take turns rather than fail.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        stable_plans(conn)?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        // A database a newer server migrated is refused before anything of it is changed.
        let steps = baylink_sync::schema::steps_to_run(current, MIGRATIONS.len())
            .map_err(|e| StoreError::Backend(format!("{e}: upgrade baylink-server")))?;
        // A new database is created whole; an older one is migrated only when asked.
        if migrate == Migrate::No && current > 0 && !steps.is_empty() {
            return Err(StoreError::Backend(format!(
                "the database is at schema {current} and this baylink-server's is {}: stop the \
                 server, run `baylink-server migrate`, start this version",
                MIGRATIONS.len()
            )));
        }
        log_mode(conn)?;
        // FULL: a commit reaches the disk before the push is answered, so a change a phone was
        // told is accepted (and then drops) survives a power cut; NORMAL would be durable only
        // at the next checkpoint. Its cost is measured in the benchmark (docs/reliability.md).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "cache_size", -65536)?;
        // A migration's temporary tables and the sorts that outgrow the page cache go to files,
        // not to memory (this build's SQLite default): step 11 peaked at 15 GB resident on the
        // full district, cause not established (docs/operations.md).
        conn.pragma_update(None, "temp_store", "FILE")?;
        for i in steps {
            let tx = conn.transaction()?;
            // Read again under the write lock: another process starting at the same moment may
            // have taken this step already.
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now > i as i64 {
                continue;
            }
            tx.execute_batch(MIGRATIONS[i])?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        conn.pragma_update(None, "temp_store", "DEFAULT")?;
        // An administration command reads first: a database that needs nothing here is opened
        // without the write lock, which beside a busy server it waited for, and could time out.
        // (A server starting takes it: it serves once its database is its own.)
        let needed: bool = migrate == Migrate::Yes
            || conn.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM summary WHERE {STALE_SUMMARY})
                     OR (SELECT count(*) FROM meta WHERE key IN ('node', 'seq')) < 2"
                ),
                [],
                |r| r.get(0),
            )?;
        if !needed {
            return Ok(());
        }
        // In one IMMEDIATE transaction, which waits for the write lock: written as autocommit
        // statements after a read, a second process starting at the same moment was refused
        // at once ("database is locked", the snapshot it read being stale by its first write).
        let tx = conn.transaction()?;
        // Summaries of records stored before the summary table existed.
        let stale: Vec<String> = tx
            .prepare(&format!("SELECT entity FROM summary WHERE {STALE_SUMMARY}"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for entity in stale {
            crate::store::summary::refresh_summary(&Conn::Sqlite(&tx), &entity)?;
        }
        let node = uuid::Uuid::new_v4().to_string();
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('node', ?1)",
            [node],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', '0')",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Runs blocking database work on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let sqlite = match &self.backend {
            Backend::Sqlite(s) => s,
            Backend::Postgres(pg) => {
                let pg = pg.clone();
                return tokio::task::spawn_blocking(move || write_pg(&pg, f))
                    .await
                    .map_err(|e| StoreError::Backend(format!("database task: {e}")))?;
            }
        };
        let conn = sqlite.conn.clone();
        let early = sqlite.early.clone();
        tokio::task::spawn_blocking(move || {
            let reserved = early.map(|next| reserve_before_the_lock(&next));
            let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            if reserved.is_none() {
                return f(&Conn::Sqlite(&guard));
            }
            crate::store::values::number_after(reserved);
            let out = f(&Conn::Sqlite(&guard));
            crate::store::values::number_after(None);
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("database task: {e}")))?
    }

    /// Merges a device's push (`store::push`) on the blocking pool. On SQLite it is applied
    /// with the pushes waiting beside it, in one commit (`store::group`); answered once durable.
    pub async fn apply_push(
        &self,
        caller: Caller,
        changes: Vec<Change>,
        max_ahead_ms: u64,
    ) -> Result<Vec<ChangeResult>, StoreError> {
        if self.grouped().is_none() {
            return self
                .call(move |c| push::push(c, &caller, &changes, now_ms(), max_ahead_ms))
                .await;
        }
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.apply_push_blocking(caller, changes, max_ahead_ms))
            .await
            .map_err(|e| StoreError::Backend(format!("database task: {e}")))?
    }

    /// [`Db::apply_push`] on this thread.
    pub fn apply_push_blocking(
        &self,
        caller: Caller,
        changes: Vec<Change>,
        max_ahead_ms: u64,
    ) -> Result<Vec<ChangeResult>, StoreError> {
        match self.grouped() {
            Some(s) => group::push(&s.conn, &s.pushes, caller, changes, max_ahead_ms),
            None => {
                self.call_blocking(|c| push::push(c, &caller, &changes, now_ms(), max_ahead_ms))
            }
        }
    }

    /// Applies `pushes` as one group, as pushes found waiting for the writer together are:
    /// whether they were committed together, and each push's answer. `None` where pushes are
    /// not grouped (PostgreSQL, the deliberately broken backend). For tests of what a push can
    /// do to another of its group: nothing of the push route's checks is made here.
    #[doc(hidden)]
    pub fn apply_together(
        &self,
        pushes: Vec<(Caller, Vec<Change>)>,
        max_ahead_ms: u64,
    ) -> Option<(bool, Vec<group::Answer>)> {
        let s = self.grouped()?;
        Some(group::apply_waiting(&s.conn, pushes, max_ahead_ms))
    }

    /// The SQLite database whose pushes are applied together: not PostgreSQL, whose nodes each
    /// take the writer lock per transaction, nor the deliberately broken backend, which numbers
    /// before the lock push by push.
    fn grouped(&self) -> Option<&Sqlite> {
        match &self.backend {
            Backend::Sqlite(s) if s.early.is_none() => Some(s),
            _ => None,
        }
    }

    /// The SQLite writer and its queue of pushes (tests of `store::group`).
    #[cfg(test)]
    pub(crate) fn group_parts(&self) -> (Arc<Mutex<Connection>>, Arc<group::Queue>) {
        let s = self.grouped().expect("a SQLite database");
        (Arc::clone(&s.conn), Arc::clone(&s.pushes))
    }

    /// Runs reading work on the blocking pool, on a reader connection in one read transaction:
    /// a snapshot of everything committed when it starts, taken without waiting for the writer.
    /// A snapshot holds whole writes only, so the sequence numbers it sees have no gaps.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.read_blocking(f))
            .await
            .map_err(|e| StoreError::Backend(format!("database task: {e}")))?
    }

    /// [`Db::read`] on this thread.
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let sqlite = match &self.backend {
            Backend::Sqlite(s) => s,
            Backend::Postgres(pg) => return read_pg(pg, f),
        };
        let Some(path) = &sqlite.readers.path else {
            return self.call_blocking(|c| f(c));
        };
        let idle = sqlite
            .readers
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
                stable_plans(&conn)?;
                conn
            }
        };
        let result = (|| {
            let tx = conn.unchecked_transaction()?;
            let out = f(&Conn::Sqlite(&tx))?;
            tx.finish()?;
            Ok(out)
        })();
        let mut idle = sqlite
            .readers
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs database work on this thread (command-line tools, seeding, tests).
    pub fn call_blocking<T>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let guard = s.conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&Conn::Sqlite(&guard))
            }
            Backend::Postgres(pg) => write_pg(pg, f),
        }
    }

    /// Runs work on the SQLite writer connection itself, for what only SQLite has (pragmas,
    /// tests that look inside the file).
    pub fn sqlite_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self
            .sqlite()?
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Writes a consistent copy of the database to `path`, readable by its owner only (it holds
    /// the token keys), without holding the writer: `VACUUM INTO` on a connection of its own
    /// reads one snapshot (writes go on beside it, in the log) and writes it compacted. SQLite's
    /// backup API, from another process, starts over at every write it sees and may never
    /// finish on a busy server. The copy is marked a new instance: put back, it is not the
    /// database that went on after the backup, and the pull cursors that one signed do not open
    /// on it.
    pub fn backup(&self, path: &Path) -> Result<(), StoreError> {
        private_files(path)?;
        match &self.sqlite()?.readers.path {
            Some(live) => {
                let conn =
                    Connection::open_with_flags(live, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn.execute("VACUUM INTO ?1", [path.to_string_lossy()])?;
            }
            None => self.sqlite_blocking(|conn| {
                conn.backup(rusqlite::MAIN_DB, path, None)?;
                Ok(())
            })?,
        }
        let copy = Connection::open(path)?;
        copy.execute(
            "INSERT INTO meta (key, value) VALUES ('instance', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [uuid::Uuid::new_v4().to_string()],
        )?;
        Ok(())
    }
}

/// What a database file holds, as `verify` reports it.
#[derive(Clone, Debug)]
pub struct Verified {
    /// Its schema.
    pub schema: i64,
    /// This build's.
    pub known: i64,
    /// Records, accounts, and token keys in use.
    pub records: i64,
    /// Accounts.
    pub accounts: i64,
    /// Token keys not retired.
    pub keys: i64,
    /// The last sequence number issued.
    pub seq: i64,
}

/// Checks a database file (a backup before it is put back): SQLite's integrity check, a schema
/// this build reads, and what it holds. Opened read-only; nothing of it is changed.
pub fn verify(path: &Path) -> Result<Verified, StoreError> {
    if !path.is_file() {
        return Err(StoreError::NotFound(format!(
            "{}: no such file",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let bad = |m: String| StoreError::Invalid(format!("{}: {m}", path.display()));
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| bad(format!("not a database this server reads ({e})")))?;
    if check != "ok" {
        return Err(bad(format!("damaged: {check}")));
    }
    let schema: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if schema > known {
        return Err(bad(format!(
            "schema {schema}, newer than this server's {known}: upgrade baylink-server"
        )));
    }
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    let keys = if schema >= 12 {
        count("SELECT count(*) FROM token_key WHERE retired_ms IS NULL")?
    } else {
        0
    };
    Ok(Verified {
        schema,
        known,
        records: count("SELECT count(*) FROM entity")?,
        accounts: count("SELECT count(*) FROM account")?,
        keys,
        seq: count("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'seq'")?,
    })
}

/// Copies a database file (a backup being put back) through SQLite into `to`, a new file
/// readable by its owner only, synced to the disk before this returns. Read as SQLite reads it,
/// the copy holds what the file's own log beside it holds (commits not yet checkpointed into
/// the file), which a copy of its bytes would leave behind.
pub fn copy_database(from: &Path, to: &Path) -> Result<(), StoreError> {
    private_files(to)?;
    let conn = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
    drop(conn);
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Backend(format!("{}: {e}", to.display())))
}

/// Sequence numbers one write may take in the broken backend.
const EARLY_BLOCK: i64 = 1_000_000;

/// The broken backend's numbering: a block of numbers taken before the writer is, then a
/// moment's wait (as a busy server would make), so writes commit out of their numbers' order.
fn reserve_before_the_lock(next: &AtomicI64) -> i64 {
    let base = next.fetch_add(EARLY_BLOCK, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_micros(
        (base / EARLY_BLOCK % 7) as u64 * 300,
    ));
    base
}

impl Db {
    /// A deliberately broken copy of this backend, for the conformance suite's test of itself:
    /// every write takes its sequence numbers before it takes the writer, as a backend with
    /// several writers would that numbered values outside the commit order. It breaks contract
    /// item 2 (`store::contract`); nothing else may use it.
    #[doc(hidden)]
    pub fn numbering_before_the_lock(&self) -> Result<Db, StoreError> {
        let start = self.call_blocking(crate::store::values::current_seq)?;
        let sqlite = self.sqlite()?;
        Ok(Db {
            backend: Backend::Sqlite(Sqlite {
                early: Some(Arc::new(AtomicI64::new(start + EARLY_BLOCK))),
                ..sqlite.clone()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_a_newer_server_migrated_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        drop(Db::open(&path).unwrap());
        let newer = MIGRATIONS.len() as i64 + 1;
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", newer).unwrap();
        drop(conn);
        let error = Db::open(&path).err().unwrap().to_string();
        assert!(error.contains("newer than this build knows"), "{error}");
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, newer);
    }

    #[test]
    fn the_log_is_copied_back_into_the_database_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        let db = Db::open(&path).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        db.call_blocking(|c| {
            c.execute_batch("CREATE TABLE filler (x TEXT)")?;
            let tx = c.transaction()?;
            for i in 0..20_000 {
                tx.execute("INSERT INTO filler (x) VALUES (?1)", [format!("{i:0>100}")])?;
            }
            tx.commit()?;
            Ok(())
        })
        .unwrap();
        // 2 MB went to the log; the writer does not checkpoint below `WRITER_CHECKPOINT` pages.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < before + 1_000_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(size() > before + 1_000_000, "{before} -> {}", size());
    }

    #[test]
    fn the_log_starts_over_under_a_steady_stream_of_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        let db = Db::open(&path).unwrap();
        db.call_blocking(|c| Ok(c.execute_batch("CREATE TABLE filler (x BLOB)")?))
            .unwrap();
        // 60 MB in small transactions, one after another as pushes come: the checkpointer
        // never sees the log's end without holding the writer.
        for _ in 0..15_000 {
            db.call_blocking(|c| {
                c.execute("INSERT INTO filler (x) VALUES (zeroblob(4000))", ())?;
                Ok(())
            })
            .unwrap();
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let log = std::fs::metadata(dir.path().join("baylink.db-wal"))
            .unwrap()
            .len();
        // Without finishing under the writer it grows to about 190 MB; with it, 35 MB was seen
        // under the full test suite (on a loaded machine copies take longer and are not always
        // finished under the writer).
        assert!(log < 100_000_000, "the log grew to {log} bytes");
    }

    #[test]
    fn two_servers_starting_at_once_on_an_older_database_both_open_it() {
        for _ in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("baylink.db");
            database_of_schema(&path, 10, "");
            let opening: Vec<_> = (0..2)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || Db::open(&path).map(drop))
                })
                .collect();
            for opened in opening {
                opened.join().unwrap().unwrap();
            }
            assert_eq!(schema_of(&path).unwrap().0, Some(MIGRATIONS.len() as i64));
        }
    }

    #[test]
    fn administration_never_migrates_an_older_database_and_creates_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        database_of_schema(&path, 10, "");
        let error = Db::open_current(&path).err().unwrap().to_string();
        assert!(error.contains("baylink-server migrate"), "{error}");
        assert_eq!(
            schema_of(&path).unwrap(),
            (Some(10), MIGRATIONS.len() as i64)
        );
        drop(Db::open(&path).unwrap());
        assert_eq!(schema_of(&path).unwrap().0, Some(MIGRATIONS.len() as i64));
        Db::open_current(&path).unwrap();
        let fresh = dir.path().join("new.db");
        assert_eq!(schema_of(&fresh).unwrap().0, None);
        Db::open_current(&fresh).unwrap();
        assert_eq!(schema_of(&fresh).unwrap().0, Some(MIGRATIONS.len() as i64));
    }

    #[test]
    fn a_write_that_reads_first_waits_for_a_moment_s_other_holder_of_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        let db = Db::open(&path).unwrap();
        db.call_blocking(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .unwrap();
        // Another connection holds the write lock for a moment, as a reader does when it
        // finds the log's header mid-update.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (began, held) = (
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            std::time::Duration::from_millis(300),
        );
        let release = {
            let began = began.clone();
            std::thread::spawn(move || {
                began.wait();
                std::thread::sleep(held);
                other.execute_batch("COMMIT").unwrap();
            })
        };
        began.wait();
        let written = db.call_blocking(|c| {
            let tx = c.transaction()?;
            let n: i64 = tx.query_row("SELECT count(*) FROM t", (), |r| r.get(0))?;
            tx.execute("INSERT INTO t (x) VALUES (?1)", [n])?;
            tx.commit()?;
            Ok(())
        });
        release.join().unwrap();
        written.unwrap();
        let count: i64 = db
            .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM t", (), |r| r.get(0))?))
            .unwrap();
        assert_eq!(count, 1);
    }

    /// A database at `path` of schema `version` (its first steps only), with `rows` written.
    fn database_of_schema(path: &Path, version: usize, rows: &str) {
        let conn = Connection::open(path).unwrap();
        for step in &MIGRATIONS[..version] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {version}; {rows}"))
            .unwrap();
    }

    const P: &str = "00000000-0000-4000-8000-000000000001";
    const H: &str = "00000000-0000-4000-8000-000000000002";
    const R: &str = "00000000-0000-4000-8000-000000000003";
    const N1: &str = "00000000-0000-4000-8000-0000000000a1";
    const N2: &str = "00000000-0000-4000-8000-0000000000a2";
    const VA: &str = "441303006001";
    const VB: &str = "441303006002";

    fn uuid(text: &str) -> uuid::Uuid {
        uuid::Uuid::parse_str(text).unwrap()
    }

    #[test]
    fn a_database_of_schema_5_ends_with_feeds_of_its_current_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        // Schema 5: feed rows name a value, read from `field`; a superseded one stays.
        database_of_schema(
            &path,
            5,
            &format!(
                "INSERT INTO station (code, name) VALUES ('441303006', 'S');
                 INSERT INTO village (code, station, name) VALUES
                     ('{VA}', '441303006', 'A'), ('{VB}', '441303006', 'B');
                 INSERT INTO entity (id, kind, village) VALUES ('{P}', 'person', '{VA}');
                 INSERT INTO scope (entity, village) VALUES ('{P}', '{VA}'), ('{P}', '{VB}');
                 INSERT INTO field (entity, field, value, hlc, node, seq) VALUES
                     ('{P}', 'name', '\"王五\"', 7, '{N1}', 3), ('{P}', 'village', '\"{VA}\"', 5, '{N1}', 2);
                 INSERT INTO feed (village, seq, entity, kind, field) VALUES
                     ('{VA}', 1, '{P}', 'person', 'name'),
                     ('{VA}', 2, '{P}', 'person', 'village'),
                     ('{VA}', 3, '{P}', 'person', 'name'),
                     ('{VB}', 2, '{P}', 'person', 'village'),
                     ('{VB}', 3, '{P}', 'person', 'name');"
            ),
        );
        let db = Db::open(&path).unwrap();
        let held = db.read_blocking(crate::store::snapshot::read).unwrap();
        let entry = crate::store::snapshot::FeedEntry {
            seq: 3,
            entity: uuid(P),
        };
        assert_eq!(held.feeds[VA], std::slice::from_ref(&entry));
        assert_eq!(held.feeds[VB], [entry]);
        let name = &held.values[&(uuid(P), "name".to_owned())];
        assert_eq!(
            (name.value.as_str(), name.seq, name.stamp.hlc.as_u64()),
            (Some("王五"), 3, 7)
        );
        assert_eq!(held.values[&(uuid(P), "village".to_owned())].seq, 2);
    }

    #[test]
    fn a_database_of_schema_10_gets_records_links_and_actions_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        // Field rows of a person (two nodes, two actions), a house with an address code and a
        // residence naming both; the history as one row per field.
        database_of_schema(
            &path,
            10,
            &format!(
                "INSERT INTO station (code, name) VALUES ('441303006', 'S');
                 INSERT INTO village (code, station, name) VALUES ('{VA}', '441303006', 'A');
                 INSERT INTO entity (id, kind, village) VALUES
                     ('{P}', 'person', '{VA}'), ('{H}', 'house', '{VA}'), ('{R}', 'residence', '{VA}');
                 INSERT INTO scope (entity, village) VALUES ('{P}', '{VA}'), ('{H}', '{VA}'), ('{R}', '{VA}');
                 INSERT INTO summary (entity, kind, village, label, deleted, updated_seq)
                     SELECT id, kind, village, '', 0, 0 FROM entity;
                 INSERT INTO field (entity, field, value, hlc, node, seq) VALUES
                     ('{P}', 'name', '\"王五\"', 9, '{N2}', 6),
                     ('{P}', 'village', '\"{VA}\"', 5, '{N1}', 1),
                     ('{H}', 'address_code', '\"4413030060010001\"', 5, '{N1}', 2),
                     ('{H}', 'village', '\"{VA}\"', 5, '{N1}', 3),
                     ('{R}', 'person', '\"{P}\"', 5, '{N1}', 4),
                     ('{R}', 'house', '\"{H}\"', 5, '{N1}', 5);
                 INSERT INTO feed (village, seq, entity, kind, field, value, hlc, node)
                     SELECT '{VA}', seq, entity, 'x', field, value, hlc, node FROM field;
                 INSERT INTO history (entity, kind, field, old_value, old_stamp, value, stamp, won, device, account, at_ms) VALUES
                     ('{P}', 'person', 'village', NULL, NULL, '\"{VA}\"', '5-{N1}', 1, '{N1}', 1, 100),
                     ('{P}', 'person', 'name', NULL, NULL, '\"王\"', '5-{N1}', 1, '{N1}', 1, 100),
                     ('{P}', 'person', 'name', '\"王\"', '5-{N1}', '\"王五\"', '9-{N2}', 1, '{N2}', 2, 200),
                     ('{P}', 'person', 'phone', NULL, NULL, '\"13800138000\"', '5-{N1}', 0, '{N1}', 1, 300);"
            ),
        );
        let db = Db::open(&path).unwrap();
        let held = db.read_blocking(crate::store::snapshot::read).unwrap();
        let value = |id: &str, field: &str| {
            let stored = &held.values[&(uuid(id), field.to_owned())];
            (
                stored.value.clone(),
                stored.stamp.hlc.as_u64(),
                stored.stamp.node.to_string(),
                stored.seq,
            )
        };
        assert_eq!(
            value(P, "name"),
            (serde_json::json!("王五"), 9, N2.to_owned(), 6)
        );
        assert_eq!(
            value(P, "village"),
            (serde_json::json!(VA), 5, N1.to_owned(), 1)
        );
        assert_eq!(value(R, "house").3, 5);
        assert_eq!(held.values.len(), 6);
        // Each record once in its village's feed, at its newest number.
        let fed: Vec<(i64, uuid::Uuid)> =
            held.feeds[VA].iter().map(|e| (e.seq, e.entity)).collect();
        assert_eq!(fed, [(3, uuid(H)), (5, uuid(R)), (6, uuid(P))]);
        assert_eq!(held.entities[&uuid(P)].seq, 6);
        // Four field changes in three actions, read back one per field: the last one shares the
        // first action's stamp and device, but another write came between them.
        let history: Vec<(String, serde_json::Value, Option<String>)> = held
            .history
            .iter()
            .map(|w| (w.field.clone(), w.value.clone(), w.device.clone()))
            .collect();
        assert_eq!(history.len(), 4);
        assert_eq!(held.history[0].seq, held.history[1].seq, "one action");
        assert!(held.history[2].seq > held.history[1].seq);
        assert!(
            held.history[3].seq > held.history[2].seq,
            "a run interrupted stays two"
        );
        assert!(!held.history[3].won);
        assert_eq!(
            history[2],
            (
                "name".to_owned(),
                serde_json::json!("王五"),
                Some(N2.to_owned())
            )
        );
        // Who lives where, and which house holds the code, are found through the links.
        let (living, coded) = db
            .read_blocking(|c| {
                let living = crate::store::scope::residences_naming(c, "house", H)?;
                let coded =
                    crate::store::holders::holders(c, "house", "address_code", "4413030060010001")?;
                Ok((living, coded))
            })
            .unwrap();
        assert_eq!(living, [R.to_owned()]);
        assert_eq!(coded, [H.to_owned()]);
        let tables: i64 = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'field'",
                    (),
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(tables, 0, "the field rows are gone");
        // Summaries are computed from the records' states.
        assert_eq!(held.summaries[&uuid(P)].label, "王五");
    }

    #[test]
    fn a_database_of_schema_6_loses_the_residence_links_and_appends_to_its_summary_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        database_of_schema(
            &path,
            6,
            "INSERT INTO residence_link (residence, person, house, open) VALUES ('r', 'p', 'h', 1);",
        );
        let db = Db::open(&path).unwrap();
        let (links, officer, created): (i64, String, String) = db
            .read_blocking(|c| {
                let sql = |name: &str| -> Result<String, crate::store::conn::SqlError> {
                    c.query_row(
                        "SELECT sql FROM sqlite_schema WHERE name = ?1",
                        [name],
                        |r| r.get(0),
                    )
                };
                Ok((
                    c.query_row(
                        "SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'residence_link'",
                        (),
                        |r| r.get(0),
                    )?,
                    sql("summary_officer")?,
                    sql("summary_created")?,
                ))
            })
            .unwrap();
        assert_eq!(links, 0, "the table and its indexes are gone");
        assert!(
            officer.ends_with("(village, created_by, review_status, deleted, updated_seq)"),
            "{officer}"
        );
        assert!(
            created.ends_with("(village, created_at, deleted, updated_seq)"),
            "{created}"
        );
    }

    #[test]
    fn a_database_of_schema_16_reads_a_devices_own_actions_through_an_index_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        database_of_schema(
            &path,
            16,
            "INSERT INTO history (seq, entity, kind, stamp, device, account, at_ms, changes)
                 VALUES (7, 'e1', 'person', 's', 'd1', 1, 0, '{}'),
                        (8, 'e2', 'person', 's', 'd2', 1, 0, '{}');",
        );
        let db = Db::open(&path).unwrap();
        let (kept, plan) = db
            .read_blocking(|c| {
                let kept: Vec<i64> = c
                    .prepare("SELECT seq FROM history WHERE device = 'd2'")?
                    .query_map((), |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let plan: Vec<String> = c
                    .prepare("EXPLAIN QUERY PLAN SELECT seq FROM history WHERE device = 'd2'")?
                    .query_map((), |r| r.get(3))?
                    .collect::<Result<_, _>>()?;
                Ok((kept, plan.join("; ")))
            })
            .unwrap();
        assert_eq!(kept, [8]);
        assert!(plan.contains("history_device"), "{plan}");
    }

    #[test]
    fn a_database_of_schema_17_files_scopes_summaries_and_history_under_record_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        // P (at 5) and H (at 2) are stored; R was compacted away, its history kept; a scope row
        // names a record with no row.
        database_of_schema(
            &path,
            17,
            &format!(
                "INSERT INTO entity (pos, id, kind, village, seq) VALUES
                     (5, '{P}', 'person', '{VA}', 9), (2, '{H}', 'house', '{VB}', 4);
                 INSERT INTO scope (entity, village) VALUES
                     ('{P}', '{VA}'), ('{P}', '{VB}'), ('{H}', '{VB}'), ('{R}', '{VA}');
                 INSERT INTO summary (entity, kind, village, label, id_number, deleted, updated_seq)
                     VALUES ('{H}', 'house', '{VB}', '1号', NULL, 0, 4),
                            ('{P}', 'person', '{VA}', '王五', '110101199003070017', 0, 9);
                 INSERT INTO history (seq, entity, kind, stamp, device, account, at_ms, changes)
                     VALUES (1, '{R}', 'residence', 's1', 'd1', 1, 0, '{{}}'),
                            (2, '{H}', 'house', 's2', 'd1', 1, 0, '{{}}'),
                            (3, '{P}', 'person', 's3', 'd2', 1, 0,
                             '{{\"name\": [null, null, \"王五\", true]}}'),
                            (4, '{R}', 'residence', 's4', 'd1', 1, 0, '{{}}');"
            ),
        );
        let db = Db::open(&path).unwrap();
        type Filed = (
            Vec<(i64, String)>,
            Vec<(i64, String)>,
            Vec<(i64, i64, String)>,
        );
        let (scopes, summaries, history): Filed = db
            .read_blocking(|c| {
                let scopes = c
                    .prepare("SELECT pos, village FROM scope ORDER BY pos, village")?
                    .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let summaries = c
                    .prepare("SELECT pos, entity FROM summary ORDER BY pos")?
                    .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let history = c
                    .prepare("SELECT seq, pos, entity FROM history ORDER BY seq")?
                    .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                Ok((scopes, summaries, history))
            })
            .unwrap();
        assert_eq!(
            scopes,
            [(2, VB.to_owned()), (5, VA.to_owned()), (5, VB.to_owned())],
            "a scope row of no record goes"
        );
        assert_eq!(summaries, [(2, H.to_owned()), (5, P.to_owned())]);
        assert_eq!(
            history,
            [
                (1, -1, R.to_owned()),
                (2, 2, H.to_owned()),
                (3, 5, P.to_owned()),
                (4, -1, R.to_owned())
            ]
        );
        let (compacted, plan): (Vec<(i64, String)>, String) = db
            .read_blocking(|c| {
                let compacted = c
                    .prepare("SELECT pos, id FROM compacted")?
                    .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let plan: Vec<String> = c
                    .prepare("EXPLAIN QUERY PLAN SELECT seq FROM history WHERE pos = 5")?
                    .query_map((), |r| r.get(3))?
                    .collect::<Result<_, _>>()?;
                Ok((compacted, plan.join("; ")))
            })
            .unwrap();
        assert_eq!(compacted, [(-1, R.to_owned())]);
        assert!(plan.contains("history_pos"), "{plan}");
        // The console still reads the records' histories and scopes.
        let view = db
            .read_blocking(|c| crate::store::records::record(c, P))
            .unwrap()
            .unwrap();
        let fields: Vec<(&str, &str)> = view
            .history
            .iter()
            .map(|h| (h.field.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(fields, [("name", "\"王五\"")]);
        let indexes: Vec<String> = db
            .read_blocking(|c| {
                Ok(c.prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'index'
                     AND tbl_name IN ('scope', 'summary', 'history') ORDER BY name",
                )?
                .query_map((), |r| r.get(0))?
                .collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            !indexes
                .iter()
                .any(|i| i.starts_with("sqlite_autoindex") || i == "history_entity"),
            "no index keyed by a record id is left: {indexes:?}"
        );
        assert_eq!(indexes.len(), 14, "{indexes:?}");
    }

    #[test]
    fn a_database_of_schema_15_takes_the_devices_that_wrote_to_have_written_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        // d1 wrote in a village, d3 had changes processed (written elsewhere only), d2 only
        // signed in.
        database_of_schema(
            &path,
            15,
            &format!(
                "INSERT INTO account (id, username, display_name, role, password_hash, created_ms)
                     VALUES (1, 'o1', 'o1', 'officer', 'x', 0);
                 INSERT INTO device (id, account, name, registered_ms, last_counter) VALUES
                     ('d1', 1, 'phone 1', 0, 0), ('d2', 1, 'phone 2', 0, 0),
                     ('d3', 1, 'phone 3', 0, 12);
                 INSERT INTO device_village (device, village, purged_seq) VALUES ('d1', '{VA}', NULL);"
            ),
        );
        let db = Db::open(&path).unwrap();
        let first: Vec<(String, Option<i64>)> = db
            .read_blocking(|c| {
                Ok(
                    c.prepare("SELECT id, first_write_seq FROM device ORDER BY id")?
                        .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?,
                )
            })
            .unwrap();
        assert_eq!(
            first,
            [
                ("d1".to_owned(), Some(0)),
                ("d2".to_owned(), None),
                ("d3".to_owned(), Some(0))
            ]
        );
    }

    #[test]
    fn a_database_of_schema_14_keeps_every_summary_in_a_table_ordered_by_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baylink.db");
        // Two summaries, the newer written first in record-id order.
        database_of_schema(
            &path,
            14,
            &format!(
                "INSERT INTO entity (pos, id, kind) VALUES (1, '{H}', 'house'), (2, '{P}', 'person');
                 INSERT INTO summary (entity, kind, village, label, id_number, name, phone, review_status,
                                      deleted, created_by, created_at, updated_seq) VALUES
                     ('{P}', 'person', '{VA}', '王五', '110101199003070017', '王五', '13600000000',
                      'approved', 0, 'officer1', '2026-12-01 08:00:00', 9),
                     ('{H}', 'house', '{VB}', '1号', NULL, NULL, NULL, 'pending', 1, 'officer2',
                      '2026-12-02 09:00:00', 4);"
            ),
        );
        let db = Db::open(&path).unwrap();
        let (table, rows, plan) = db
            .read_blocking(|c| {
                let table: String = c.query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = 'summary'",
                    (),
                    |r| r.get(0),
                )?;
                let rows: Vec<(i64, String, String, Option<String>, i64, i64)> = c
                    .prepare(
                        "SELECT pos, entity, label, id_number, deleted, updated_seq
                         FROM summary ORDER BY pos",
                    )?
                    .query_map((), |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                let plan: Vec<String> = c
                    .prepare("EXPLAIN QUERY PLAN SELECT label FROM summary WHERE pos = ?1")?
                    .query_map([1], |r| r.get(3))?
                    .collect::<Result<_, _>>()?;
                Ok((table, rows, plan.join("; ")))
            })
            .unwrap();
        assert!(!table.contains("WITHOUT ROWID"), "{table}");
        assert_eq!(
            rows,
            vec![
                (1, H.to_owned(), "1号".to_owned(), None, 1, 4),
                (
                    2,
                    P.to_owned(),
                    "王五".to_owned(),
                    Some("110101199003070017".to_owned()),
                    0,
                    9
                ),
            ],
            "every row kept, oldest write first"
        );
        // Since step 18, a summary stands at its record's position.
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
        // Every index of the console's lists and searches is there again.
        let indexes: i64 = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'summary'
                     AND name LIKE 'summary_%'",
                    (),
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(indexes, 11);
    }

    #[test]
    fn a_read_runs_beside_a_write_in_progress_and_sees_committed_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("baylink.db")).unwrap();
        db.call_blocking(|c| {
            c.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")?;
            Ok(())
        })
        .unwrap();
        let (started, finish) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                db.call_blocking(|c| {
                    let tx = c.transaction()?;
                    tx.execute("INSERT INTO t VALUES (2)", ())?;
                    started.wait();
                    // Held until the read below has finished: it must not wait for this.
                    finish.wait();
                    tx.commit()?;
                    Ok(())
                })
                .unwrap();
            });
            started.wait();
            let seen: i64 = db
                .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM t", (), |r| r.get(0))?))
                .unwrap();
            finish.wait();
            assert_eq!(seen, 1, "the uncommitted row is not seen");
        });
        let seen: i64 = db
            .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM t", (), |r| r.get(0))?))
            .unwrap();
        assert_eq!(seen, 2);
    }
}
