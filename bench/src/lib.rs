//! The district benchmark: Daya Bay's 64 villages filled deterministically (about 400,000
//! persons, 100,000 houses and 1,000,000 vehicles at scale 1; `scale` multiplies), and the figures
//! measured on it, each beside a baseline measured in the same run.
//!
//! Figures so far: server ingest (the push path: validation, merge, history, scope, summaries)
//! from one device and from 50 devices at once, against a plain rusqlite insert of the same field
//! rows.

use std::time::{Duration, Instant};

use baylink_server::demo::{Counts, village_changes};
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::rusqlite::{Connection, params};
use baylink_server::store::sync::{self, Caller};
use baylink_server::store::{Db, now_ms};
use baylink_sync::{Change, Clock, NodeId};
use uuid::Uuid;

/// Changes per push, as a phone sends them.
const BATCH: usize = 500;

/// One measured figure and its baseline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The baseline measured in the same run, if the figure has one.
    pub baseline: Option<f64>,
    /// value / baseline (for rates: higher is better).
    pub ratio: Option<f64>,
}

/// The district at `scale`: per-village counts.
pub fn counts(scale: f64) -> Counts {
    let per_village = |district: f64| ((district * scale / 64.0).round() as u64).max(1);
    Counts {
        persons: per_village(400_000.0),
        houses: per_village(100_000.0),
        vehicles: per_village(1_000_000.0),
        mistyped: false,
    }
}

/// A server store with Daya Bay's places and one officer (and device) per village.
fn server(dir: &std::path::Path) -> (Db, Vec<(String, String, Caller)>) {
    let db = Db::open(&dir.join("baylink.db")).expect("database");
    let officers = db
        .call_blocking(|c| {
            baylink_server::demo::seed_places(c)?;
            let villages: Vec<(String, String, String)> = c
                .prepare("SELECT code, name, station FROM village ORDER BY code")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for (i, (code, name, station)) in villages.into_iter().enumerate() {
                let username = format!("o{}", &code[6..]);
                let list = [code.clone()];
                let new = NewAccount {
                    username: &username,
                    display_name: &username,
                    role: Role::Officer,
                    station: Some(&station),
                    password_hash: "-",
                    villages: &list,
                };
                let account = accounts::create_account(c, &new, 0)?;
                let device = NodeId(Uuid::from_u128(i as u128 + 1));
                accounts::register_device(c, &device.to_string(), account, "bench", 0)?;
                out.push((
                    code.clone(),
                    name,
                    Caller {
                        account,
                        role: Role::Officer,
                        device: device.to_string(),
                        villages: vec![code],
                    },
                ));
            }
            Ok(out)
        })
        .expect("places and officers");
    (db, officers)
}

/// The changes of the `index`-th village's officer.
fn changes_of(index: usize, officer: &(String, String, Caller), counts: Counts) -> Vec<Change> {
    let (code, name, caller) = officer;
    let node: NodeId = caller.device.parse().expect("node id");
    let mut clock = Clock::default();
    village_changes(
        index as u64,
        code,
        name,
        &format!("o{}", &code[6..]),
        node,
        &mut clock,
        now_ms(),
        counts,
    )
}

