//! Records a device holds but may no longer: found by the sync simulation, pinned here; and the
//! villages' feeds a pull merges. Each scenario drives the store's push and pull as a device
//! would, including a pull whose answer is lost (the device presents its old cursor again).

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::caller::Caller;
use baylink_server::store::pull::Page;
use baylink_server::store::rusqlite::Connection;
use baylink_server::store::{Db, now_ms};
use baylink_server::store::{devices, pull, push};
use baylink_sync::wire::{ChangeResult, ChangeStatus, Cursor, FieldValue};
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

const A: &str = "441303006001";
const B: &str = "441303006002";

struct Officer {
    name: &'static str,
    node: NodeId,
    counter: u64,
    cursor: Option<String>,
}

fn setup() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("baylink.db")).unwrap();
    db.call_blocking(|c| {
        baylink_server::demo::seed_places(c)?;
        for (name, village, n) in [("oa", A, 1u128), ("ob", B, 2)] {
            let villages = [village.to_owned()];
            let new = NewAccount {
                username: name,
                display_name: name,
                role: Role::Officer,
                station: Some("441303006"),
                password_hash: "-",
                villages: &villages,
            };
            let id = accounts::create_account(c, &new, 0)?;
            devices::register_device(c, &NodeId(Uuid::from_u128(n)).to_string(), id, "p", 0)?;
        }
        Ok(())
    })
    .unwrap();
    (db, dir)
}

fn caller(conn: &Connection, officer: &Officer) -> Caller {
    let account = accounts::account_by_username(conn, officer.name)
        .unwrap()
        .unwrap();
    Caller {
        account: account.id,
        role: account.role,
        device: officer.node.to_string(),
        villages: accounts::villages_of(conn, &account).unwrap(),
    }
}

fn push(
    db: &Db,
    officer: &mut Officer,
    entity: Uuid,
    hlc_ms: u64,
    fields: &[(&str, Value)],
) -> Vec<ChangeResult> {
    push_kind(db, officer, "person", entity, hlc_ms, fields)
}

fn push_kind(
    db: &Db,
    officer: &mut Officer,
    kind: &str,
    entity: Uuid,
    hlc_ms: u64,
    fields: &[(&str, Value)],
) -> Vec<ChangeResult> {
    let stamp = Stamp::new(Hlc::new(hlc_ms, 0), officer.node);
    let changes: Vec<Change> = fields
        .iter()
        .map(|(field, value)| {
            officer.counter += 1;
            Change {
                id: ChangeId {
                    device: officer.node,
                    counter: officer.counter,
                },
                kind: kind.into(),
                entity,
                field: (*field).into(),
                value: value.clone(),
                stamp,
                base: None,
                extra: Default::default(),
            }
        })
        .collect();
    db.call_blocking(|c| {
        let caller = caller(c, officer);
        push::push(c, &caller, &changes, now_ms(), 60_000)
    })
    .unwrap()
}

/// One pull page; `deliver` false loses the answer (the cursor stays where it was).
fn pull(db: &Db, officer: &mut Officer, limit: u32, deliver: bool) -> Page {
    let cursor = officer.cursor.clone().map(Cursor);
    let page = db
        .call_blocking(|c| {
            let caller = caller(c, officer);
            let from = pull::parse_cursor(cursor.as_ref())?;
            pull::pull(c, &caller, from, limit)
        })
        .unwrap();
    if deliver {
        officer.cursor = Some(page.next.0.clone());
    }
    page
}

/// Pulls pages, each delivered, until none is left: every value sent, in order.
fn pull_all(db: &Db, officer: &mut Officer, limit: u32) -> Vec<FieldValue<Box<RawValue>>> {
    let mut sent = Vec::new();
    loop {
        let page = pull(db, officer, limit, true);
        assert!(
            page.values.len() <= limit as usize,
            "{} values",
            page.values.len()
        );
        sent.extend(page.values);
        if !page.more {
            return sent;
        }
    }
}

/// A person with a passport, under the id a phone derives from it.
fn person(village: &str, n: u128) -> (Uuid, Vec<(&'static str, Value)>) {
    let fields = vec![
        ("village", json!(village)),
        ("id_type", json!("passport")),
        ("id_number", json!(format!("E{n:07}"))),
        ("name", json!(format!("P{n}"))),
    ];
    (natural(baylink_domain::EntityKind::Person, &fields), fields)
}

/// The id a phone derives for a record of these fields.
fn natural(kind: baylink_domain::EntityKind, fields: &[(&str, Value)]) -> Uuid {
    let values: baylink_domain::Fields = fields
        .iter()
        .map(|(f, v)| ((*f).to_owned(), v.clone()))
        .collect();
    baylink_domain::natural_id(kind, &values).unwrap()
}

/// A whole house: its required fields.
fn house_fields(village: &str, address: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("village", json!(village)),
        ("address", json!(address)),
        ("use", json!("rental")),
        ("status", json!("in_use")),
    ]
}

