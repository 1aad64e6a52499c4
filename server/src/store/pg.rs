//! The PostgreSQL backend's connections: a pool on a runtime of its own, statements translated
//! from the SQL the use cases write, values bound and read by the column's type, numbered
//! migrations, and the writer lock every node takes.
//!
//! Every transaction that writes holds one advisory lock from its start to its end (contract
//! item 2): writes from all nodes take turns, as SQLite's transactions take its write lock, so
//! sequence numbers become visible in commit order and a transaction reads what it writes over
//! without interference. Readers run beside them in `REPEATABLE READ` snapshots. What this costs
//! and why is in docs/protocol.md.

use std::error::Error;
use std::future::Future;

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::store::conn::{SqlError, ValueRef};
use crate::store::error::StoreError;

/// The advisory lock every writing transaction holds to its end (the bytes of "BAYL").
pub(crate) const WRITER_LOCK: i64 = 0x4241_594C;
/// How long a transaction waits for it before giving up (the request answers 503).
const LOCK_WAIT: &str = "20s";
/// Session settings of every connection: a session left idle inside a transaction (its node
/// frozen) is ended after a minute, which frees the lock it held, and a client whose host
/// vanished is noticed within about 25 seconds rather than the operating system's two hours.
const SESSION_OPTIONS: &str = "-c idle_in_transaction_session_timeout=60000 \
     -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3";
/// The advisory lock a node holds while it reads and brings up the schema ("BAYM").
const MIGRATION_LOCK: i64 = 0x4241_594D;

/// The schema version of a database: 0 before Baylink's first migration.
async fn version_of(client: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    let exists = "SELECT to_regclass('schema_version') IS NOT NULL";
    if !client.query_one(exists, &[]).await?.get::<_, bool>(0) {
        return Ok(0);
    }
    let newest = "SELECT COALESCE(max(version), 0) FROM schema_version";
    Ok(client.query_one(newest, &[]).await?.get(0))
}

/// Migration steps of the PostgreSQL schema; step `i` brings it to version `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    include_str!("pg/001_init.sql"),
    include_str!("pg/002_alert_raised.sql"),
    include_str!("pg/003_retention.sql"),
    include_str!("pg/004_first_write.sql"),
    include_str!("pg/005_history_device.sql"),
    include_str!("pg/006_by_position.sql"),
];

/// Connections to one PostgreSQL database, and the runtime their I/O runs on.
pub struct Pg {
    /// Connections for reading.
    pool: deadpool_postgres::Pool,
    /// Connections for writing, apart: writers waiting for the lock never hold the
    /// connections readers need, and wait for one at most a while.
    writers: deadpool_postgres::Pool,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// Statements sent (each a round trip), for tests and the figures.
    sent: std::sync::atomic::AtomicU64,
}

impl Drop for Pg {
    fn drop(&mut self) {
        // The last handle may go on an async worker, where a runtime may not block to stop.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pg")
    }
}

fn backend(e: impl std::fmt::Display) -> SqlError {
    SqlError::Backend(format!("postgres: {e}"))
}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> SqlError {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
                return SqlError::Unstorable(
                    "text holds a character that cannot be stored (NUL)".into(),
                );
            }
            Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => {
                return SqlError::Busy(format!(
                    "the database's writer lock was not free within {LOCK_WAIT}: try again"
                ));
            }
            _ => {}
        }
        // The server's own message (with its detail) says more than the client's summary, and
        // a connection's failure says why in its source.
        match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => backend(format!(
                "{}{}",
                db.message(),
                db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            )),
            (None, Some(why)) => backend(format!("{e}: {why}")),
            (None, None) => backend(e),
        }
    }
}

/// The schema of the database at `url` and this build's: read without changing anything
/// (`None` when it holds no Baylink schema yet).
pub fn schema_of(url: &str) -> Result<(Option<i64>, i64), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found = one_off(url, |client| async move { version_of(&client).await })?;
    Ok(((found > 0).then_some(found), known))
}

