//! Device search at 100,000 records: ID-number prefix, name prefix and plate through the phone's
//! store, against one plain indexed SELECT of the same prefix on a plain table.

use std::time::Instant;

use baylink_server::store::rusqlite::{Connection, params};

use crate::Figure;

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
pub fn figures(records: u64) -> Vec<Figure> {
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
