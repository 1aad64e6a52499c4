//! Capture benchmark: N persons through the device store, against the same rows inserted with
//! plain rusqlite (one transaction, one prepared statement, the same indexes) in the same run.
//!
//! `cargo bench -p mobile-core --bench capture` (N = 100,000), or `-- --count N`. Under
//! `cargo test --benches` (no `--bench` argument) it runs a quick 2,000-person pass in the test
//! suite, so the benchmark cannot rot.

use std::time::Instant;

use baylink_domain::{EntityKind, Input, Summary, summarize, synthetic, validate_capture};
use mobile_core::Store;
use rusqlite::{Connection, params};

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

fn plain_insert(path: &std::path::Path, rows: &[(String, Summary, String)]) -> f64 {
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

/// Best of `rounds` timings of `f`: the least disturbed by the machine's other load.
fn best_of(rounds: usize, mut f: impl FnMut(usize) -> f64) -> f64 {
    (0..rounds).map(&mut f).fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let count: u64 = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let rounds = if full { 5 } else { 1 };
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
            (
                id.to_string(),
                summary,
                serde_json::to_string(&fields).expect("json"),
            )
        })
        .collect();

    // Baseline and store alternate, so that a change in the machine's load hits both alike.
    let (mut plain, mut batched) = (f64::INFINITY, f64::INFINITY);
    for round in 0..rounds {
        plain = plain.min(plain_insert(
            &dir.path().join(format!("plain{round}.db")),
            &rows,
        ));
        let mut store = Store::open(dir.path().join(format!("store{round}.db"))).expect("store");
        let start = Instant::now();
        store
            .capture_many(EntityKind::Person, &inputs)
            .expect("capture");
        batched = batched.min(start.elapsed().as_secs_f64());
    }
    let validation = best_of(rounds, |_| {
        let start = Instant::now();
        for input in &inputs {
            let fields = validate_capture(EntityKind::Person, input, today).expect("valid");
            std::hint::black_box(baylink_domain::natural_id(EntityKind::Person, &fields));
        }
        start.elapsed().as_secs_f64()
    });

    // Interactive capture: one transaction per person, as an officer saves a form.
    let single_n = (count / 20).max(1);
    let mut single = Store::open(dir.path().join("single.db")).expect("store");
    let start = Instant::now();
    for input in inputs.iter().take(single_n as usize) {
        single.capture(EntityKind::Person, input).expect("capture");
    }
    let per_action = start.elapsed().as_secs_f64();

    // Search at this size: prefixes of ID numbers and names, as typed.
    let store = Store::open(dir.path().join("store0.db")).expect("store");
    let queries: Vec<String> = (0..1000u64)
        .map(|i| {
            let input = &inputs[(i * 7_777 % count) as usize];
            if i % 2 == 0 {
                input["id_number"][..8].to_owned()
            } else {
                input["name"][..6].to_owned()
            }
        })
        .collect();
    let start = Instant::now();
    let found: usize = queries
        .iter()
        .map(|q| store.search(q, 20).expect("search").len())
        .sum();
    let search_us = start.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;
    assert!(found >= queries.len(), "every query finds its person");

    let per_s = |secs: f64, n: u64| n as f64 / secs;
    let ratio = per_s(batched, count) / per_s(plain, count);
    let figures = [
        (
            "plain_per_s",
            "plain rusqlite insert, persons/s (baseline)",
            per_s(plain, count),
        ),
        (
            "store_per_s",
            "store capture, one transaction, persons/s",
            per_s(batched, count),
        ),
        ("ratio", "ratio store / plain (target >= 0.33)", ratio),
        (
            "validation_per_s",
            "of which validation + identity alone, persons/s",
            per_s(validation, count),
        ),
        (
            "single_per_s",
            "store capture, a transaction each, persons/s",
            per_s(per_action, single_n),
        ),
        (
            "search_us",
            "search by ID-number or name prefix, mean us",
            search_us,
        ),
    ];
    if !full {
        println!("capture benchmark, quick check ({count} persons, unoptimised build): it runs;");
        println!(
            "the figures below mean nothing. Figures: cargo bench -p mobile-core --bench capture"
        );
    }
    println!("capture benchmark: {count} persons, best of {rounds}, file databases in WAL mode");
    for (_, label, value) in &figures {
        println!("{label:<52} {value:>12.2}");
    }
    let json: Vec<String> = figures
        .iter()
        .map(|(key, _, value)| format!("\"{key}\":{value:.3}"))
        .collect();
    println!("{{\"persons\":{count},{}}}", json.join(","));
}
