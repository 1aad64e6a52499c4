//! Device capture: persons through the phone's store, against the same rows inserted with plain
//! rusqlite (one transaction, one prepared statement, the same indexes) in the same run.

use std::path::Path;
use std::time::Instant;

use baylink_domain::{EntityKind, Input, Summary, summarize, synthetic, validate_capture};
use baylink_server::store::rusqlite::{Connection, params};

use crate::Figure;

const VILLAGES: [&str; 4] = [
    "441303006001",
    "441303006002",
    "441303007001",
    "441303008003",
];

/// A deterministic person: valid ID number, name, phone, village.
fn person(i: u64) -> Input {
    [
        ("village", VILLAGES[(i % 4) as usize].to_owned()),
        ("id_number", synthetic::resident_id(i)),
        ("name", synthetic::name(i)),
        ("phone", format!("13{:09}", i * 37 % 1_000_000_000)),
        ("occupation", "工人".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The store's summary columns and the fields as JSON, in a plain table with the same
/// secondary indexes (id, village, ID number, name, phone) and the same 8 MiB page cache.
fn plain_insert(path: &Path, rows: &[(String, Summary, String)]) -> f64 {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8192;
         CREATE TABLE person (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, village TEXT,
             label TEXT, id_number TEXT, name TEXT, phone TEXT, fields TEXT NOT NULL);
         CREATE INDEX person_village ON person (village);
         CREATE INDEX person_id_number ON person (id_number);
         CREATE INDEX person_name ON person (name);
         CREATE INDEX person_phone ON person (phone);",
    )
    .expect("schema");
    let start = Instant::now();
    let tx = conn.unchecked_transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare("INSERT INTO person (id, village, label, id_number, name, phone, fields) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .expect("prepare");
        for (id, s, fields) in rows {
            stmt.execute(params![
                id,
                s.village,
                s.label,
                s.id_number,
                s.name,
                s.phone,
                fields
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
    start.elapsed().as_secs_f64()
}

/// `count` persons captured in one transaction (best of `rounds`, alternating with the
/// baseline so that a change in the machine's load hits both alike), and a twentieth of them
/// one transaction each, as an officer saves a form.
pub fn figures(count: u64, rounds: usize) -> Vec<Figure> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let inputs: Vec<Input> = (0..count).map(person).collect();
    let today = baylink_domain::Date::new(2026, 11, 28).expect("date");
    // The baseline's rows: what the store ends up holding, prepared outside the timing.
    let rows: Vec<(String, Summary, String)> = inputs
        .iter()
        .map(|input| {
            let fields = validate_capture(EntityKind::Person, input, today).expect("valid");
            let id = baylink_domain::natural_id(EntityKind::Person, &fields).expect("natural key");
            let summary = summarize(EntityKind::Person, &fields);
            let json = serde_json::to_string(&fields).expect("json");
            (id.to_string(), summary, json)
        })
        .collect();
    let (mut plain, mut batched) = (f64::INFINITY, f64::INFINITY);
    for round in 0..rounds {
        let path = dir.path().join(format!("plain{round}.db"));
        plain = plain.min(plain_insert(&path, &rows));
        let path = dir.path().join(format!("store{round}.db"));
        let mut store = mobile_core::Store::open(path).expect("store");
        let start = Instant::now();
        store
            .capture_many(EntityKind::Person, &inputs)
            .expect("capture");
        batched = batched.min(start.elapsed().as_secs_f64());
    }
    let single_n = (count / 20).max(1);
    let mut single = mobile_core::Store::open(dir.path().join("single.db")).expect("store");
    let start = Instant::now();
    for input in inputs.iter().take(single_n as usize) {
        single.capture(EntityKind::Person, input).expect("capture");
    }
    let single_s = start.elapsed().as_secs_f64();
    let per_s = |secs: f64, n: u64| n as f64 / secs;
    vec![
        Figure {
            name: format!("device capture, one transaction ({count} persons)"),
            value: per_s(batched, count),
            unit: "records/s".into(),
            baseline: Some(per_s(plain, count)),
            ratio: Some(plain / batched),
        },
        Figure {
            name: format!("device capture, a transaction per form ({single_n} persons)"),
            value: per_s(single_s, single_n),
            unit: "records/s".into(),
            baseline: Some(per_s(plain, count)),
            ratio: Some(per_s(single_s, single_n) / per_s(plain, count)),
        },
    ]
}