/// Phone-sized batches of whole records, as a phone's outbox gives them (a record's changes are
/// contiguous: each is one capture).
fn batches(changes: &[Change]) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut record_start = 0;
    for i in 1..=changes.len() {
        let boundary = i == changes.len() || changes[i].entity != changes[i - 1].entity;
        if !boundary {
            continue;
        }
        if i - start > BATCH && record_start > start {
            out.push(&changes[start..record_start]);
            start = record_start;
        }
        record_start = i;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// Pushes a device's changes in phone-sized batches; every change must be accepted.
fn push_all(db: &Db, caller: &Caller, changes: &[Change]) {
    for batch in batches(changes) {
        let results = db
            .call_blocking(|c| sync::push(c, caller, batch, now_ms(), 60_000))
            .expect("push");
        let refused: Vec<_> = results
            .iter()
            .filter(|r| r.status != baylink_sync::wire::ChangeStatus::Accepted)
            .take(3)
            .collect();
        assert!(
            refused.is_empty(),
            "the district's changes are all valid: {refused:?}"
        );
    }
}

/// The same field rows inserted with plain rusqlite: the table the server keeps current values
/// in, with its primary key and sequence index, one transaction per batch.
fn plain_insert(path: &std::path::Path, changes: &[Change]) -> Duration {
    let conn = Connection::open(path).expect("plain database");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE field (entity TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
             hlc INTEGER NOT NULL, node TEXT NOT NULL, seq INTEGER NOT NULL,
             PRIMARY KEY (entity, field)) WITHOUT ROWID;
         CREATE UNIQUE INDEX field_seq ON field (seq);",
    )
    .expect("schema");
    let start = Instant::now();
    let mut seq = 0i64;
    for batch in batches(changes) {
        let tx = conn.unchecked_transaction().expect("transaction");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO field (entity, field, value, hlc, node, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (entity, field) DO UPDATE SET value = excluded.value, hlc = excluded.hlc,
                         node = excluded.node, seq = excluded.seq",
                )
                .expect("prepare");
            for c in batch {
                seq += 1;
                stmt.execute(params![
                    c.entity.hyphenated().to_string(),
                    c.field,
                    c.value.to_string(),
                    c.stamp.hlc.as_u64() as i64,
                    c.stamp.node.to_string(),
                    seq
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    start.elapsed()
}

fn rate(changes: usize, time: Duration) -> f64 {
    changes as f64 / time.as_secs_f64()
}

/// Server ingest from one device (one village's registrations) and from 50 devices at once
/// (50 villages, one thread each), against the plain insert of the same rows.
pub fn ingest(scale: f64) -> Vec<Figure> {
    let counts = counts(scale);
    let dir = tempfile::tempdir().expect("temporary directory");
    let (db, officers) = server(dir.path());
    let one = changes_of(0, &officers[0], counts);
    let start = Instant::now();
    push_all(&db, &officers[0].2, &one);
    let store_one = start.elapsed();
    let plain_one = plain_insert(&dir.path().join("plain-one.db"), &one);

    let many: Vec<Vec<Change>> = (1..=50)
        .map(|i| changes_of(i, &officers[i], counts))
        .collect();
    let total: usize = many.iter().map(Vec::len).sum();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (i, changes) in many.iter().enumerate() {
            let (db, caller) = (&db, &officers[i + 1].2);
            s.spawn(move || push_all(db, caller, changes));
        }
    });
    let store_many = start.elapsed();
    let all: Vec<Change> = many.into_iter().flatten().collect();
    let plain_many = plain_insert(&dir.path().join("plain-many.db"), &all);

    let figure = |name: &str, n: usize, store: Duration, plain: Duration| Figure {
        name: name.into(),
        value: rate(n, store),
        unit: "changes/s".into(),
        baseline: Some(rate(n, plain)),
        ratio: Some(plain.as_secs_f64() / store.as_secs_f64()),
    };
    vec![
        figure(
            &format!("server ingest, 1 device ({} changes)", one.len()),
            one.len(),
            store_one,
            plain_one,
        ),
        figure(
            &format!("server ingest, 50 devices at once ({total} changes)"),
            total,
            store_many,
            plain_many,
        ),
    ]
}

/// Mean time of `f` over the `queries`, in microseconds.
fn mean_us(queries: &[String], mut f: impl FnMut(&str) -> usize) -> f64 {
    let start = Instant::now();
    let mut found = 0;
    for q in queries {
        found += f(q);
    }
    assert!(found > 0, "the queries find something");
    start.elapsed().as_secs_f64() * 1e6 / queries.len() as f64
}

/// Device search at `records` records (70 % persons, 30 % vehicles) by ID-number prefix, name
/// prefix and plate, against one plain indexed SELECT of the same prefix on a plain table.
pub fn device_search(records: u64) -> Vec<Figure> {
    use baylink_domain::{EntityKind, Input, synthetic};
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = mobile_core::Store::open(dir.path().join("field.db")).expect("store");
    let persons = records * 7 / 10;
    let vehicles = records - persons;
    let input = |pairs: &[(&str, String)]| -> Input {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let number = |n: u64| synthetic::resident_id(n * 8_001 % 96_000_000);
    for chunk in (0..persons).collect::<Vec<_>>().chunks(5_000) {
        let inputs: Vec<Input> = chunk
            .iter()
            .map(|&n| {
                input(&[
                    ("village", "441303006001".into()),
                    ("id_number", number(n)),
                    ("name", synthetic::name(n)),
                ])
            })
            .collect();
        store
            .capture_many(EntityKind::Person, &inputs)
            .expect("persons");
    }
    for chunk in (0..vehicles).collect::<Vec<_>>().chunks(5_000) {
        let inputs: Vec<Input> = chunk
            .iter()
            .map(|&n| {
                input(&[
                    ("village", "441303006001".into()),
                    ("plate", synthetic::plate(n * 7)),
                    ("vehicle_type", "car".into()),
                ])
            })
            .collect();
        store
            .capture_many(EntityKind::Vehicle, &inputs)
            .expect("vehicles");
    }
    let plain = Connection::open(dir.path().join("plain.db")).expect("plain database");
    plain
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE record (id INTEGER PRIMARY KEY, id_number TEXT, name TEXT, plate TEXT);
             CREATE INDEX record_id_number ON record (id_number);
             CREATE INDEX record_name ON record (name);
             CREATE INDEX record_plate ON record (plate);",
        )
        .expect("schema");
    {
        let tx = plain.unchecked_transaction().expect("transaction");
        let mut stmt = tx
            .prepare("INSERT INTO record (id_number, name, plate) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for n in 0..persons {
            stmt.execute(params![number(n), synthetic::name(n), None::<String>])
                .expect("insert");
        }
        for n in 0..vehicles {
            stmt.execute(params![
                None::<String>,
                None::<String>,
                synthetic::plate(n * 7)
            ])
            .expect("insert");
        }
        drop(stmt);
        tx.commit().expect("commit");
    }
    let step = (persons / 200).max(1);
    let ids: Vec<String> = (0..persons)
        .step_by(step as usize)
        .map(|n| number(n)[..10].to_owned())
        .collect();
    let names: Vec<String> = (0..persons)
        .step_by(step as usize)
        .map(|n| synthetic::name(n).chars().take(2).collect())
        .collect();
    let plates: Vec<String> = (0..vehicles)
        .step_by((vehicles / 200).max(1) as usize)
        .map(|n| synthetic::plate(n * 7))
        .collect();
    let mut figures = Vec::new();
    for (what, column, queries) in [
        ("ID-number prefix (10 characters)", "id_number", &ids),
        ("name prefix (2 characters)", "name", &names),
        ("whole plate", "plate", &plates),
    ] {
        let device = mean_us(queries, |q| store.search(q, 20).expect("search").len());
        let sql = format!(
            "SELECT id FROM record WHERE {column} >= ?1 AND {column} < ?2 ORDER BY {column} LIMIT 20"
        );
        let baseline = mean_us(queries, |q| {
            let mut stmt = plain.prepare_cached(&sql).expect("prepare");
            let rows = stmt
                .query_map(params![q, format!("{q}\u{10FFFF}")], |r| r.get::<_, i64>(0))
                .expect("query");
            rows.count()
        });
        figures.push(Figure {
            name: format!("device search at {records} records, {what}"),
            value: device,
            unit: "µs".into(),
            baseline: Some(baseline),
            ratio: Some(device / baseline),
        });
    }
    figures
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Incremental sync over HTTP on loopback: a phone that is up to date edits 100 records and syncs
/// (push, then pull); the baseline is the same phone's sync with nothing to send or receive (one
/// empty round trip). Median of `rounds`.
pub fn incremental_sync(rounds: usize) -> Vec<Figure> {
    use baylink_domain::{EntityKind, Input, synthetic};
    const PASSWORD: &str = "bench-password";
    let dir = tempfile::tempdir().expect("temporary directory");
    let state =
        baylink_server::AppState::open(baylink_server::Config::new(dir.path().join("server")))
            .expect("server state");
    let hash = baylink_server::auth::password::hash(PASSWORD).expect("hash");
    state
        .db
        .call_blocking(|c| {
            baylink_server::demo::seed_places(c)?;
            let villages = ["441303006001".to_owned()];
            let new = NewAccount {
                username: "o1",
                display_name: "o1",
                role: Role::Officer,
                station: Some("441303006"),
                password_hash: &hash,
                villages: &villages,
            };
            accounts::create_account(c, &new, 0).map(drop)
        })
        .expect("officer");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    runtime.spawn(baylink_server::serve_until(
        listener,
        state,
        std::future::pending(),
    ));
    let mut phone = mobile_core::Store::open(dir.path().join("field.db")).expect("store");
    mobile_core::sync::login(&mut phone, &url, "o1", PASSWORD, "bench").expect("login");
    let inputs: Vec<Input> = (0..1_000u64)
        .map(|n| {
            [
                ("village", "441303006001".to_owned()),
                ("id_number", synthetic::resident_id(500_000 + n)),
                ("name", synthetic::name(n)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        })
        .collect();
    let ids = phone
        .capture_many(EntityKind::Person, &inputs)
        .expect("captured");
    let quiet = |_: &str, _: u64, _: u64| {};
    mobile_core::sync::sync(&mut phone, &quiet).expect("first sync");
    let mut with_changes = Vec::new();
    let mut empty = Vec::new();
    for round in 0..rounds {
        let start = Instant::now();
        mobile_core::sync::sync(&mut phone, &quiet).expect("empty sync");
        empty.push(start.elapsed());
        for (i, id) in ids.iter().skip(round * 100 % 900).take(100).enumerate() {
            let notes: Input = [("notes".to_owned(), format!("第{round}轮第{i}次修改"))]
                .into_iter()
                .collect();
            phone.edit(*id, &notes).expect("edit");
        }
        let start = Instant::now();
        let report = mobile_core::sync::sync(&mut phone, &quiet).expect("sync");
        with_changes.push(start.elapsed());
        assert_eq!(report.pushed, 100);
    }
    let (changes, baseline) = (median(with_changes), median(empty));
    vec![Figure {
        name: "incremental sync of 100 changes, up-to-date phone, loopback HTTP".into(),
        value: changes.as_secs_f64() * 1e3,
        unit: "ms".into(),
        baseline: Some(baseline.as_secs_f64() * 1e3),
        ratio: Some(changes.as_secs_f64() / baseline.as_secs_f64()),
    }]
}
