//! The district's server in its own process (`baylink-bench serve DIR`), so that its memory is
//! its own: the server's routes, plus the bootstrap baseline's plain JSON route.

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
        let mut child = Command::new(exe)
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

    /// The process's peak resident memory so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            let mut stmt = c.prepare(
                "SELECT s.entity, e.kind, f.field, f.value FROM scope s
                 JOIN entity e ON e.id = s.entity JOIN field f ON f.entity = s.entity
                 WHERE s.village = ?1 ORDER BY s.entity",
            )?;
            let mut rows = stmt.query([&village])?;
            let mut records: Vec<Value> = Vec::new();
            let mut current: Option<(String, String, Map<String, Value>)> = None;
            while let Some(row) = rows.next()? {
                let (id, kind, field, value): (String, String, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                if current.as_ref().is_some_and(|(c, _, _)| *c != id) {
                    records.extend(current.take().map(record));
                }
                let entry = current.get_or_insert_with(|| (id, kind, Map::new()));
                let value = serde_json::from_str(&value).unwrap_or(Value::Null);
                entry.2.insert(field, value);
            }
            records.extend(current.map(record));
            Ok(records)
        })
        .await?;
    Ok(axum::Json(Value::Array(records)))
}

fn record((id, kind, fields): (String, String, Map<String, Value>)) -> Value {
    serde_json::json!({ "id": id, "kind": kind, "fields": fields })
}

/// `baylink-bench serve DIR`: serves the data directory on a loopback port, prints
/// `listening ADDR`, and stops when its stdin closes.
pub fn main(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (state, db) = AppState::open(baylink_server::Config::new(dir)).expect("server state");
        let baseline = axum::Router::new()
            .route("/bench/village/{code}", get(village_json))
            .layer(CompressionLayer::new())
            .with_state(db.clone());
        let app = baylink_server::app(state).merge(baseline);
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