impl Pg {
    /// Connects to the database at `url` (`postgres://…` or `host=… dbname=…`) and brings its
    /// schema up to date when `migrate`; refuses a schema newer than this build's.
    pub fn open(url: &str, migrate: bool) -> Result<Pg, StoreError> {
        let mut config = crate::config::parse_database(url)
            .map_err(|e| StoreError::Invalid(format!("database: {e}")))?;
        let options = match config.get_options() {
            Some(given) => format!("{given} {SESSION_OPTIONS}"),
            None => SESSION_OPTIONS.to_owned(),
        };
        config.options(&options);
        let manager = |config: tokio_postgres::Config| {
            deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres::NoTls,
                deadpool_postgres::ManagerConfig {
                    recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                },
            )
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("baylink-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres runtime: {e}")))?;
        let (pool, writers) = {
            let _entered = runtime.enter();
            let build = |size: usize, wait: Option<std::time::Duration>| {
                deadpool_postgres::Pool::builder(manager(config.clone()))
                    .max_size(size)
                    .wait_timeout(wait)
                    .runtime(deadpool_postgres::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))
            };
            (
                build(READERS, None)?,
                build(WRITERS, Some(std::time::Duration::from_secs(30)))?,
            )
        };
        let pg = Pg {
            pool,
            writers,
            runtime: Some(runtime),
            sent: std::sync::atomic::AtomicU64::new(0),
        };
        pg.session()?.migrate(migrate)?;
        Ok(pg)
    }

    /// A session for reading on a pooled connection, for this thread (not an async worker's).
    pub fn session(&self) -> Result<Session<'_>, StoreError> {
        self.session_of(&self.pool)
    }

    /// A session for writing.
    pub(crate) fn writer_session(&self) -> Result<Session<'_>, StoreError> {
        self.session_of(&self.writers)
    }

    fn session_of(&self, pool: &deadpool_postgres::Pool) -> Result<Session<'_>, StoreError> {
        let client = self.wait(pool.get()).map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::from(SqlError::from(e)),
            deadpool_postgres::PoolError::Timeout(_) => {
                StoreError::Busy("every connection for writing is waiting: try again".into())
            }
            other => StoreError::Backend(format!("postgres: {other}")),
        })?;
        Ok(Session {
            pg: self,
            client: Some(client),
        })
    }

    /// Statements this node has sent to the database so far: each is a round trip.
    pub fn statements_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for `work` on this backend's runtime, from a thread that is not an async worker's
    /// (a blocking task's, or a command's own).
    pub(crate) fn wait<F: Future>(&self, work: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.handle().block_on(work),
            None => unreachable!("the runtime goes only with the backend"),
        }
    }
}

/// Connections for reading per node.
const READERS: usize = 16;
/// Connections for writing per node (writes take turns across all nodes anyway).
const WRITERS: usize = 4;