fn officer(name: &'static str, n: u128) -> Officer {
    Officer {
        name,
        node: NodeId(Uuid::from_u128(n)),
        counter: 0,
        cursor: None,
    }
}

fn assign(db: &Db, name: &str, villages: &[&str]) {
    let villages: Vec<String> = villages.iter().map(|v| (*v).to_owned()).collect();
    db.call_blocking(|c| accounts::assign_villages(c, name, &villages))
        .unwrap();
}

#[test]
fn a_village_given_then_taken_before_its_records_all_arrived_is_dropped_from_the_device() {
    let (db, _dir) = setup();
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let mut t = now_ms();
    for n in 0..3 {
        let (id, fields) = person(A, n);
        t += 1;
        push(&db, &mut oa, id, t, &fields);
    }
    while pull(&db, &mut ob, 100, true).more {}
    // B's officer is given A, and receives part of it...
    assign(&db, "ob", &[A, B]);
    let first = pull(&db, &mut ob, 3, true);
    assert!(first.more && !first.values.is_empty());
    // ...then A is taken away again before the rest arrives: the next page says drop A's records,
    // and says it again when that answer is lost.
    assign(&db, "ob", &[B]);
    let lost = pull(&db, &mut ob, 100, false);
    let again = pull(&db, &mut ob, 100, true);
    for page in [&lost, &again] {
        for n in 0..3 {
            assert!(page.purged.contains(&person(A, n).0), "{:?}", page.purged);
        }
    }
    assert!(again.values.is_empty());
}

