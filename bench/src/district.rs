//! The district on the server: Daya Bay's places, one officer (and phone) per village, and the
//! officers' registrations pushed through the store's push path in phone-sized batches.

use std::path::Path;

pub use baylink_server::demo::officer_username;

use baylink_server::demo::{Counts, village_changes};
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::audit::Actor;
use baylink_server::store::caller::Caller;
use baylink_server::store::conn::Conn;
use baylink_server::store::devices;
use baylink_server::store::{Db, now_ms};
use baylink_sync::wire::FIRST_PUSH_CHANGES;
use baylink_sync::{Change, Clock, NodeId};
use uuid::Uuid;

/// Changes per push, at most, as a phone of protocol 2 sent them (`--push-changes 500`
/// measures the server so); a current phone sends up to [`mobile_core::sync::PUSH_BATCH`].
pub const OLD_BATCH: usize = 500;
/// The password of every account the benchmark creates.
pub const PASSWORD: &str = "bench-password";

/// One village's officer on the server.
#[derive(Clone, Debug)]
pub struct Officer {
    /// The village's code.
    pub village: String,
    /// The village's name.
    pub village_name: String,
    /// Username ([`officer_username`]).
    pub username: String,
    /// The officer's phone as the server knows it.
    pub caller: Caller,
}

/// A server store holding Daya Bay's places and one officer per village (with a registered
/// phone), plus `extra` officers (`d000`, `d001`, …) spread over the villages without phones.
/// Every account's password is [`PASSWORD`].
pub fn create(dir: &Path, extra: usize) -> (Db, Vec<Officer>) {
    create_on(dir, extra, None)
}

/// [`create`] with the server's data in the PostgreSQL database `database` names, when set.
pub fn create_on(dir: &Path, extra: usize, database: Option<&str>) -> (Db, Vec<Officer>) {
    let mut config = baylink_server::Config::new(dir);
    config.database = database.map(str::to_owned);
    let (_, db) = baylink_server::AppState::open(config).expect("server data directory");
    let hash = baylink_server::auth::password::hash(PASSWORD).expect("hash");
    let officers = db
        .call_blocking(|c| {
            baylink_server::demo::seed_places(c)?;
            let villages: Vec<(String, String, String)> = c
                .prepare("SELECT code, name, station FROM village ORDER BY code")?
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let officer = |c: &Conn<'_>, username: &str, village: &str, station: &str| {
                let new = NewAccount {
                    username: username.to_owned(),
                    display_name: username.to_owned(),
                    role: Role::Officer,
                    station: Some(station.to_owned()),
                    password_hash: hash.clone(),
                    villages: vec![village.to_owned()],
                };
                accounts::create_account(c, Actor::Operator, &new, 0)
            };
            let mut out = Vec::new();
            for (i, (code, name, station)) in villages.iter().enumerate() {
                let username = officer_username(code);
                let account = officer(c, &username, code, station)?;
                let device = NodeId(Uuid::from_u128(i as u128 + 1));
                devices::register_device(c, &device.to_string(), account, "bench", 0)?;
                out.push(Officer {
                    village: code.clone(),
                    village_name: name.clone(),
                    username,
                    caller: Caller {
                        account,
                        role: Role::Officer,
                        device: device.to_string(),
                        villages: vec![code.clone()],
                    },
                });
            }
            for d in 0..extra {
                let (code, _, station) = &villages[d % villages.len()];
                officer(c, &extra_username(d), code, station)?;
            }
            Ok(out)
        })
        .expect("places and officers");
    (db, officers)
}

/// The username of the `d`-th extra officer, and the village index it works in is `d % 64`.
pub fn extra_username(d: usize) -> String {
    format!("d{d:03}")
}

/// The changes of the `index`-th village's officer, registering `counts`.
pub fn changes_of(index: usize, officer: &Officer, counts: Counts) -> Vec<Change> {
    let node: NodeId = officer.caller.device.parse().expect("node id");
    let mut clock = Clock::default();
    village_changes(
        index as u64,
        &officer.village,
        &officer.village_name,
        &officer.username,
        node,
        &mut clock,
        now_ms(),
        counts,
    )
}