/// One pooled connection, used from one thread.
pub struct Session<'p> {
    pg: &'p Pg,
    /// `Some` until the session ends.
    client: Option<deadpool_postgres::Object>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A unit of work that panicked may have left a transaction open: the connection is
        // closed rather than handed to the next one.
        if std::thread::panicking()
            && let Some(client) = self.client.take()
        {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Session<'_> {
    fn object(&self) -> &deadpool_postgres::Object {
        match &self.client {
            Some(client) => client,
            None => unreachable!("a session has its connection until it ends"),
        }
    }

    fn client(&self) -> &tokio_postgres::Client {
        self.object()
    }

    /// Begins a writing transaction: it waits (at most [`LOCK_WAIT`]) for the writer lock,
    /// which it holds to its commit or rollback (contract item 2).
    pub(crate) fn begin_writing(&self) -> Result<(), SqlError> {
        self.batch(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{LOCK_WAIT}'; \
             SELECT pg_advisory_xact_lock({WRITER_LOCK}); SET LOCAL lock_timeout = 0"
        ))
        .inspect_err(|_| {
            // Not left open for the connection's next use (its next BEGIN would fail).
            let _ = self.batch("ROLLBACK");
        })
    }

    fn migrate(&self, migrate: bool) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        // Under a lock, so that nodes starting together take each step once.
        self.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
        let result = (|| {
            let current = self
                .pg
                .wait(version_of(self.client()))
                .map_err(SqlError::from)?;
            let steps = baylink_sync::schema::steps_to_run(current, MIGRATIONS.len())
                .map_err(|e| StoreError::Backend(format!("{e}: upgrade baylink-server")))?;
            if !migrate && current > 0 && !steps.is_empty() {
                return Err(StoreError::Backend(format!(
                    "the database is at schema {current} and this baylink-server's is {known}: \
                     stop the server, run `baylink-server migrate`, start this version"
                )));
            }
            for i in steps {
                self.batch(&format!(
                    "BEGIN; {} INSERT INTO schema_version (version) VALUES ({}); COMMIT;",
                    MIGRATIONS[i],
                    i + 1
                ))
                .inspect_err(|_| {
                    let _ = self.batch("ROLLBACK");
                })?;
            }
            self.batch(&format!(
                "INSERT INTO meta (key, value) VALUES ('node', '{}') ON CONFLICT DO NOTHING;
                 INSERT INTO meta (key, value) VALUES ('seq', '0') ON CONFLICT DO NOTHING;",
                uuid::Uuid::new_v4()
            ))?;
            Ok(())
        })();
        self.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
        result
    }

    /// Closes the connection rather than giving it back to the pool (its state is unknown).
    pub(crate) fn discard(mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    /// Runs statements with no parameters.
    pub(crate) fn batch(&self, sql: &str) -> Result<(), SqlError> {
        self.pg.count();
        Ok(self.pg.wait(self.client().batch_execute(sql))?)
    }

    /// A statement prepared once per connection, from the text the use cases write.
    pub(crate) fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, SqlError> {
        let text = translate(sql);
        // A statement new to this connection is a round trip of its own.
        let known = self.object().statement_cache.size();
        let prepared = self.pg.wait(self.object().prepare_cached(&text))?;
        if self.object().statement_cache.size() > known {
            self.pg.count();
        }
        Ok(prepared)
    }

    /// Runs a prepared statement; the rows it changed.
    pub(crate) fn execute(
        &self,
        stmt: &tokio_postgres::Statement,
        params: &[ValueRef<'_>],
    ) -> Result<usize, SqlError> {
        let binds: Vec<Bind<'_>> = params.iter().copied().map(Bind).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as _).collect();
        self.pg.count();
        Ok(self.pg.wait(self.client().execute(stmt, &refs))? as usize)
    }

    /// A prepared statement's rows.
    pub(crate) fn query(
        &self,
        stmt: &tokio_postgres::Statement,
        params: &[ValueRef<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, SqlError> {
        let binds: Vec<Bind<'_>> = params.iter().copied().map(Bind).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as _).collect();
        self.pg.count();
        Ok(self.pg.wait(self.client().query(stmt, &refs))?)
    }
}

/// The PostgreSQL cluster the tests of the PostgreSQL backend use (`BAYLINK_TEST_POSTGRES`), or
/// `None` with a notice, outside CI, when none is named: `./scripts/test` always names one (it
/// starts a throwaway cluster), and in CI a missing one fails the test.
#[doc(hidden)]
pub fn test_postgres() -> Option<String> {
    match std::env::var("BAYLINK_TEST_POSTGRES") {
        Ok(cluster) if !cluster.trim().is_empty() => Some(cluster),
        _ if std::env::var_os("CI").is_some() => {
            panic!("BAYLINK_TEST_POSTGRES names no PostgreSQL cluster (./scripts/test starts one)")
        }
        _ => {
            eprintln!(
                "skipped: no PostgreSQL cluster named (BAYLINK_TEST_POSTGRES); ./scripts/test \
                 starts one"
            );
            None
        }
    }
}

/// A new, empty database beside the one a cluster's connection string names (tests and the
/// benchmark: one per scenario), dropped with this, whoever is still connected to it.
#[doc(hidden)]
pub struct FreshDatabase {
    cluster: String,
    name: String,
    /// Its connection string.
    pub url: String,
}

impl FreshDatabase {
    /// Creates it.
    pub fn new(cluster: &str) -> Result<FreshDatabase, StoreError> {
        let name = format!("baylink_test_{}", uuid::Uuid::new_v4().simple());
        admin(cluster, &format!("CREATE DATABASE {name}"))?;
        Ok(FreshDatabase {
            cluster: cluster.to_owned(),
            url: with_dbname(cluster, &name),
            name,
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // A database left behind is in a throwaway cluster, or named for what made it.
        let _ = admin(&self.cluster, &drop);
    }
}

fn admin(url: &str, sql: &str) -> Result<(), StoreError> {
    let sql = sql.to_owned();
    one_off(
        url,
        |client| async move { client.batch_execute(&sql).await },
    )
}

/// `work` on a connection of its own to `url`, on a runtime of its own (commands, tests).
fn one_off<T, F, W>(url: &str, work: W) -> Result<T, StoreError>
where
    W: FnOnce(std::sync::Arc<tokio_postgres::Client>) -> F,
    F: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend(format!("runtime: {e}")))?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(SqlError::from)?;
        let driver = tokio::spawn(connection);
        let client = std::sync::Arc::new(client);
        let out = work(client.clone()).await.map_err(SqlError::from)?;
        drop(client);
        let _ = driver.await;
        Ok(out)
    })
}

/// `url` naming the database `name` instead.
fn with_dbname(url: &str, name: &str) -> String {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"));
    match rest {
        Some(rest) => {
            let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
            let authority = main.split('/').next().unwrap_or_default();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            format!("postgresql://{authority}/{name}{query}")
        }
        None => format!("{url} dbname={name}"),
    }
}

/// The use cases' SQL as PostgreSQL reads it: `?N` parameters numbered `$N`, a JSON list
/// parameter's elements (`json_each(?N)`), a statement that begins `INSERT OR IGNORE`, and
/// SQLite's index hints (`+column` after a keyword, a bracket, a comma or a comparison) dropped.
/// String literals, quoted names and `--` comments are copied as they are.
pub(crate) fn translate(sql: &str) -> String {
    let (mut rest, ignore) = match sql.trim_start().strip_prefix("INSERT OR IGNORE INTO") {
        Some(after) if !sql.contains("ON CONFLICT") => (after, true),
        _ => (sql, false),
    };
    let mut out = String::with_capacity(sql.len() + 32);
    if ignore {
        out.push_str("INSERT INTO");
    }
    while let Some(c) = rest.chars().next() {
        let len = c.len_utf8();
        match c {
            '\'' | '"' => {
                // A literal or a quoted name, to its closing quote (a doubled one stays inside).
                let end = rest[1..].find(c).map_or(rest.len(), |at| at + 2);
                out.push_str(&rest[..end]);
                rest = &rest[end..];
                continue;
            }
            '-' if rest.starts_with("--") => {
                let end = rest.find('\n').unwrap_or(rest.len());
                out.push_str(&rest[..end]);
                rest = &rest[end..];
                continue;
            }
            '?' => {
                out.push('$');
            }
            '+' if is_hint(&out, &rest[1..]) => {}
            // `x IN (SELECT value FROM json_each(?N))` as a comparison with an array: the index
            // of `x` is then probed once per element, where the subquery was planned as a
            // join over the whole index (5 ms against 0.1 ms for a few keys among thousands).
            'I' if rest.starts_with(LIST_IN) && out.ends_with(char::is_whitespace) => {
                let inner = &rest[LIST_IN.len()..];
                let digits: String = inner.chars().take_while(char::is_ascii_digit).collect();
                match inner[digits.len()..].strip_prefix("))") {
                    Some(tail) if !digits.is_empty() => {
                        let negated =
                            out.trim_end().ends_with(" NOT") || out.trim_end().ends_with("\nNOT");
                        if negated {
                            out.truncate(out.trim_end().len() - "NOT".len());
                        }
                        let compare = if negated { "<> ALL" } else { "= ANY" };
                        out.push_str(&format!(
                            "{compare} (ARRAY(SELECT json_array_elements_text(CAST(${digits} AS json))))"
                        ));
                        rest = tail;
                        continue;
                    }
                    _ => out.push(c),
                }
            }
            'j' if rest.starts_with("json_each(") => {
                let inner = rest["json_each(".len()..].trim_start();
                let digits: String = inner
                    .strip_prefix('?')
                    .unwrap_or_default()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let after = inner
                    .get(1 + digits.len()..)
                    .unwrap_or_default()
                    .trim_start();
                match after.strip_prefix(')') {
                    Some(tail) if !digits.is_empty() => {
                        out.push_str(&format!(
                            "json_array_elements_text(CAST(${digits} AS json))"
                        ));
                        rest = tail;
                        continue;
                    }
                    _ => out.push(c),
                }
            }
            c => out.push(c),
        }
        rest = &rest[len..];
    }
    if ignore {
        let trimmed = out.trim_end().trim_end_matches(';').to_owned();
        out = match trimmed.find(" RETURNING ") {
            Some(at) => format!(
                "{} ON CONFLICT DO NOTHING{}",
                &trimmed[..at],
                &trimmed[at..]
            ),
            None => format!("{trimmed} ON CONFLICT DO NOTHING"),
        };
    }
    out
}

/// A SQLite membership test in a JSON list parameter, up to the parameter's number.
const LIST_IN: &str = "IN (SELECT value FROM json_each(?";

/// Whether a `+` with `before` it and `after` it is SQLite's index hint (`+column` where an
/// operand begins), not an addition.
fn is_hint(before: &str, after: &str) -> bool {
    if !after.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return false;
    }
    let before = before.trim_end();
    if before.ends_with(['(', ',', '=', '<', '>']) {
        return true;
    }
    let word: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    [
        "AND", "OR", "NOT", "WHERE", "ON", "BY", "SELECT", "WHEN", "THEN", "ELSE",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

/// A parameter's value, written as the type PostgreSQL gave the parameter.
struct Bind<'a>(ValueRef<'a>);

impl std::fmt::Debug for Bind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Bind<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("an integer given for a parameter of type {ty}").into()),
            },
            ValueRef::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ => Err(format!("a real given for a parameter of type {ty}").into()),
            },
            ValueRef::Text(t) => match *ty {
                Type::JSON => {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                _ => t.to_sql(ty, out),
            },
            ValueRef::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's value, read whatever its type.
pub(crate) struct Any<'a>(pub(crate) ValueRef<'a>);

