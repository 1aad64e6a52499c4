//! `baylink-bench retention [--scale F]`: the district's database before and after a simulated
//! year, and after a compaction. Every village's officer registers the village, then, month by
//! month for twelve months, edits a twentieth of its persons (phone, occupation), deletes a
//! fiftieth with their residences (people who moved away) and a hundredth of its vehicles,
//! through the store's push path as phones would; then `compact` runs with every phone idle, and
//! the database is vacuumed as an operator's maintenance would.

use std::path::Path;

use baylink_server::store::audit::Actor;
use baylink_server::store::{Db, now_ms, push};
use baylink_sync::{Change, ChangeId, Clock, NodeId, Stamp};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::district::{self, Officer};

/// What the database holds at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Bytes in use (pages not on the free list).
    pub used: u64,
    /// Records (entity rows), live or not.
    pub records: i64,
    /// History rows (one per accepted action).
    pub history: i64,
}

/// The figures of a simulated year.
#[derive(Clone, Copy, Debug)]
pub struct Year {
    /// The district registered (vacuumed).
    pub before: Size,
    /// After the year's edits and deletions.
    pub year: Size,
    /// After the compaction.
    pub compacted: Size,
    /// After a vacuum.
    pub vacuumed: Size,
    /// What the compaction removed.
    pub done: baylink_server::store::retention::Compacted,
    /// Seconds the year's pushes and the compaction took.
    pub seconds: (f64, f64),
}

fn size(db: &Db) -> Size {
    db.call_blocking(|c| {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        let pages: i64 = c.query_row("PRAGMA page_count", (), |r| r.get(0))?;
        let free: i64 = c.query_row("PRAGMA freelist_count", (), |r| r.get(0))?;
        let page: i64 = c.query_row("PRAGMA page_size", (), |r| r.get(0))?;
        let records = c.query_row("SELECT count(*) FROM entity", (), |r| r.get(0))?;
        let history = c.query_row("SELECT count(*) FROM history", (), |r| r.get(0))?;
        Ok(Size {
            used: ((pages - free) * page) as u64,
            records,
            history,
        })
    })
    .expect("size")
}

/// One officer's phone: its counter and clock, writing actions as a phone's outbox sends them.
struct Phone<'a> {
    officer: &'a Officer,
    node: NodeId,
    counter: u64,
    clock: Clock,
}

impl Phone<'_> {
    /// One action on a record: its fields, one stamp.
    fn action(&mut self, kind: &str, entity: &str, fields: &[(&str, Value)]) -> Vec<Change> {
        let stamp = Stamp::new(self.clock.tick(now_ms()), self.node);
        fields
            .iter()
            .map(|(field, value)| {
                self.counter += 1;
                Change {
                    id: ChangeId {
                        device: self.node,
                        counter: self.counter,
                    },
                    kind: kind.to_owned(),
                    entity: Uuid::parse_str(entity).expect("an id"),
                    field: (*field).to_owned(),
                    value: value.clone(),
                    stamp,
                    base: None,
                }
            })
            .collect()
    }
}

/// Runs the simulated year at `scale` in `dir` and prints its figures.
pub fn main(scale: f64, dir: &Path) {
    let y = year(scale, dir);
    let mib = |s: Size| s.used as f64 / 1_048_576.0;
    println!("retention at scale {scale} (64 villages)");
    println!(
        "  registered (vacuumed): {:8.1} MiB, {:>9} records, {:>9} history rows",
        mib(y.before),
        y.before.records,
        y.before.history
    );
    println!(
        "  after a year:          {:8.1} MiB, {:>9} records, {:>9} history rows ({:.1} s)",
        mib(y.year),
        y.year.records,
        y.year.history,
        y.seconds.0
    );
    println!(
        "  compacted:             {:8.1} MiB, {:>9} records ({} tombstones, {} purge notes removed; {:.1} s)",
        mib(y.compacted),
        y.compacted.records,
        y.done.tombstones,
        y.done.purge_notes,
        y.seconds.1
    );
    println!(
        "  and vacuumed:          {:8.1} MiB (the history kept: {} rows)",
        mib(y.vacuumed),
        y.vacuumed.history
    );
}