#[test]
fn registering_a_person_known_elsewhere_without_a_residence_here_changes_nothing_of_her() {
    let (db, _dir) = setup();
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let (id, fields) = person(B, 7);
    let t = now_ms();
    // B's officer registers her in B; A's officer, offline, registers her in A later by the
    // clock. Nothing brings her to A (no residence in A names her): refused, she stays B's.
    push(&db, &mut ob, id, t, &fields);
    let (_, mut later) = person(A, 7);
    later.push(("phone", json!("13800138000")));
    let results = push(&db, &mut oa, id, t + 60_000, &later);
    assert!(
        results
            .iter()
            .all(|r| r.status == ChangeStatus::Refused && r.code.as_deref() == Some("out_of_scope")),
        "{results:?}"
    );
    let (village, phones): (String, i64) = db
        .call_blocking(|c| {
            Ok(c.query_row(
                "SELECT village, (SELECT count(*) FROM field WHERE entity = ?1 AND field = 'phone')
                 FROM entity WHERE id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!((village.as_str(), phones), (B, 0));
    let page = pull(&db, &mut oa, 100, true);
    assert!(page.values.iter().all(|v| v.entity != id));
}

#[test]
fn records_captured_in_a_village_taken_away_before_the_next_pull_are_dropped() {
    let (db, _dir) = setup();
    let mut ob = officer("ob", 2);
    while pull(&db, &mut ob, 100, true).more {}
    assign(&db, "ob", &[A, B]);
    // Captured in A and pushed before any pull brought A...
    let (id, fields) = person(A, 9);
    push(&db, &mut ob, id, now_ms(), &fields);
    // ...and A taken away: the phone holds a record of A that no pull ever sent it.
    assign(&db, "ob", &[B]);
    let lost = pull(&db, &mut ob, 100, false);
    assert!(lost.purged.contains(&id));
    let page = pull(&db, &mut ob, 100, true);
    assert!(page.purged.contains(&id), "told again after a lost answer");
    let after = pull(&db, &mut ob, 100, true);
    assert!(after.purged.is_empty(), "once applied, not told again");
}

#[test]
fn a_pull_over_two_villages_merges_their_feeds_in_order_each_value_once() {
    let (db, _dir) = setup();
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    // B's officer is given A too, and is up to date: what follows comes through the feeds.
    assign(&db, "ob", &[A, B]);
    pull_all(&db, &mut ob, 3);
    let mut t = now_ms();
    let mut order = Vec::new();
    for n in 0..4 {
        for (officer, village) in [(&mut oa, A), (&mut ob, B)] {
            let (id, fields) = person(village, n * 2 + u128::from(village == B));
            t += 1;
            push(&db, officer, id, t, &fields);
            order.push(id);
        }
    }
    // A person of A who lives in a house of B: in both villages' feeds.
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let fields = house_fields(B, "霞涌1巷1号");
    push_kind(&db, &mut ob, "house", house, t + 1, &fields);
    let fields = [
        ("village", json!(B)),
        ("person", json!(order[0].to_string())),
        ("house", json!(house.to_string())),
        ("moved_in", json!("2026-01-01")),
        ("relation", json!("tenant")),
    ];
    let residence = natural(baylink_domain::EntityKind::Residence, &fields);
    push_kind(&db, &mut ob, "residence", residence, t + 2, &fields);
    let everything = |officer: &mut Officer| -> Vec<(Uuid, String)> {
        let sent = pull_all(&db, officer, 3);
        sent.into_iter().map(|v| (v.entity, v.field)).collect()
    };
    let values: i64 = db
        .call_blocking(|c| Ok(c.query_row("SELECT count(*) FROM field", [], |r| r.get(0))?))
        .unwrap();
    // A fresh phone of B's officer, sent a snapshot of both villages, and the up-to-date one,
    // sent the feeds: each value once, every value of both villages.
    let fresh = everything(&mut officer("ob", 2));
    let seen = everything(&mut ob);
    for sent in [&fresh, &seen] {
        let mut once = sent.clone();
        once.sort();
        once.dedup();
        assert_eq!(once.len(), sent.len(), "each value once: {sent:?}");
        assert_eq!(sent.len() as i64, values, "every value of both villages");
    }
    // Records arrive in the order they were written, whichever village they are in; the person
    // who moved into B was resent whole then, so comes after.
    let mut first_seen: Vec<Uuid> = Vec::new();
    for (entity, _) in &seen {
        if !first_seen.contains(entity) {
            first_seen.push(*entity);
        }
    }
    let moved = order.remove(0);
    first_seen.retain(|e| order.contains(e) || *e == moved);
    assert_eq!(first_seen.last(), Some(&moved));
    first_seen.pop();
    assert_eq!(first_seen, order);
}

#[test]
fn a_record_that_left_a_village_is_no_longer_in_its_feed() {
    let (db, _dir) = setup();
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let everything = |officer: &mut Officer| pull_all(&db, officer, 100);
    // A phone of each village, up to date before: what follows reaches them through the feeds
    // (a fresh phone is sent a snapshot of its villages' records instead).
    let (mut phone_a, mut phone_b) = (officer("oa", 1), officer("ob", 2));
    everything(&mut phone_a);
    everything(&mut phone_b);
    let t = now_ms();
    // A person of B lives in a house of A, so is in both villages; then moves out.
    let (person, fields) = person(B, 1);
    push(&db, &mut ob, person, t, &fields);
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let fields = house_fields(A, "澳头1巷1号");
    push_kind(&db, &mut oa, "house", house, t + 1, &fields);
    let fields = [
        ("village", json!(A)),
        ("person", json!(person.to_string())),
        ("house", json!(house.to_string())),
        ("moved_in", json!("2026-01-01")),
        ("relation", json!("tenant")),
    ];
    let residence = natural(baylink_domain::EntityKind::Residence, &fields);
    push_kind(&db, &mut oa, "residence", residence, t + 2, &fields);
    let moved = [("moved_out", json!("2026-11-01"))];
    push_kind(&db, &mut oa, "residence", residence, t + 3, &moved);
    // A's phone gets the house and the residence, nothing of the person; B's the person, whole.
    let sent = everything(&mut phone_a);
    assert!(sent.iter().all(|v| v.entity != person), "{sent:?}");
    assert!(sent.iter().any(|v| v.entity == house && v.kind == "house"));
    assert!(
        sent.iter()
            .any(|v| v.entity == residence && v.kind == "residence" && v.field == "moved_out")
    );
    let sent = everything(&mut phone_b);
    let values: usize = db
        .call_blocking(|c| {
            let n: i64 = c.query_row(
                "SELECT count(*) FROM field WHERE entity = ?1",
                [person.to_string()],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
        .unwrap();
    assert_eq!(sent.iter().filter(|v| v.entity == person).count(), values);
}

#[test]
fn a_fresh_phone_paging_a_snapshot_while_its_village_changes_ends_with_the_village_as_it_is() {
    let (db, _dir) = setup();
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let t = now_ms();
    // In id order: a house of A, a residence in it of a lodger from B, the lodger, ten persons.
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let (lodger, fields) = person(B, 0);
    push(&db, &mut ob, lodger, t, &fields);
    let fields = house_fields(A, "澳头1巷1号");
    push_kind(&db, &mut oa, "house", house, t + 1, &fields);
    let fields = [
        ("village", json!(A)),
        ("person", json!(lodger.to_string())),
        ("house", json!(house.to_string())),
        ("moved_in", json!("2026-01-01")),
        ("relation", json!("tenant")),
    ];
    let residence = natural(baylink_domain::EntityKind::Residence, &fields);
    push_kind(&db, &mut oa, "residence", residence, t + 2, &fields);
    for n in 10..20 {
        let (id, fields) = person(A, n);
        push(&db, &mut oa, id, t + 3, &fields);
    }
    let mut phone = officer("oa", 1);
    let mut held: BTreeMap<(Uuid, String), (Value, Stamp)> = Default::default();
    let apply = |held: &mut BTreeMap<_, _>, page: &Page| {
        assert!(page.values.len() <= 24, "{} values", page.values.len());
        for v in &page.values {
            let key = (v.entity, v.field.clone());
            if held.get(&key).is_none_or(|(_, s)| *s < v.stamp) {
                held.insert(key, (serde_json::from_str(v.value.get()).unwrap(), v.stamp));
            }
        }
        held.retain(|(entity, _), _| !page.purged.contains(entity));
    };
    // The first page: the house, the residence, the lodger (seven, eight and eight values with
    // the server's) and a field of the first person.
    let first = pull(&db, &mut phone, 24, true);
    assert!(
        first.more && first.next.0.starts_with('b'),
        "{:?}",
        first.next
    );
    apply(&mut held, &first);
    assert!(held.contains_key(&(lodger, "name".to_owned())));
    // Meanwhile: the lodger moves out (she leaves A), the house's address is corrected, the
    // first person and the last are renamed, and a person is registered whose id comes before
    // where the snapshot stands.
    push_kind(
        &db,
        &mut oa,
        "residence",
        residence,
        t + 4,
        &[("moved_out", json!("2026-11-01"))],
    );
    push_kind(
        &db,
        &mut oa,
        "house",
        house,
        t + 5,
        &[("address", json!("澳头1巷2号"))],
    );
    for n in [10, 19] {
        push(
            &db,
            &mut oa,
            person(A, n).0,
            t + 6,
            &[("name", json!(format!("改{n}")))],
        );
    }
    let (late, fields) = person(A, 5);
    push(&db, &mut oa, late, t + 7, &fields);
    loop {
        let page = pull(&db, &mut phone, 24, true);
        apply(&mut held, &page);
        if !page.more {
            break;
        }
    }
    let expected: BTreeMap<(Uuid, String), Value> = db
        .call_blocking(|c| {
            let mut stmt = c.prepare(
                "SELECT f.entity, f.field, f.value FROM field f
                 JOIN scope s ON s.entity = f.entity WHERE s.village = ?1",
            )?;
            let rows = stmt.query_map([A], |r| {
                let (entity, field, value): (String, String, String) =
                    (r.get(0)?, r.get(1)?, r.get(2)?);
                Ok((entity, field, value))
            })?;
            Ok(rows
                .map(|r| {
                    let (entity, field, value) = r.unwrap();
                    let value: Value = serde_json::from_str(&value).unwrap();
                    ((Uuid::parse_str(&entity).unwrap(), field), value)
                })
                .collect())
        })
        .unwrap();
    let got: BTreeMap<(Uuid, String), Value> = held.into_iter().map(|(k, (v, _))| (k, v)).collect();
    assert_eq!(got, expected);
    assert!(got.keys().all(|(entity, _)| *entity != lodger));
    assert_eq!(got[&(late, "name".to_owned())], json!("P5"));
    assert_eq!(got[&(house, "address".to_owned())], json!("澳头1巷2号"));
    assert_eq!(got[&(person(A, 19).0, "name".to_owned())], json!("改19"));
}

#[test]
fn snapshot_cursors_are_read_back_and_forged_ones_refused() {
    let parse = |text: &str| pull::parse_cursor(Some(&Cursor(text.to_owned())));
    let id = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let position = parse(&format!("b12.7:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (12, Some(7)));
    // An earlier server's snapshot cursor, in record order, starts the snapshot again.
    let position = parse(&format!("b12.{id}.id_number:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (12, Some(0)));
    // An earlier server's restart cursor is a feed position.
    let position = parse(&format!("r9:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (9, None));
    for forged in [
        format!("b12.{id}:{A}"),
        format!("b12.not-an-id.name:{A}"),
        format!("b12.{id}.name'--:{A}"),
        format!("b12.{id}.:{A}"),
        format!("b-1.{id}.name:{A}"),
        format!("b12.13:{A}"),
        format!("b12.+3:{A}"),
        format!("b12.-3:{A}"),
        format!("b12.:{A}"),
        format!("b12.3.4.5:{A}"),
    ] {
        assert!(parse(&forged).is_err(), "{forged}");
    }
}

/// The store's contract under concurrency: pushes from several devices at once, while a device
/// pulls page after page from reader snapshots as the server does (bookkeeping on the writer),
/// end with the puller having every value exactly once — sequence numbers become visible in
/// commit order, so a pull never skips a value committed late, and never sends one twice.
#[test]
fn concurrent_pushes_and_a_device_pulling_meanwhile_see_every_value_exactly_once() {
    let (db, _dir) = setup();
    // Three more phones of oa push at once.
    db.call_blocking(|c| {
        let account = accounts::account_by_username(c, "oa")?.unwrap().id;
        for n in 10..13u128 {
            devices::register_device(c, &NodeId(Uuid::from_u128(n)).to_string(), account, "p", 0)?;
        }
        Ok(())
    })
    .unwrap();
    let mut reader = officer("oa", 1);
    // The reader has bootstrapped already: what follows comes from the villages' feeds.
    let (id, fields) = person(A, 999_999);
    push(&db, &mut reader, id, now_ms(), &fields);
    let mut seen = pull_all(&db, &mut reader, 50);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (10..13u128)
        .map(|n| {
            let (db, done) = (db.clone(), done.clone());
            std::thread::spawn(move || {
                let mut phone = officer("oa", n);
                for i in 0..40u128 {
                    let (id, fields) = person(A, n * 1_000 + i);
                    let results = push(&db, &mut phone, id, now_ms(), &fields);
                    assert!(results.iter().all(|r| r.status == ChangeStatus::Accepted));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    // Pull while they push, from snapshots beside the writer, until they are done and the
    // last page says nothing more.
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == 3;
        let cursor = reader.cursor.clone().map(Cursor);
        let (page, settle) = db
            .read_blocking(|c| {
                let caller = caller(c, &reader);
                let from = pull::parse_cursor(cursor.as_ref())?;
                pull::read_page(c, &caller, from, 7, now_ms())
            })
            .unwrap();
        db.call_blocking(|c| pull::settle(c, &settle)).unwrap();
        reader.cursor = Some(page.next.0.clone());
        seen.extend(page.values);
        if finished && !page.more {
            break;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    // None twice.
    let mut once = std::collections::BTreeSet::new();
    for v in &seen {
        assert!(
            once.insert((v.entity, v.field.clone(), v.stamp)),
            "{} {} sent twice",
            v.entity,
            v.field
        );
    }
    // None skipped: the puller's newest value of every field is the server's.
    let mut held: BTreeMap<(Uuid, String), (Stamp, String)> = BTreeMap::new();
    for v in seen {
        let key = (v.entity, v.field.clone());
        if held.get(&key).is_none_or(|(stamp, _)| *stamp < v.stamp) {
            held.insert(key, (v.stamp, v.value.get().to_owned()));
        }
    }
    let stored: BTreeMap<(Uuid, String), (Stamp, String)> = db
        .read_blocking(|c| {
            let mut stmt = c.prepare(
                "SELECT f.entity, f.field, f.value, f.hlc, f.node FROM field f
                 JOIN entity e ON e.id = f.entity WHERE e.village = ?1",
            )?;
            let rows = stmt.query_map([A], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (entity, field, value, hlc, node) = row?;
                let stamp = Stamp::new(Hlc::from_u64(hlc as u64), node.parse().unwrap());
                out.insert((Uuid::parse_str(&entity).unwrap(), field), (stamp, value));
            }
            Ok(out)
        })
        .unwrap();
    let persons: std::collections::BTreeSet<Uuid> = stored.keys().map(|(id, _)| *id).collect();
    assert_eq!(persons.len(), 121, "every person pushed is in the village");
    assert_eq!(held, stored);
}
