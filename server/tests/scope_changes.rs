//! Records a device holds but may no longer: found by the sync simulation, pinned here; and the
//! villages' feeds a pull merges. Each scenario drives the store's push and pull as a device
//! would, including a pull whose answer is lost (the device presents its old cursor again).

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::rusqlite::Connection;
use baylink_server::store::sync::{self, Caller, Page};
use baylink_server::store::{Db, now_ms};
use baylink_sync::wire::Cursor;
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
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
            accounts::register_device(c, &NodeId(Uuid::from_u128(n)).to_string(), id, "p", 0)?;
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

fn push(db: &Db, officer: &mut Officer, entity: Uuid, hlc_ms: u64, fields: &[(&str, Value)]) {
    push_kind(db, officer, "person", entity, hlc_ms, fields);
}

fn push_kind(
    db: &Db,
    officer: &mut Officer,
    kind: &str,
    entity: Uuid,
    hlc_ms: u64,
    fields: &[(&str, Value)],
) {
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
        sync::push(c, &caller, &changes, now_ms(), 60_000)
    })
    .unwrap();
}

/// One pull page; `deliver` false loses the answer (the cursor stays where it was).
fn pull(db: &Db, officer: &mut Officer, limit: u32, deliver: bool) -> Page {
    let cursor = officer.cursor.clone().map(Cursor);
    let page = db
        .call_blocking(|c| {
            let caller = caller(c, officer);
            let from = sync::parse_cursor(cursor.as_ref())?;
            sync::pull(c, &caller, from, limit)
        })
        .unwrap();
    if deliver {
        officer.cursor = Some(page.next.0.clone());
    }
    page
}

fn person(village: &str, n: u128) -> (Uuid, Vec<(&'static str, Value)>) {
    (
        Uuid::from_u128(1000 + n),
        vec![
            ("village", json!(village)),
            ("id_type", json!("passport")),
            ("id_number", json!(format!("E{n:07}"))),
            ("name", json!(format!("P{n}"))),
        ],
    )
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
fn a_registration_that_lost_to_a_newer_one_elsewhere_is_dropped_from_the_device() {
    let (db, _dir) = setup();
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let (id, fields) = person(B, 7);
    let t = now_ms();
    // B's officer registers her in B; A's officer registers her in A, stamped earlier: B wins.
    push(&db, &mut ob, id, t, &fields);
    let (_, mut older) = person(A, 7);
    older.push(("phone", json!("13800138000")));
    push(&db, &mut oa, id, t - 60_000, &older);
    let village: String = db
        .call_blocking(|c| {
            Ok(c.query_row(
                "SELECT village FROM entity WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(village, B);
    // A's phone holds her (it captured her) but she is not A's: the next pull says drop her.
    let page = pull(&db, &mut oa, 100, true);
    assert!(page.purged.contains(&id), "{:?}", page.purged);
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
    let house = Uuid::from_u128(77);
    let fields = [("village", json!(B)), ("address", json!("霞涌1巷1号"))];
    push_kind(&db, &mut ob, "house", house, t + 1, &fields);
    let fields = [
        ("village", json!(B)),
        ("person", json!(order[0].to_string())),
        ("house", json!(house.to_string())),
    ];
    push_kind(
        &db,
        &mut ob,
        "residence",
        Uuid::from_u128(78),
        t + 2,
        &fields,
    );
    assign(&db, "ob", &[A, B]);
    let mut seen = Vec::new();
    loop {
        let page = pull(&db, &mut ob, 3, true);
        assert!(page.values.len() <= 3);
        seen.extend(page.values.into_iter().map(|v| (v.entity, v.field)));
        if !page.more {
            break;
        }
    }
    let mut once = seen.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), seen.len(), "each value once: {seen:?}");
    let values: i64 = db
        .call_blocking(|c| Ok(c.query_row("SELECT count(*) FROM field", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(seen.len() as i64, values, "every value of both villages");
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
    let t = now_ms();
    // A person of B lives in a house of A, so is in both villages; then moves out.
    let (person, fields) = person(B, 1);
    push(&db, &mut ob, person, t, &fields);
    let (house, residence) = (Uuid::from_u128(77), Uuid::from_u128(78));
    let fields = [("village", json!(A)), ("address", json!("澳头1巷1号"))];
    push_kind(&db, &mut oa, "house", house, t + 1, &fields);
    let fields = [
        ("village", json!(A)),
        ("person", json!(person.to_string())),
        ("house", json!(house.to_string())),
    ];
    push_kind(&db, &mut oa, "residence", residence, t + 2, &fields);
    let moved = [("moved_out", json!("2026-11-01"))];
    push_kind(&db, &mut oa, "residence", residence, t + 3, &moved);
    let everything = |officer: &mut Officer| {
        let mut sent = Vec::new();
        loop {
            let page = pull(&db, officer, 100, true);
            sent.extend(page.values);
            if !page.more {
                return sent;
            }
        }
    };
    // A phone of A starting afresh gets the house and the residence, nothing of the person; a
    // phone of B the person, whole.
    let sent = everything(&mut officer("oa", 1));
    assert!(sent.iter().all(|v| v.entity != person), "{sent:?}");
    assert!(sent.iter().any(|v| v.entity == house && v.kind == "house"));
    assert!(
        sent.iter()
            .any(|v| v.entity == residence && v.kind == "residence" && v.field == "moved_out")
    );
    let sent = everything(&mut officer("ob", 2));
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
