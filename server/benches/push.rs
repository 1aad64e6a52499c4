//! Push benchmark: one push that edits N stored persons and registers M new ones (an evening's
//! sync after a day of both), against the same changes in two pushes, the edits then the new
//! persons, measured in the same run on copies of one database.
//!
//! `cargo bench -p baylink-server --bench push` (N = 3,000 and M = 1,000: 17,000 changes, within
//! the 20,000 a push may hold), or `-- --stored N --new M`. Under `cargo test --benches` (no
//! `--bench` argument) it runs a quick pass of 300 and 100, so the benchmark cannot rot. Each new
//! person's key is checked against the stored records the push holds as facts: that check was
//! quadratic in the push's size until their keys were read once a push (docs/performance.md, *A
//! push's natural keys read once*).
//!
//! Then a hostile push: one person's document type of a megabyte and 5,000 ID numbers read by it
//! (`--long-type BYTES --numbers K`; a quick pass of 64 KiB and 200), against the same numbers
//! with a short document type: each number used to copy the type and check it again.

use std::path::Path;
use std::time::{Duration, Instant};

use baylink_server::demo::{Counts, officer_username, seed_places, village_changes};
use baylink_server::store::accounts::{self, NewAccount};
use baylink_server::store::audit::Actor;
use baylink_server::store::caller::{Caller, Role};
use baylink_server::store::{Db, devices, now_ms, push};
use baylink_sync::wire::{ChangeResult, ChangeStatus};
use baylink_sync::{Change, ChangeId, Clock, Hlc, NodeId, Stamp};
use uuid::Uuid;

/// The officer's village.
const VILLAGE: &str = "441303006001";

/// A number given after `flag`, or `default`.
fn number(args: &[String], flag: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Persons as the village's officer registers them (the demo's synthetic persons `index ×
/// 1,000 + p`, or `index × 1,000,000 + p` above a thousand), their changes numbered on from
/// `counter`.
fn persons(index: u64, count: u64, node: NodeId, at: u64, counter: &mut u64) -> Vec<Change> {
    let counts = Counts {
        persons: count,
        houses: count / 4 + 1,
        vehicles: 0,
        mistyped: false,
    };
    let officer = officer_username(VILLAGE);
    let mut clock = Clock::default();
    let mut changes: Vec<Change> =
        village_changes(index, VILLAGE, "村", &officer, node, &mut clock, at, counts)
            .into_iter()
            .filter(|c| c.kind == "person")
            .collect();
    for change in &mut changes {
        *counter += 1;
        change.id.counter = *counter;
    }
    changes
}

/// Applies one push on `db`, every change of it accepted, and says how long it took.
fn timed_push(db: &Db, caller: &Caller, changes: Vec<Change>, now: u64) -> Duration {
    let (took, results) = timed(db, caller, changes, now);
    if let Some(refused) = results.iter().find(|r| r.status != ChangeStatus::Accepted) {
        panic!("a change was not accepted: {refused:?}");
    }
    took
}

/// Applies one push on `db` whatever it decides: how long it took, and its answer (one result
/// a change).
fn timed(
    db: &Db,
    caller: &Caller,
    changes: Vec<Change>,
    now: u64,
) -> (Duration, Vec<ChangeResult>) {
    let caller = caller.clone();
    let sent = changes.len();
    let start = Instant::now();
    let results = db
        .call_blocking(move |c| push::push(c, &caller, &changes, now, 600_000))
        .expect("push");
    let took = start.elapsed();
    assert_eq!(results.len(), sent, "one result a change");
    (took, results)
}

/// One new person's document type `id_type` and `numbers` ID numbers, numbered from `counter`.
fn numbers_read_by(
    id_type: &str,
    numbers: u64,
    node: NodeId,
    now: u64,
    counter: &mut u64,
) -> Vec<Change> {
    let entity = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let stamp = |k: u64| Stamp::new(Hlc::new(now - 60_000, (k % 60_000) as u16), node);
    let values = std::iter::once(("id_type", serde_json::json!(id_type)))
        .chain((0..numbers).map(|k| ("id_number", serde_json::json!(format!("E9{k:07}")))));
    values
        .enumerate()
        .map(|(k, (field, value))| {
            *counter += 1;
            Change {
                id: ChangeId {
                    device: node,
                    counter: *counter,
                },
                kind: "person".into(),
                entity,
                field: field.into(),
                value,
                stamp: stamp(k as u64),
                base: None,
            }
        })
        .collect()
}