/// Phone-sized batches of whole records, as a phone's outbox gives them in one sync (a record's
/// changes are contiguous: each is one capture): up to `most` changes — the first push at most
/// [`FIRST_PUSH_CHANGES`], what every server takes, as a phone sends before the server's answer
/// says more — and [`mobile_core::sync::PUSH_BYTES`] of JSON (counted as the phone counts it);
/// a record alone whatever its size.
pub fn batches(changes: &[Change], most: usize) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let (mut start, mut record_start, mut bytes, mut record_bytes) = (0, 0, 0, 0);
    for i in 0..changes.len() {
        record_bytes += baylink_sync::wire::approximate_bytes(&changes[i]);
        let boundary = i + 1 == changes.len() || changes[i + 1].entity != changes[i].entity;
        if !boundary {
            continue;
        }
        let end = i + 1;
        let most = match out.is_empty() {
            true => most.min(FIRST_PUSH_CHANGES),
            false => most,
        };
        if record_start > start
            && (end - start > most || bytes + record_bytes > mobile_core::sync::PUSH_BYTES)
        {
            out.push(&changes[start..record_start]);
            start = record_start;
            bytes = 0;
        }
        bytes += record_bytes;
        record_bytes = 0;
        record_start = end;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// Pushes a device's changes in phone-sized batches of up to `most` changes ([`batches`]), as
/// the server applies a push (with those of other devices waiting beside it, in one commit);
/// every change must be accepted.
pub fn push_all(db: &Db, caller: &Caller, changes: &[Change], most: usize) {
    for batch in batches(changes, most) {
        let results = db
            .apply_push_blocking(caller.clone(), batch.to_vec(), 60_000)
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

#[cfg(test)]
mod tests {
    use super::*;
    use baylink_sync::{ChangeId, Hlc, Stamp};

    /// `records` records of `fields` changes each, every value `value_bytes` long.
    fn changes(records: usize, fields: usize, value_bytes: usize) -> Vec<Change> {
        let node = NodeId(Uuid::from_u128(7));
        let mut out = Vec::new();
        for r in 0..records {
            let entity = Uuid::from_u128(r as u128 + 1);
            for f in 0..fields {
                let counter = out.len() as u64 + 1;
                out.push(Change {
                    id: ChangeId {
                        device: node,
                        counter,
                    },
                    entity,
                    kind: "person".into(),
                    field: format!("f{f}"),
                    value: serde_json::Value::String("x".repeat(value_bytes)),
                    stamp: Stamp::new(Hlc::new(counter, 0), node),
                    base: None,
                });
            }
        }
        out
    }

    /// Every batch holds whole records, in order, none lost.
    fn whole(all: &[Change], out: &[&[Change]]) {
        let joined: Vec<&Change> = out.iter().flat_map(|b| b.iter()).collect();
        assert_eq!(joined.len(), all.len());
        assert!(joined.iter().zip(all).all(|(a, b)| std::ptr::eq(*a, b)));
        for pair in out.windows(2) {
            assert_ne!(pair[0].last().unwrap().entity, pair[1][0].entity);
        }
    }

    fn sizes(out: &[&[Change]]) -> Vec<usize> {
        out.iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batches_hold_whole_records_up_to_the_changes_given() {
        let all = changes(10, 15, 8);
        whole(&all, &batches(&all, 100));
        // Six records of 15 fit in 100, or in 90 exactly; in 89 only five.
        assert_eq!(sizes(&batches(&all, 100)), [90, 60]);
        assert_eq!(sizes(&batches(&all, 90)), [90, 60]);
        assert_eq!(sizes(&batches(&all, 89)), [75, 75]);
        // A record larger than a push goes whole, alone.
        let out = batches(&all, 10);
        whole(&all, &out);
        assert_eq!(sizes(&out), [15; 10]);
    }

    #[test]
    fn the_first_push_holds_what_every_server_takes() {
        // 12,000 records of one change: the first push cut at 5,000, the next not.
        let all = changes(12_000, 1, 8);
        let out = batches(&all, 20_000);
        whole(&all, &out);
        assert_eq!(sizes(&out), [5_000, 7_000]);
        assert_eq!(sizes(&batches(&all, 3_000)), [3_000; 4]);
    }

    #[test]
    fn batches_end_at_the_bytes_a_phone_sends() {
        // 15 values of 100 KB a record: about 1.5 MB each, so four to a push of 6 MiB.
        let all = changes(9, 15, 100_000);
        let out = batches(&all, 20_000);
        whole(&all, &out);
        for batch in &out {
            let bytes: usize = batch
                .iter()
                .map(baylink_sync::wire::approximate_bytes)
                .sum();
            assert!(bytes <= mobile_core::sync::PUSH_BYTES, "{bytes}");
        }
        assert_eq!(sizes(&out), [60, 60, 15]);
        // Records whose bytes come to the limit exactly share a push; a byte more, they do not.
        let exact = |extra: usize| {
            let mut all = changes(2, 1, 8);
            let envelope = baylink_sync::wire::approximate_bytes(&all[0]) - 10;
            let value = mobile_core::sync::PUSH_BYTES / 2 - envelope - 2;
            all[0].value = serde_json::Value::String("x".repeat(value));
            all[1].value = serde_json::Value::String("x".repeat(value + extra));
            sizes(&batches(&all, 20_000))
        };
        assert_eq!(exact(0), [2]);
        assert_eq!(exact(1), [1, 1]);
        // A record larger than a push's bytes goes whole, alone.
        let mut all = changes(3, 2, 8);
        all[2].value = serde_json::Value::String("x".repeat(mobile_core::sync::PUSH_BYTES));
        let out = batches(&all, 20_000);
        whole(&all, &out);
        assert_eq!(sizes(&out), [2, 2, 2]);
    }
}