impl<'a> FromSql<'a> for Any<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Any(match *ty {
            Type::INT8 => ValueRef::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => ValueRef::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => ValueRef::Integer(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => ValueRef::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => ValueRef::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => ValueRef::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => ValueRef::Blob(raw),
            Type::JSON => ValueRef::Text(std::str::from_utf8(raw)?),
            Type::JSONB => ValueRef::Text(std::str::from_utf8(raw.get(1..).unwrap_or(&[]))?),
            Type::NUMERIC => ValueRef::Integer(numeric_integer(raw)?),
            _ => ValueRef::Text(<&str>::from_sql(ty, raw)?),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Any(ValueRef::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A whole NUMERIC (what `sum` of integers answers) as an integer.
fn numeric_integer(raw: &[u8]) -> Result<i64, BoxError> {
    let word = |i: usize| -> Result<i64, BoxError> {
        let b = raw.get(i..i + 2).ok_or("numeric too short")?;
        Ok(i64::from(i16::from_be_bytes([b[0], b[1]])))
    };
    let (digits, weight, sign) = (word(0)?, word(2)?, word(4)?);
    let mut value: i64 = 0;
    for k in 0..=weight.max(-1) {
        let digit = if k < digits {
            word(8 + 2 * k as usize)?
        } else {
            0
        };
        value = value
            .checked_mul(10_000)
            .and_then(|v| v.checked_add(digit))
            .ok_or("numeric out of range")?;
    }
    if digits > weight + 1 && (weight + 1..digits).any(|k| word(8 + 2 * k as usize).ok() != Some(0))
    {
        return Err("numeric not whole".into());
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn statements_are_translated_to_postgres_parameters_lists_and_upserts() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?1 AND c IN (SELECT value FROM json_each(?2))"),
            "SELECT a FROM t WHERE b = $1 AND c = ANY (ARRAY(SELECT \
             json_array_elements_text(CAST($2 AS json))))"
        );
        assert_eq!(
            translate("SELECT a FROM t WHERE c NOT IN (SELECT value FROM json_each(?12))"),
            "SELECT a FROM t WHERE c <> ALL (ARRAY(SELECT \
             json_array_elements_text(CAST($12 AS json))))"
        );
        // Only the keyword: a join on such a list is a join.
        assert_eq!(
            translate("SELECT a FROM t JOIN (SELECT value FROM json_each(?1)) j ON j.value = a"),
            "SELECT a FROM t JOIN (SELECT value FROM \
             json_array_elements_text(CAST($1 AS json))) j ON j.value = a"
        );
        assert_eq!(
            translate("INSERT OR IGNORE INTO t (a) VALUES (?1)"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            translate("SELECT x FROM s WHERE +village = ?1 AND y = 'a?+b' AND z = w + 1"),
            "SELECT x FROM s WHERE village = $1 AND y = 'a?+b' AND z = w + 1"
        );
        // An addition written tight stays one; a hint after a tab goes.
        assert_eq!(
            translate("SELECT a +b FROM t WHERE\t+c = ?2"),
            "SELECT a +b FROM t WHERE\tc = $2"
        );
        // Quoted names, comments and literals keep their question marks and quotes.
        assert_eq!(
            translate("SELECT \"a?\" FROM t -- it's ?1\nWHERE b = 'it''s ?' AND c = ?1"),
            "SELECT \"a?\" FROM t -- it's ?1\nWHERE b = 'it''s ?' AND c = $1"
        );
        assert_eq!(
            translate("SELECT value FROM json_each( ?3 )"),
            "SELECT value FROM json_array_elements_text(CAST($3 AS json))"
        );
        // Only a statement that begins so is an upsert; a literal that says so is text.
        assert_eq!(
            translate("SELECT 'INSERT OR IGNORE INTO' FROM t"),
            "SELECT 'INSERT OR IGNORE INTO' FROM t"
        );
        assert_eq!(
            translate("INSERT OR IGNORE INTO t (a) VALUES (?1) RETURNING a"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING RETURNING a"
        );
    }
}
