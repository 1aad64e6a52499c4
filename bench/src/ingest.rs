//! Server ingest: a phone's registrations pushed through the store's push path (validation,
//! merge, history, scope, summaries, alerts), from one device and from 50 devices at once,
//! against a plain rusqlite insert of the same field rows.

use std::path::Path;
use std::time::{Duration, Instant};

use baylink_server::demo::Counts;
use baylink_server::store::Db;
use baylink_server::store::rusqlite::{Connection, params};
use baylink_sync::Change;

use crate::Figure;
use crate::district::{Officer, batches, changes_of, push_all};

/// The same field rows inserted with plain rusqlite: the table the server keeps current values
/// in, with its primary key and sequence index, one transaction per batch.
fn plain_insert(path: &Path, changes: &[Change], most: usize) -> Duration {
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
    for batch in batches(changes, most) {
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

/// How a figure's name says its pushes' size: nothing for a current phone's.
pub fn pushes(most: usize) -> String {
    match most == mobile_core::sync::PUSH_BATCH {
        true => String::new(),
        false => format!(", pushes of up to {most}"),
    }
}

fn rate(changes: usize, time: Duration) -> f64 {
    changes as f64 / time.as_secs_f64()
}

/// The first village's officer's changes pushed alone into `db` (pushes of up to `most`
/// changes): the changes and the time.
pub fn push_one(
    db: &Db,
    officers: &[Officer],
    counts: Counts,
    most: usize,
) -> (Vec<Change>, Duration) {
    let one = changes_of(0, &officers[0], counts);
    let start = Instant::now();
    push_all(db, &officers[0].caller, &one, most);
    (one, start.elapsed())
}

/// The next 50 villages' officers' changes pushed at once (a thread each; pushes of up to
/// `most` changes): the changes and the time.
pub fn push_fifty(
    db: &Db,
    officers: &[Officer],
    counts: Counts,
    most: usize,
) -> (Vec<Change>, Duration) {
    let many: Vec<Vec<Change>> = (1..=50)
        .map(|i| changes_of(i, &officers[i], counts))
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (i, changes) in many.iter().enumerate() {
            let caller = &officers[i + 1].caller;
            s.spawn(move || push_all(db, caller, changes, most));
        }
    });
    let took = start.elapsed();
    (many.into_iter().flatten().collect(), took)
}

/// Ingest from the first village's officer alone, then from the next 50 at once (one thread
/// each), into `db`, in pushes of up to `most` changes; each against the plain insert of the
/// same rows in `scratch`, a transaction per push.
pub fn figures(
    db: &Db,
    officers: &[Officer],
    counts: Counts,
    most: usize,
    scratch: &Path,
) -> Vec<Figure> {
    let (one, store_one) = push_one(db, officers, counts, most);
    let plain_one = plain_insert(&scratch.join("plain-one.db"), &one, most);
    // The cost of durable commits: a village of the same size pushed with commits durable only
    // at the next checkpoint (`synchronous = NORMAL`), the server's setting before.
    let relaxed = changes_of(51, &officers[51], counts);
    let synchronous = |mode: &'static str| {
        db.sqlite_blocking(move |conn| Ok(conn.pragma_update(None, "synchronous", mode)?))
            .expect("pragma");
    };
    synchronous("NORMAL");
    let start = Instant::now();
    push_all(db, &officers[51].caller, &relaxed, most);
    let store_relaxed = start.elapsed();
    synchronous("FULL");

    let (all, store_many) = push_fifty(db, officers, counts, most);
    let total = all.len();
    let plain_many = plain_insert(&scratch.join("plain-many.db"), &all, most);

    let figure = |name: String, n: usize, store: Duration, plain: Duration| Figure {
        name,
        value: rate(n, store),
        unit: "changes/s".into(),
        baseline: Some(rate(n, plain)),
        ratio: Some(plain.as_secs_f64() / store.as_secs_f64()),
    };
    vec![
        figure(
            format!(
                "server ingest, 1 device ({} changes{})",
                one.len(),
                pushes(most)
            ),
            one.len(),
            store_one,
            plain_one,
        ),
        figure(
            format!(
                "server ingest, 1 device, durable commits (baseline: durable at checkpoint, {} changes{})",
                relaxed.len(),
                pushes(most)
            ),
            one.len(),
            store_one,
            store_relaxed.mul_f64(one.len() as f64 / relaxed.len() as f64),
        ),
        figure(
            format!(
                "server ingest, 50 devices at once ({total} changes{})",
                pushes(most)
            ),
            total,
            store_many,
            plain_many,
        ),
    ]
}
