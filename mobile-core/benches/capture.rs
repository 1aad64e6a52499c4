//! Capture benchmark: N persons through the device store, against the same rows inserted with
//! plain rusqlite (one transaction, one prepared statement, the same indexes) in the same run.
//!
//! `cargo bench -p mobile-core --bench capture` (N = 100,000), or `-- --count N`. Under
//! `cargo test --benches` (no `--bench` argument) it runs a quick 2,000-person pass in the test
//! suite, so the benchmark cannot rot.

use std::time::Instant;

use baylink_domain::{EntityKind, Input, Summary, id_number, summarize, validate_capture};
use mobile_core::Store;
use rusqlite::{Connection, params};

const VILLAGES: [&str; 4] = [
    "441303006001",
    "441303006002",
    "441303007001",
    "441303008003",
];
const COUNTIES: [&str; 6] = ["441303", "441302", "440306", "510104", "430102", "360121"];
const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗";
const GIVEN: &str = "芳强静伟娜敏磊军洋勇艳杰娟涛明超秀霞平刚";

/// A deterministic person: valid ID number, name, phone, village.
fn person(i: u64) -> Input {
    let county = COUNTIES[(i % 6) as usize];
    // Born between 1980 and 2004.
    let birth = baylink_domain::Date::from_days(3_650 + (i * 7_919 % 9_000) as i64);
    let first17 = format!(
        "{county}{}{:03}",
        birth.to_string().replace('-', ""),
        i % 1000
    );
    let check = id_number::check_char(first17.as_bytes());
    let surnames: Vec<char> = SURNAMES.chars().collect();
    let given: Vec<char> = GIVEN.chars().collect();
    let name: String = [
        surnames[(i % 20) as usize],
        given[(i / 20 % 20) as usize],
        given[(i / 400 % 20) as usize],
    ]
    .iter()
    .collect();
    [
        ("village", VILLAGES[(i % 4) as usize].to_owned()),
        ("id_number", format!("{first17}{check}")),
        ("name", name),
        ("phone", format!("13{:09}", i * 37 % 1_000_000_000)),
        ("occupation", "工人".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn plain_insert(dir: &std::path::Path, rows: &[(String, Summary, String)]) -> f64 {
    let conn = Connection::open(dir.join("plain.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: u64 = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if args.iter().any(|a| a == "--bench") {
            100_000
        } else {
            2_000
        });
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
    let plain = plain_insert(dir.path(), &rows);

    let mut store = Store::open(dir.path().join("store.db")).expect("store");
    let start = Instant::now();
    store
        .capture_many(EntityKind::Person, &inputs)
        .expect("capture");
    let batched = start.elapsed().as_secs_f64();

    // Interactive capture: one transaction per person, as an officer saves a form.
    let single_n = (count / 20).max(1);
    let mut single = Store::open(dir.path().join("single.db")).expect("store");
    let start = Instant::now();
    for input in inputs.iter().take(single_n as usize) {
        single.capture(EntityKind::Person, input).expect("capture");
    }
    let per_action = start.elapsed().as_secs_f64();

    // Search at this size: prefixes of ID numbers and names, as typed.
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
    let mut found = 0;
    for q in &queries {
        found += store.search(q, 20).expect("search").len();
    }
    let search_us = start.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;
    assert!(found > 0);

    let plain_rate = count as f64 / plain;
    let store_rate = count as f64 / batched;
    println!("capture benchmark, {count} persons (release build, file databases, WAL)");
    println!("{:<52} {:>12}", "figure", "value");
    println!(
        "{:<52} {:>12.0}",
        "plain rusqlite insert, persons/s (baseline)", plain_rate
    );
    println!(
        "{:<52} {:>12.0}",
        "store capture, one transaction, persons/s", store_rate
    );
    println!(
        "{:<52} {:>12.2}",
        "ratio store / plain (target >= 0.33)",
        store_rate / plain_rate
    );
    println!(
        "{:<52} {:>12.0}",
        format!("store capture, a transaction each ({single_n}), persons/s"),
        single_n as f64 / per_action
    );
    println!(
        "{:<52} {:>12.1}",
        "search by ID-number or name prefix, mean us", search_us
    );
    println!(
        "{{\"persons\":{count},\"plain_per_s\":{plain_rate:.0},\"store_per_s\":{store_rate:.0},\"ratio\":{:.3},\"single_per_s\":{:.0},\"search_us\":{search_us:.1}}}",
        store_rate / plain_rate,
        single_n as f64 / per_action
    );
}
