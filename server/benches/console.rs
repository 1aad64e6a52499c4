//! Console benchmark: the review console's lists, searches, dashboard and duplicate search for one
//! station (22 of Daya Bay's 64 villages) over a district of N persons, against a plain indexed
//! SELECT of one page of one village's rows measured in the same run.
//!
//! `cargo bench -p baylink-server --bench console` (N = 400,000), or `-- --count N`. Under
//! `cargo test --benches` (no `--bench` argument) it runs a quick 5,000-person pass, so the
//! benchmark cannot rot. Rows are written straight into the server's tables (entity with the
//! birth date in its state, scope and summary, all at the record's position): this measures
//! reading, not ingest.

use std::time::{Duration, Instant};

use baylink_domain::synthetic;
use baylink_server::store::records::Filter;
use baylink_server::store::rusqlite::params;
use baylink_server::store::{Db, duplicates};
use baylink_server::store::{dashboard, records};

/// Runs `f` a few times and returns the median wall time.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Writes `count` persons spread over `villages`, as the server would hold them.
fn write_district(db: &Db, villages: &[String], count: u64) {
    db.sqlite_blocking(|c| {
        let tx = c.transaction()?;
        {
            let mut summary = tx.prepare(
                "INSERT INTO summary (pos, entity, kind, village, label, id_number, name, phone,
                                      review_status, deleted, created_by, created_at, updated_seq)
                 VALUES (?10, ?1, 'person', ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10)",
            )?;
            // The record's state holds its birth date (what duplicate candidates read). Its
            // position is its sequence number: the summary and scope are filed under it.
            let mut entity = tx.prepare(
                "INSERT INTO entity (pos, id, kind, village, seq, state) VALUES (?4, ?1, 'person', ?2, ?4,
                     json_object('n', json_array('00000000-0000-0000-0000-000000000000'),
                                 'f', json_object('birth_date', json_array(json(?3), 0, 0, ?4, 0))))",
            )?;
            let mut scope = tx.prepare("INSERT INTO scope (pos, village) VALUES (?1, ?2)")?;
            for n in 0..count {
                let id = uuid::Uuid::from_u128(u128::from(n) + 1).to_string();
                let village = &villages[(n % villages.len() as u64) as usize];
                // Births and origins spread as a real district's are.
                let number = synthetic::resident_id(n * 8001 % 96_000_000);
                let name = synthetic::name(n);
                let birth = format!(
                    "\"{}-{}-{}\"",
                    &number[6..10],
                    &number[10..12],
                    &number[12..14]
                );
                let status = ["pending", "pending", "approved", "returned"][(n % 4) as usize];
                let created = format!("2026-{:02}-{:02} 10:00:00", n % 11 + 1, n % 28 + 1);
                let seq = n as i64 + 1;
                summary.execute(params![
                    id,
                    village,
                    format!("{name} {number}"),
                    number,
                    name,
                    format!("138{n:08}"),
                    status,
                    format!("o{}", &village[6..]),
                    created,
                    seq
                ])?;
                entity.execute(params![id, village, birth, seq])?;
                scope.execute(params![seq, village])?;
            }
        }
        tx.commit()?;
        Ok(())
    })
    .expect("district written");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let count: u64 = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 400_000 } else { 5_000 });
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(&dir.path().join("baylink.db")).expect("database");
    let (all, station) = db
        .call_blocking(|c| {
            baylink_server::demo::seed_places(c)?;
            let codes =
                |sql: &str| -> Result<Vec<String>, baylink_server::store::error::StoreError> {
                    Ok(c.prepare(sql)?
                        .query_map((), |r| r.get(0))?
                        .collect::<Result<_, _>>()?)
                };
            Ok((
                codes("SELECT code FROM village ORDER BY code")?,
                codes("SELECT code FROM village WHERE station = '441303006' ORDER BY code")?,
            ))
        })
        .expect("places");
    let start = Instant::now();
    write_district(&db, &all, count);
    println!(
        "{count} persons in {} villages written in {:.1} s; the station has {} villages",
        all.len(),
        start.elapsed().as_secs_f64(),
        station.len()
    );

    let runs = if full { 9 } else { 3 };
    let one_village = station[3].clone();
    let baseline = time(runs, || {
        db.call_blocking(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT entity, label FROM summary WHERE village = ?1 AND kind = 'person' LIMIT 51",
            )?;
            let rows: Vec<(String, String)> = stmt
                .query_map([&one_village], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            assert!(!rows.is_empty(), "the village has persons");
            Ok(())
        })
        .expect("baseline");
    });
    let person = || Filter {
        kind: Some("person".into()),
        ..Default::default()
    };
    let dated = || Filter {
        from: Some("2026-03-01".into()),
        to: Some("2026-03-05".into()),
        ..person()
    };
    let cases: Vec<(&str, Filter, u32)> = vec![
        ("station's persons, page 1", person(), 0),
        ("station's persons, page 101", person(), 100),
        (
            "pending review, page 1",
            Filter {
                status: Some("pending".into()),
                ..Default::default()
            },
            0,
        ),
        (
            "one village, page 101",
            Filter {
                village: Some(one_village),
                ..person()
            },
            100,
        ),
        (
            "ID number prefix (10 digits)",
            Filter {
                query: Some("4413031990".into()),
                ..person()
            },
            0,
        ),
        (
            "name prefix (2 characters)",
            Filter {
                query: Some("王芳".into()),
                ..Default::default()
            },
            0,
        ),
        ("capture dates, 5 days, page 1", dated(), 0),
        ("capture dates, 5 days, past the end", dated(), 100),
    ];
    println!("\n| query (one station, {count} persons in the district) | median | × baseline |");
    println!("| --- | ---: | ---: |");
    let row = |label: &str, d: Duration| {
        println!(
            "| {label} | {:.2} ms | {:.1} |",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() / baseline.as_secs_f64()
        );
    };
    row(
        "baseline: plain indexed SELECT, one page of one village",
        baseline,
    );
    for (label, filter, page) in &cases {
        let d = time(runs, || {
            let rows = db
                .call_blocking(|c| records::list(c, &station, filter, 51, page * 50))
                .expect("list");
            assert!(rows.len() <= 51);
        });
        row(label, d);
    }
    let dashboard = time(runs, || {
        db.call_blocking(|c| {
            baylink_server::store::dashboard::counts(c, &station)?;
            dashboard::progress(c, &station)?;
            dashboard::captures_per_day(c, &station, "2026-10-30")?;
            Ok(())
        })
        .expect("dashboard");
    });
    row("dashboard (counts, progress, captures per day)", dashboard);
    let dups = time(runs.min(3), || {
        db.call_blocking(|c| duplicates::candidates(c, &station, 200))
            .expect("duplicates");
    });
    row("duplicate candidates (whole station)", dups);
}
