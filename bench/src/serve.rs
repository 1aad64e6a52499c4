//! The district's server in its own process (`baylink-bench serve DIR`), so that its memory is
//! its own: the server's routes, plus the baselines' plain JSON routes (a village's records as
//! one GET; records uploaded as one POST, stored as a JSON row each).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use baylink_server::store::Db;
use baylink_server::{AppError, AppState};
use serde_json::{Map, Value};
use tower_http::compression::CompressionLayer;

/// A server process serving a district's data directory on loopback; killed when dropped.
pub struct Server {
    child: Child,
    // Closing the child's stdin (when the benchmark ends, however it ends) stops it.
    _stdin: ChildStdin,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Server {
    /// Starts `exe serve DIR` (the benchmark binary) and waits until it listens.
    pub fn spawn(exe: &Path, dir: &Path) -> Server {
        Self::spawn_on(exe, dir, None)
    }

    /// [`Server::spawn`] with the data in the PostgreSQL database `database` names, when set.
    pub fn spawn_on(exe: &Path, dir: &Path, database: Option<&str>) -> Server {
        let mut command = Command::new(exe);
        match database {
            Some(url) => command.env(DATABASE, url),
            None => command.env_remove(DATABASE),
        };
        let mut child = command
            .arg("serve")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server says where it listens");
        let url = line
            .strip_prefix("listening ")
            .map(|a| format!("http://{}", a.trim()))
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        Server {
            child,
            _stdin: stdin,
            url,
        }
    }

    /// The process's CPU time so far, user and system, in seconds (Linux `/proc`, 100 ticks a
    /// second).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Bytes the process has written so far, to files and sockets (Linux `/proc/PID/io`,
    /// `wchar`): its database log and checkpoints, steadier between runs than time on a shared
    /// machine.
    pub fn written_bytes(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).ok()?;
        let line = text.lines().find(|l| l.starts_with("wchar:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The process's peak resident memory so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's peak resident memory (Linux `VmHWM`) from its `status` file, in bytes.
pub fn peak_rss(status: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A process's CPU time from its `stat` file, user and system, in seconds.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The fields after the command (which may hold spaces) in parentheses.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The upload baseline's store: records as one JSON row each, in a plain SQLite file committed
/// as durably as the server's.
type Plain = std::sync::Arc<std::sync::Mutex<baylink_server::store::rusqlite::Connection>>;

/// Stores the records of one JSON POST (`[{"id", "kind", "fields"}]`) as a row each, in one
/// transaction; answers how many.
async fn upload_json(State(plain): State<Plain>, body: axum::body::Bytes) -> axum::Json<Value> {
    let stored = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let records: Vec<Value> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut conn = plain.lock().map_err(|e| e.to_string())?;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut stmt = tx
                .prepare("INSERT OR REPLACE INTO record (id, kind, body) VALUES (?1, ?2, ?3)")
                .map_err(|e| e.to_string())?;
            for r in &records {
                let id = r["id"].as_str().unwrap_or_default();
                let kind = r["kind"].as_str().unwrap_or_default();
                stmt.execute((id, kind, r["fields"].to_string()))
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(records.len())
    })
    .await;
    match stored {
        Ok(Ok(n)) => axum::Json(serde_json::json!({ "stored": n })),
        Ok(Err(e)) => axum::Json(serde_json::json!({ "error": e })),
        Err(e) => axum::Json(serde_json::json!({ "error": e.to_string() })),
    }
}

/// Every record in a village as plain JSON (`[{"id", "kind", "fields": {…}}]`), read from the
/// server's current values: what a plain REST endpoint would answer.
async fn village_json(
    State(db): State<Db>,
    UrlPath(village): UrlPath<String>,
) -> Result<axum::Json<Value>, AppError> {
    let records = db
        .call(move |c| {
            // Each record's values, without their stamps, as one JSON object.
            let mut stmt = c.prepare(c.pick(
                "SELECT e.id, e.kind,
                     (SELECT json_group_object(f.key, json(f.value -> '$[0]')) FROM json_each(e.state, '$.f') f)
                 FROM scope s JOIN entity e ON e.pos = s.pos
                 WHERE s.village = ?1 ORDER BY e.id",
                "SELECT e.id, e.kind,
                     (SELECT CAST(json_object_agg(f.key, f.value -> 0) AS text)
                      FROM json_each(CAST(e.state AS json) -> 'f') f)
                 FROM scope s JOIN entity e ON e.pos = s.pos
                 WHERE s.village = ?1 ORDER BY e.id",
            ))?;
            let mut rows = stmt.query([&village])?;
            let mut records: Vec<Value> = Vec::new();
            while let Some(row) = rows.next()? {
                let (id, kind, fields): (String, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let fields: Map<String, Value> = serde_json::from_str(&fields).unwrap_or_default();
                records.push(record((id, kind, fields)));
            }
            Ok(records)
        })
        .await?;
    Ok(axum::Json(Value::Array(records)))
}

fn record((id, kind, fields): (String, String, Map<String, Value>)) -> Value {
    serde_json::json!({ "id": id, "kind": kind, "fields": fields })
}

/// The variable that gives `baylink-bench serve` a PostgreSQL database to serve.
const DATABASE: &str = "BAYLINK_BENCH_DATABASE";

/// `baylink-bench serve DIR`: serves the data directory (or the PostgreSQL database
/// `BAYLINK_BENCH_DATABASE` names) on a loopback port, prints `listening ADDR`, and stops when
/// its stdin closes.
pub fn main(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Opened before the runtime runs: opening blocks (and waits on PostgreSQL's own runtime).
    // The upload baseline's file goes there, also when the district is on PostgreSQL (whose
    // server makes no data directory).
    std::fs::create_dir_all(dir).expect("the data directory");
    let mut config = baylink_server::Config::new(dir);
    config.database = std::env::var(DATABASE).ok();
    let (state, db) = AppState::open(config).expect("server state");
    runtime.block_on(async {
        let baseline = axum::Router::new()
            .route("/bench/village/{code}", get(village_json))
            .layer(CompressionLayer::new())
            .with_state(db.clone());
        let plain = baylink_server::store::rusqlite::Connection::open(dir.join("plain.db"))
            .expect("the upload baseline's file");
        plain
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS record (id TEXT PRIMARY KEY, kind TEXT NOT NULL,
                     body TEXT NOT NULL);",
            )
            .expect("the upload baseline's table");
        let upload = axum::Router::new()
            .route("/bench/upload", axum::routing::post(upload_json))
            .layer(axum::extract::DefaultBodyLimit::max(1 << 30))
            .with_state(std::sync::Arc::new(std::sync::Mutex::new(plain)));
        let app = baylink_server::app(state).merge(baseline).merge(upload);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        println!("listening {}", listener.local_addr().expect("address"));
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await;
        };
        let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(stdin_closed)
            .await
            .expect("serve");
    });
}