/// A copy of the database at `base`, opened.
fn copy(base: &Path, name: &str) -> Db {
    let path = base.with_file_name(name);
    std::fs::copy(base, &path).expect("copy");
    Db::open(&path).expect("database")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let stored = number(&args, "--stored", if full { 3_000 } else { 300 });
    let long_type = number(&args, "--long-type", if full { 1 << 20 } else { 64 << 10 });
    let numbers = number(&args, "--numbers", if full { 5_000 } else { 200 });
    let new = number(&args, "--new", if full { 1_000 } else { 100 });
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = dir.path().join("base.db");
    let now = now_ms();
    let node = NodeId(Uuid::from_u128(0xD0));
    let db = Db::open(&base).expect("database");
    let caller = db
        .call_blocking(move |c| {
            seed_places(c)?;
            let officer = NewAccount {
                username: officer_username(VILLAGE),
                display_name: "民警".into(),
                role: Role::Officer,
                station: Some(VILLAGE[..9].to_owned()),
                password_hash: "-".into(),
                villages: vec![VILLAGE.to_owned()],
            };
            let account = accounts::create_account(c, Actor::Operator, &officer, now)?;
            devices::register_device(c, &node.to_string(), account, "phone", now)?;
            Ok(Caller {
                account,
                role: Role::Officer,
                device: node.to_string(),
                villages: vec![VILLAGE.to_owned()],
            })
        })
        .expect("officer");
    // The stored persons, then the next day's changes: a note on each, and the new persons.
    let mut counter = 0;
    let first = persons(0, stored, node, now - 7_200_000, &mut counter);
    let mut ids: Vec<Uuid> = first.iter().map(|c| c.entity).collect();
    ids.dedup();
    timed_push(&db, &caller, first, now);
    db.sqlite_blocking(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?))
        .expect("checkpoint");
    drop(db);
    let edits: Vec<Change> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            counter += 1;
            Change {
                id: ChangeId {
                    device: node,
                    counter,
                },
                kind: "person".into(),
                entity: *id,
                field: "notes".into(),
                value: serde_json::json!(format!("复查 {i}")),
                stamp: Stamp::new(Hlc::new(now - 600_000, (i % 60_000) as u16), node),
                base: None,
            }
        })
        .collect();
    // Numbered past the stored ones: new persons, not the stored ones again.
    let stride = if new <= 1_000 { 1_000 } else { 1_000_000 };
    let fresh = persons(
        stored / stride + 1,
        new,
        node,
        now - 3_600_000,
        &mut counter,
    );
    let held: std::collections::HashSet<&Uuid> = ids.iter().collect();
    assert!(
        fresh.iter().all(|c| !held.contains(&c.entity)),
        "the new persons are new"
    );
    let changes = edits.len() + fresh.len();
    println!(
        "{} stored persons; a push of {changes} changes: a note on each, {new} new persons",
        ids.len()
    );

    let together = timed_push(
        &copy(&base, "together.db"),
        &caller,
        [edits.clone(), fresh.clone()].concat(),
        now,
    );
    let apart_db = copy(&base, "apart.db");
    let apart =
        timed_push(&apart_db, &caller, edits, now) + timed_push(&apart_db, &caller, fresh, now);
    println!("\n| push | ms | × baseline |");
    println!("| --- | ---: | ---: |");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| baseline: the edits, then the new persons, in two pushes | {:.0} | 1.0 |",
        ms(apart)
    );
    println!(
        "| the edits and the new persons in one push | {:.0} | {:.1} |",
        ms(together),
        together.as_secs_f64() / apart.as_secs_f64()
    );

    // The hostile push, on the database the two pushes left, and its baseline beside it.
    let long = "r".repeat(long_type as usize);
    let short = numbers_read_by("passport", numbers, node, now, &mut counter);
    let hostile = numbers_read_by(&long, numbers, node, now, &mut counter);
    let short = timed(&apart_db, &caller, short, now).0;
    let hostile = timed(&apart_db, &caller, hostile, now).0;
    println!("\n{numbers} ID numbers of one person, read by a document type of {long_type} bytes");
    println!("\n| push | ms | × baseline |");
    println!("| --- | ---: | ---: |");
    println!(
        "| baseline: the numbers read by a short document type | {:.0} | 1.0 |",
        ms(short)
    );
    println!(
        "| the numbers read by the long one | {:.0} | {:.1} |",
        ms(hostile),
        hostile.as_secs_f64() / short.as_secs_f64()
    );
}