/// Registers the district at `scale` in `dir`, runs its year and compacts it.
pub fn year(scale: f64, dir: &Path) -> Year {
    let (db, officers) = district::create(&dir.join("server"), 0);
    let counts = crate::counts(scale);
    let mut phones = Vec::new();
    for (i, officer) in officers.iter().enumerate() {
        let changes = district::changes_of(i, officer, counts);
        district::push_all(&db, &officer.caller, &changes, district::OLD_BATCH);
        phones.push(Phone {
            officer,
            node: officer.caller.device.parse().expect("node"),
            counter: changes.iter().map(|c| c.id.counter).max().unwrap_or(0),
            clock: Clock::default(),
        });
    }
    // Vacuumed first, so that the figures compare like with like (a bulk registration leaves
    // pages half full).
    db.call_blocking(|c| Ok(c.execute_batch("VACUUM")?))
        .expect("vacuum");
    let before = size(&db);
    let started = std::time::Instant::now();
    for month in 0..12 {
        for phone in &mut phones {
            let village = phone.officer.village.clone();
            let (persons, vehicles): (Vec<String>, Vec<String>) = db
                .call_blocking(|c| {
                    let ids = |kind: &str| {
                        c.prepare(
                            "SELECT id FROM entity WHERE village = ?1 AND kind = ?2
                             AND NOT (state LIKE '%\"deleted\"%') ORDER BY id",
                        )?
                        .query_map([village.as_str(), kind], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                    };
                    Ok((ids("person")?, ids("vehicle")?))
                })
                .expect("the village's records");
            let mut changes = Vec::new();
            for (n, person) in persons.iter().enumerate() {
                if (n + month) % 20 == 0 {
                    changes.extend(phone.action(
                        "person",
                        person,
                        &[
                            ("phone", json!(format!("139{:08}", n * 7 + month))),
                            (
                                "occupation",
                                json!(["工人", "厨师", "司机"][(n + month) % 3]),
                            ),
                        ],
                    ));
                } else if (n + 3 * month) % 50 == 1 {
                    let residences: Vec<String> = db
                        .call_blocking(|c| {
                            c.prepare(
                                "SELECT entity FROM link WHERE field = 'person' AND target = ?1",
                            )?
                            .query_map([person.as_str()], |r| r.get(0))?
                            .collect::<Result<Vec<String>, _>>()
                            .map_err(Into::into)
                        })
                        .expect("residences");
                    for residence in residences {
                        changes.extend(phone.action(
                            "residence",
                            &residence,
                            &[("deleted", json!(true))],
                        ));
                    }
                    changes.extend(phone.action("person", person, &[("deleted", json!(true))]));
                }
            }
            for (n, vehicle) in vehicles.iter().enumerate() {
                if (n + 7 * month) % 100 == 2 {
                    changes.extend(phone.action("vehicle", vehicle, &[("deleted", json!(true))]));
                }
            }
            for batch in changes.chunks(district::OLD_BATCH) {
                db.call_blocking(|c| push::push(c, &phone.officer.caller, batch, now_ms(), 60_000))
                    .expect("push");
            }
        }
    }
    let year = size(&db);
    let year_took = started.elapsed();
    let started = std::time::Instant::now();
    let done = db
        .call_blocking(|c| {
            baylink_server::store::retention::compact(c, Actor::Operator, 86_400_000, now_ms() + 2)
        })
        .expect("compaction");
    let compact_took = started.elapsed();
    let compacted = size(&db);
    db.call_blocking(|c| Ok(c.execute_batch("VACUUM")?))
        .expect("vacuum");
    let vacuumed = size(&db);
    Year {
        before,
        year,
        compacted,
        vacuumed,
        done,
        seconds: (year_took.as_secs_f64(), compact_took.as_secs_f64()),
    }
}
