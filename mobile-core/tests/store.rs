//! The device store through its public API, on in-memory and file databases.

use std::sync::Arc;

use baylink_domain::{EntityKind, Input};
use baylink_sync::wire::{ChangeResult, ChangeStatus};
use baylink_sync::{ManualClock, Replica};
use mobile_core::{Error, Store};
use proptest::prelude::*;

const VILLAGE: &str = "441303006001";
/// 2026-11-28T04:00:00Z.
const NOW_MS: u64 = 1_795_838_400_000;

fn input(pairs: &[(&str, &str)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The server takes everything waiting: the store's records are then known beyond the phone.
fn synced(s: &mut Store) {
    let results: Vec<ChangeResult> = s
        .outbox(100_000)
        .expect("the outbox reads")
        .iter()
        .map(|c| ChangeResult::accepted(c.id.counter))
        .collect();
    s.settle(&results).expect("answers settle");
}

fn store() -> Store {
    clocked().1
}

/// An in-memory store on a clock the test moves.
fn clocked() -> (Arc<ManualClock>, Store) {
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let store = Store::open_in_memory()
        .expect("in-memory store")
        .with_clock(clock.clone());
    (clock, store)
}

fn person(id_number: &str, name: &str) -> Input {
    input(&[
        ("village", VILLAGE),
        ("id_type", "resident_id"),
        ("id_number", id_number),
        ("name", name),
    ])
}

/// The `n`th valid resident ID number of people born on 1990-01-01 in 惠阳区 (n below 1,000).
fn resident_number(n: usize) -> String {
    let first17 = format!("44130319900101{n:03}");
    let check = baylink_domain::id_number::check_char(first17.as_bytes());
    format!("{first17}{check}")
}

fn house(address: &str) -> Input {
    input(&[
        ("village", VILLAGE),
        ("address", address),
        ("use", "rental"),
        ("status", "in_use"),
    ])
}

#[test]
fn a_captured_person_is_found_by_id_number_name_and_shown_whole() {
    let mut s = store();
    s.set_user("officer-1").unwrap();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002x", "王芳"))
        .unwrap();
    for query in ["110105", "11010519491231002X", "王", "王芳", "１１０１０５"] {
        let hits = s.search(query, 10).unwrap();
        assert_eq!(hits.len(), 1, "{query}");
        assert_eq!(hits[0].id, id.to_string());
    }
    assert!(s.search("李", 10).unwrap().is_empty());
    let record = s.get(id).unwrap().unwrap();
    assert_eq!(record.summary.kind, "person");
    assert_eq!(record.fields["gender"], "female");
    assert_eq!(record.fields["birth_date"], "1949-12-31");
    assert_eq!(record.fields["created_by"], "officer-1");
    assert_eq!(record.fields["created_at"], "2026-11-28 12:00:00");
    assert_eq!(record.fields["review_status"], "pending");
    assert_eq!(
        s.list(EntityKind::Person, Some(VILLAGE), 10, 0)
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.list(EntityKind::Person, Some("441303007001"), 10, 0)
            .unwrap()
            .is_empty()
    );
    assert!(s.pending_count().unwrap() > 5);
}

#[test]
fn a_bad_capture_stores_nothing_and_changes_no_outbox() {
    let mut s = store();
    s.capture(EntityKind::House, &house("澳头石化大道1号"))
        .unwrap();
    let before = (
        s.states().unwrap(),
        s.outbox(1000).unwrap(),
        s.pending_count().unwrap(),
    );
    let err = s
        .capture(EntityKind::Person, &person("110105194912310021", "王芳"))
        .unwrap_err();
    let Error::Invalid(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.field_errors()[0].field, "id_number");
    let bad_batch = [person("11010519491231002X", "王芳"), person("", "李四")];
    assert!(s.capture_many(EntityKind::Person, &bad_batch).is_err());
    let after = (
        s.states().unwrap(),
        s.outbox(1000).unwrap(),
        s.pending_count().unwrap(),
    );
    assert_eq!(before, after);
}

#[test]
fn vehicles_are_found_by_any_spelling_of_their_plate_and_houses_by_address() {
    let mut s = store();
    let v = input(&[
        ("village", VILLAGE),
        ("plate", "粤L·12345"),
        ("vehicle_type", "car"),
    ]);
    let id = s.capture(EntityKind::Vehicle, &v).unwrap();
    for query in ["粤L12345", "粤l·123", "粤L"] {
        assert_eq!(s.search(query, 5).unwrap()[0].id, id.to_string(), "{query}");
    }
    let h = s
        .capture(EntityKind::House, &house("澳头石化大道1号"))
        .unwrap();
    assert_eq!(s.search("澳头石化", 5).unwrap()[0].id, h.to_string());
}

#[test]
fn edits_write_only_what_changed_and_deletes_hide_the_record() {
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let pending = s.pending_count().unwrap();
    assert_eq!(
        s.edit(id, &input(&[("name", "王芳"), ("phone", "13800138000")]))
            .unwrap(),
        1
    );
    assert_eq!(s.pending_count().unwrap(), pending + 1);
    assert_eq!(
        s.edit(id, &input(&[("phone", "138-0013-8000")])).unwrap(),
        0
    );
    assert_eq!(s.pending_count().unwrap(), pending + 1);
    let err = s.edit(id, &input(&[("gender", "male")])).unwrap_err();
    assert!(err.to_string().contains("gender"), "{err}");
    synced(&mut s);
    s.delete(id).unwrap();
    assert!(s.search("王芳", 5).unwrap().is_empty());
    assert!(s.list(EntityKind::Person, None, 5, 0).unwrap().is_empty());
    assert!(s.get(id).unwrap().unwrap().summary.deleted);
    // Registering the person again brings the record back.
    assert_eq!(
        s.capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
            .unwrap(),
        id
    );
    assert!(!s.get(id).unwrap().unwrap().summary.deleted);
}

#[test]
fn a_residence_links_its_person_and_house_both_ways() {
    let mut s = store();
    let p = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let h = s
        .capture(EntityKind::House, &house("澳头石化大道1号"))
        .unwrap();
    let r = s
        .capture(
            EntityKind::Residence,
            &input(&[
                ("village", VILLAGE),
                ("person", &p.to_string()),
                ("house", &h.to_string()),
                ("moved_in", "2025-03-01"),
                ("relation", "tenant"),
            ]),
        )
        .unwrap();
    let person = s.get(p).unwrap().unwrap();
    assert_eq!(person.links.len(), 1);
    assert!(person.links[0].incoming && person.links[0].record.id == r.to_string());
    let residence = s.get(r).unwrap().unwrap();
    let mut out: Vec<_> = residence
        .links
        .iter()
        .map(|l| (l.field.as_str(), l.incoming))
        .collect();
    out.sort_unstable();
    assert_eq!(out, [("house", false), ("person", false)]);
}

#[test]
fn captures_accepted_whole_leave_the_outbox_and_a_capture_answered_in_part_waits() {
    let mut s = store();
    s.capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let number = baylink_domain::synthetic::resident_id(7);
    s.capture(EntityKind::Person, &person(&number, "李娜"))
        .unwrap();
    let changes = s.outbox(100).unwrap();
    let first = changes[0].entity;
    let (one, two): (Vec<_>, Vec<_>) = changes.iter().partition(|c| c.entity == first);
    assert!(one.len() > 1 && two.len() > 1, "{changes:?}");
    // The first capture answered whole, the second but for its last change (an answer that
    // names no result for a change leaves it waiting).
    let results: Vec<ChangeResult> = one
        .iter()
        .chain(&two[..two.len() - 1])
        .map(|c| ChangeResult::accepted(c.id.counter))
        .collect();
    assert_eq!(s.settle(&results).unwrap(), (results.len(), 0));
    let waiting = s.outbox(100).unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].id, two[two.len() - 1].id);
    assert_eq!(s.pending_count().unwrap(), 1);
    // Answers repeated change nothing; the last answer empties the outbox.
    assert_eq!(s.settle(&results).unwrap(), (0, 0));
    let last = [ChangeResult::accepted(waiting[0].id.counter)];
    assert_eq!(s.settle(&last).unwrap(), (1, 0));
    assert_eq!(s.pending_count().unwrap(), 0);
}

#[test]
fn accepted_changes_leave_the_outbox_and_refused_ones_wait_for_a_correction() {
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let changes = s.outbox(100).unwrap();
    assert!(
        changes
            .windows(2)
            .all(|w| w[0].id.counter < w[1].id.counter)
    );
    let name = changes
        .iter()
        .find(|c| c.field == "name")
        .unwrap()
        .id
        .counter;
    let results: Vec<ChangeResult> = changes
        .iter()
        .map(|c| ChangeResult {
            counter: c.id.counter,
            status: if c.id.counter == name {
                ChangeStatus::Refused
            } else {
                ChangeStatus::Accepted
            },
            code: (c.id.counter == name).then(|| "invalid".to_owned()),
            message: (c.id.counter == name).then(|| "姓名：不允许 / name: not allowed".to_owned()),
            extra: Default::default(),
        })
        .collect();
    assert_eq!(s.settle(&results).unwrap(), (changes.len() - 1, 1));
    // Answers repeated (a retried push) change nothing.
    assert_eq!(s.settle(&results).unwrap(), (0, 0));
    assert_eq!(s.pending_count().unwrap(), 0);
    assert!(s.outbox(100).unwrap().is_empty());
    let refused = s.refused().unwrap();
    assert_eq!(
        (
            refused.len(),
            refused[0].field.as_str(),
            refused[0].code.as_str()
        ),
        (1, "name", "invalid")
    );
    // The officer corrects the name: the refused change gives way to the new one.
    s.edit(id, &input(&[("name", "王小芳")])).unwrap();
    assert!(s.refused().unwrap().is_empty());
    assert_eq!(s.pending_count().unwrap(), 1);
}

/// A change to a person made on another phone.
fn remote_person_change(
    entity: uuid::Uuid,
    field: &str,
    value: &str,
    hlc: baylink_sync::Hlc,
) -> baylink_sync::Change {
    let other = baylink_sync::NodeId(uuid::Uuid::from_u128(77));
    baylink_sync::Change {
        id: baylink_sync::ChangeId {
            device: other,
            counter: 1,
        },
        kind: "person".into(),
        entity,
        field: field.into(),
        value: serde_json::json!(value),
        stamp: baylink_sync::Stamp::new(hlc, other),
        base: None,
    }
}

#[test]
fn unpushed_changes_keep_their_own_values_when_the_field_is_overwritten() {
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    // A local correction before any sync: both changes go out, each with its own value.
    s.edit(id, &input(&[("name", "王小芳")])).unwrap();
    let names: Vec<_> = s
        .outbox(100)
        .unwrap()
        .into_iter()
        .filter(|c| c.field == "name")
        .map(|c| (c.value, c.base.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            (serde_json::json!("王芳"), false),
            (serde_json::json!("王小芳"), true)
        ]
    );

    // A newer remote value replaces the record's, not what this device still has to push.
    let later = baylink_sync::Hlc::new(NOW_MS + 60_000, 0);
    s.apply_remote(&[remote_person_change(id, "name", "王小芳", later)])
        .unwrap();
    assert_eq!(s.get(id).unwrap().unwrap().fields["name"], "王小芳");
    let names: Vec<_> = s
        .outbox(100)
        .unwrap()
        .into_iter()
        .filter(|c| c.field == "name")
        .map(|c| c.value)
        .collect();
    assert_eq!(
        names,
        [serde_json::json!("王芳"), serde_json::json!("王小芳")]
    );
}

/// A pull page of whole records made of `changes`, with more to come or not.
fn records_page(changes: &[baylink_sync::Change], more: bool) -> baylink_sync::wire::PullResponse {
    use baylink_sync::wire::{Cursor, FieldValue, PullResponse, group};
    PullResponse {
        server_time_ms: NOW_MS,
        values: Vec::new(),
        records: group(
            changes
                .iter()
                .map(|c| FieldValue {
                    kind: c.kind.clone(),
                    entity: c.entity,
                    field: c.field.clone(),
                    value: c.value.clone(),
                    stamp: c.stamp,
                    extra: Default::default(),
                })
                .collect(),
        ),
        purged: Vec::new(),
        next_cursor: Cursor(format!("s1:{VILLAGE}")),
        more,
        villages: None,
        watch_hits: Vec::new(),
        extra: Default::default(),
    }
}

#[test]
fn a_record_captured_while_a_bootstrap_runs_is_merged_when_the_pull_brings_it() {
    let later = baylink_sync::Hlc::new(NOW_MS + 60_000, 0);
    let earlier = baylink_sync::Hlc::new(NOW_MS - 60_000, 0);
    let first = records_page(
        &[remote_person_change(
            uuid::Uuid::from_u128(5),
            "name",
            "李四",
            earlier,
        )],
        true,
    );
    // The same record from the server: a newer name, an older village.
    let brought = |id| {
        records_page(
            &[
                remote_person_change(id, "name", "王小芳", later),
                remote_person_change(id, "village", "441303006002", earlier),
            ],
            true,
        )
    };
    let outbox_names = |s: &Store| -> Vec<serde_json::Value> {
        s.outbox(100)
            .unwrap()
            .into_iter()
            .filter(|c| c.field == "name")
            .map(|c| c.value)
            .collect()
    };
    // A device whose bootstrap is under way (it held nothing when the first page came)...
    let mut bootstrapping = store();
    bootstrapping.apply_pull(&first, NOW_MS).unwrap();
    let id = bootstrapping
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let report = bootstrapping.apply_pull(&brought(id), NOW_MS).unwrap();
    assert_eq!((report.applied, report.unchanged), (1, 1));
    let record = bootstrapping.get(id).unwrap().unwrap();
    assert_eq!(record.fields["name"], "王小芳");
    assert_eq!(record.fields["village"], VILLAGE);
    assert_eq!(record.fields["id_number"], "11010519491231002X");
    // ...keeps its own unpushed name in the outbox, as one that looks its records up does.
    assert_eq!(outbox_names(&bootstrapping), [serde_json::json!("王芳")]);
    let mut holding = store();
    holding
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    holding.apply_pull(&first, NOW_MS).unwrap();
    holding.apply_pull(&brought(id), NOW_MS).unwrap();
    // The same values and stamps, but for each device's own node id.
    let merged = |s: &Store| -> Vec<(String, serde_json::Value, u64, bool)> {
        let own = s.node_id();
        s.states().unwrap()[&id]
            .1
            .iter()
            .map(|(f, v)| {
                (
                    f.clone(),
                    v.value.clone(),
                    v.stamp.hlc.as_u64(),
                    v.stamp.node == own,
                )
            })
            .collect()
    };
    assert_eq!(merged(&bootstrapping), merged(&holding));
    assert_eq!(outbox_names(&holding), outbox_names(&bootstrapping));
}

#[test]
fn what_a_pull_writes_is_copied_into_the_database_beside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("field.db");
    let mut s = Store::open(&path)
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(NOW_MS)));
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    // 5,000 people: a few megabytes of log, far below the store's own checkpoint (10,000 pages).
    let stamp = baylink_sync::Hlc::new(NOW_MS, 0);
    let changes: Vec<baylink_sync::Change> = (0..5_000u128)
        .flat_map(|i| {
            let id = uuid::Uuid::from_u128(1_000 + i);
            [
                remote_person_change(id, "name", &format!("张{i}"), stamp),
                remote_person_change(id, "village", VILLAGE, stamp),
            ]
        })
        .collect();
    s.apply_pull(&records_page(&changes, false), NOW_MS)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < before + 500_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(size() >= before + 500_000, "{before} -> {}", size());
}

#[test]
fn a_remote_field_stamped_at_the_same_instant_is_not_taken_for_ours() {
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let ours = s.outbox(100).unwrap();
    // Another phone, same millisecond, adds a field this one never wrote.
    let same_instant = ours[0].stamp.hlc;
    s.apply_remote(&[remote_person_change(
        id,
        "employer",
        "大亚湾石化",
        same_instant,
    )])
    .unwrap();
    assert_eq!(s.outbox(100).unwrap(), ours);
}

#[test]
fn a_reopened_store_keeps_its_identity_records_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("field.db");
    let (node, id, last) = {
        let mut s = Store::open(&path).unwrap();
        let id = s
            .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
            .unwrap();
        let last = s.outbox(100).unwrap().last().unwrap().id.counter;
        (s.node_id(), id, last)
    };
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.node_id(), node);
    assert_eq!(s.get(id).unwrap().unwrap().fields["name"], "王芳");
    s.edit(id, &input(&[("phone", "13800138000")])).unwrap();
    let newest = s.outbox(100).unwrap().last().unwrap().id.counter;
    assert!(newest > last, "counter reused after reopening");
}

/// Remote writes as a property test generates them: (node, entity, field, value, clock).
fn arb_changes() -> impl Strategy<Value = Vec<(u8, u8, u8, u8, u64)>> {
    prop::collection::vec((0u8..3, 0u8..4, 0u8..3, 0u8..5, 0u64..40), 1..40)
}

fn to_changes(raw: &[(u8, u8, u8, u8, u64)]) -> Vec<baylink_sync::Change> {
    use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
    raw.iter()
        .enumerate()
        .map(|(i, &(node, entity, field, value, hlc))| {
            let node = NodeId(uuid::Uuid::from_u128(u128::from(node) + 1));
            Change {
                id: ChangeId {
                    device: node,
                    counter: i as u64,
                },
                kind: if entity == 3 {
                    "boat".into()
                } else {
                    "person".into()
                },
                entity: uuid::Uuid::from_u128(u128::from(entity) + 100),
                field: ["name", "phone", "future_field"][usize::from(field)].into(),
                value: if value == 0 {
                    serde_json::Value::Null
                } else {
                    serde_json::json!(format!("v{value}"))
                },
                stamp: Stamp::new(Hlc::new(1_700_000_000_000 + hlc, 0), node),
                base: None,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Pull pages applied together in one transaction leave what the reference replica holds
    /// after them, and what they leave applied one by one: a page dropping a record that earlier
    /// pages of the batch brought, and later ones bring again, included.
    #[test]
    fn pull_pages_applied_together_leave_what_they_leave_one_by_one(
        raw in arb_changes(),
        split in 1usize..8,
        purge in 0u8..5,
    ) {
        use baylink_sync::wire::{Cursor, PullResponse};
        let changes = to_changes(&raw);
        let dropped = |i: usize| -> Vec<uuid::Uuid> {
            if i == 1 && purge < 4 {
                vec![uuid::Uuid::from_u128(u128::from(purge) + 100)]
            } else {
                Vec::new()
            }
        };
        let pages: Vec<PullResponse> = changes
            .chunks(split)
            .enumerate()
            .map(|(i, chunk)| PullResponse {
                purged: dropped(i),
                next_cursor: Cursor(format!("s{i}:{VILLAGE}")),
                ..records_page(chunk, true)
            })
            .collect();
        // The reference: a replica per record, started over when the record is dropped.
        let mut reference: std::collections::BTreeMap<uuid::Uuid, Replica> = Default::default();
        for (i, chunk) in changes.chunks(split).enumerate() {
            for c in chunk {
                reference.entry(c.entity).or_default().apply(c);
            }
            for id in dropped(i) {
                reference.remove(&id);
            }
        }
        let expected: std::collections::BTreeMap<_, _> = reference
            .values()
            .flat_map(|r| r.entities().iter())
            .map(|(id, e)| (*id, (e.kind.clone(), e.fields.clone())))
            .collect();
        let mut one_by_one = store();
        for page in &pages {
            one_by_one.apply_pull(page, NOW_MS).unwrap();
        }
        let mut together = store();
        let report = together.apply_pulls(pages.clone(), NOW_MS).unwrap();
        prop_assert_eq!(report.applied + report.unchanged, changes.len());
        prop_assert_eq!(&together.states().unwrap(), &expected);
        prop_assert_eq!(&one_by_one.states().unwrap(), &expected);
    }

    /// The store merges exactly like the reference replica, whatever the order, batching and
    /// duplication, unknown kinds and fields included.
    #[test]
    fn the_store_converges_like_the_reference_replica(
        raw in arb_changes(),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
        split in 1usize..8,
    ) {
        let changes = to_changes(&raw);
        let mut reference = Replica::new();
        for c in &changes {
            reference.apply(c);
        }
        let mut forward = store();
        for chunk in changes.chunks(split) {
            forward.apply_remote(chunk).unwrap();
        }
        let mut shuffled: Vec<_> = changes.iter().chain(changes.iter().take(split)).cloned().collect();
        let n = shuffled.len();
        for i in (1..n).rev() {
            shuffled.swap(i, (order.rotate_left(i as u32) % (i as u64 + 1)) as usize);
        }
        let mut backward = store();
        backward.apply_remote(&shuffled).unwrap();
        let expected: std::collections::BTreeMap<_, _> = reference
            .entities()
            .iter()
            .map(|(id, e)| (*id, (e.kind.clone(), e.fields.clone())))
            .collect();
        prop_assert_eq!(&forward.states().unwrap(), &expected);
        prop_assert_eq!(&backward.states().unwrap(), &expected);
    }
}

#[test]
fn push_batches_never_end_inside_an_action() {
    let mut s = store();
    for n in 0..10u64 {
        let body = format!("4413021990011{n}{n:03}");
        let number = format!(
            "{body}{}",
            baylink_domain::id_number::check_char(body.as_bytes())
        );
        s.capture(EntityKind::Person, &person(&number, "陈静"))
            .unwrap();
    }
    let all = s.outbox(usize::MAX).unwrap();
    let per_action = all.iter().filter(|c| c.entity == all[0].entity).count();
    assert!(per_action > 5, "a person is one action of several changes");
    // A limit that falls inside the third action: the batch ends after the second.
    let batch = s.outbox(2 * per_action + 3).unwrap();
    assert_eq!(batch.len(), 2 * per_action);
    let entities: std::collections::BTreeSet<_> = batch.iter().map(|c| c.entity).collect();
    assert_eq!(entities.len(), 2);
    assert!(batch.iter().any(|c| c.field == "village"));
    // A limit smaller than one action still gives that whole action.
    assert_eq!(s.outbox(1).unwrap().len(), per_action);
}

/// Answers every change waiting: refused (with `code`) when `refuse` says so, else accepted.
fn answer(s: &mut Store, refuse: &dyn Fn(&baylink_sync::Change) -> bool, code: &str) {
    let results: Vec<ChangeResult> = s
        .outbox(1000)
        .expect("the outbox reads")
        .iter()
        .map(|c| {
            let no = refuse(c);
            ChangeResult {
                counter: c.id.counter,
                status: if no {
                    ChangeStatus::Refused
                } else {
                    ChangeStatus::Accepted
                },
                code: no.then(|| code.to_owned()),
                message: no.then(|| "不在您的辖区 / out of scope".to_owned()),
                extra: Default::default(),
            }
        })
        .collect();
    s.settle(&results).expect("answers settle");
}

#[test]
fn a_correction_sends_the_refused_record_again_whole() {
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let captured = s.outbox(100).unwrap().len();
    // A new record is refused whole (captured in a village not the officer's, say).
    answer(&mut s, &|_| true, "out_of_scope");
    let refused = s.refused_records().unwrap();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].never_taken && refused[0].label.contains("王芳"));
    assert!(
        refused[0]
            .fields
            .iter()
            .any(|f| f.field == "village" && f.label == "所属村（社区）"),
        "{refused:?}"
    );
    assert_eq!(s.pending_records().unwrap(), 0);
    // Corrected in one field, the record goes again with every field it had.
    s.edit(id, &input(&[("phone", "13800138000")])).unwrap();
    assert!(s.refused_records().unwrap().is_empty());
    let again = s.outbox(100).unwrap();
    assert_eq!(again.len(), captured + 1, "{again:?}");
    assert!(again.iter().any(|c| c.field == "name" && c.value == "王芳"));
    assert_eq!(s.pending_records().unwrap(), 1);
}

#[test]
fn dismissing_removes_a_record_the_server_never_took_and_reverts_an_edit_it_refused() {
    let mut s = store();
    let never = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    answer(&mut s, &|_| true, "out_of_scope");
    assert_eq!(
        s.dismiss_refused(never).unwrap(),
        mobile_core::Dismissal::Removed
    );
    assert!(s.get(never).unwrap().is_none());
    assert!(s.refused_records().unwrap().is_empty());
    assert!(s.outbox(100).unwrap().is_empty());

    // A record the server took, then an edit of it refused: dismissing puts back the value the
    // edit replaced, and a field the edit added goes.
    let taken = s
        .capture(EntityKind::Person, &person("440102198001011235", "李明"))
        .unwrap();
    answer(&mut s, &|_| false, "");
    s.edit(
        taken,
        &input(&[("name", "李小明"), ("phone", "13800138000")]),
    )
    .unwrap();
    answer(&mut s, &|_| true, "read_only");
    assert!(!s.refused_records().unwrap()[0].never_taken);
    assert_eq!(
        s.dismiss_refused(taken).unwrap(),
        mobile_core::Dismissal::Reverted { fields: 2 }
    );
    let record = s.get(taken).unwrap().unwrap();
    assert_eq!(record.fields.get("name").map(String::as_str), Some("李明"));
    assert_eq!(record.fields.get("phone"), None);
    assert!(s.refused_records().unwrap().is_empty());
    assert!(s.outbox(100).unwrap().is_empty());
    assert!(matches!(s.dismiss_refused(taken), Err(Error::NotFound(_))));
}

#[test]
fn a_reference_must_name_a_record_of_its_kind_on_this_device() {
    let mut s = store();
    let p = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let h = s
        .capture(EntityKind::House, &house("澳头石化大道1号"))
        .unwrap();
    let stay = |person: &str, house: &str| {
        input(&[
            ("village", VILLAGE),
            ("person", person),
            ("house", house),
            ("moved_in", "2025-03-01"),
            ("relation", "tenant"),
        ])
    };
    let codes = |err: Error| match err {
        Error::Invalid(e) => e
            .field_errors()
            .iter()
            .map(|f| (f.field.clone(), f.code.clone()))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let nobody = uuid::Uuid::new_v4().to_string();
    let err = s
        .capture(EntityKind::Residence, &stay(&nobody, &h.to_string()))
        .unwrap_err();
    assert_eq!(codes(err), [("person".into(), "no_such_record".into())]);
    let err = s
        .capture(EntityKind::Residence, &stay(&h.to_string(), &h.to_string()))
        .unwrap_err();
    assert_eq!(codes(err), [("person".into(), "wrong_kind".into())]);
    assert!(
        s.list(EntityKind::Residence, None, 10, 0)
            .unwrap()
            .is_empty()
    );
    let r = s
        .capture(EntityKind::Residence, &stay(&p.to_string(), &h.to_string()))
        .unwrap();
    // An edit pointing it at a deleted house is refused too.
    let gone = s
        .capture(EntityKind::House, &house("澳头石化大道2号"))
        .unwrap();
    synced(&mut s);
    s.delete(gone).unwrap();
    let err = s
        .edit(r, &input(&[("house", &gone.to_string())]))
        .unwrap_err();
    assert_eq!(codes(err), [("house".into(), "deleted".into())]);
}

#[test]
fn registering_a_known_plate_says_the_vehicle_was_updated() {
    let mut s = store();
    let vehicle = |colour: &str| {
        input(&[
            ("village", VILLAGE),
            ("plate", "粤L·D1234"),
            ("vehicle_type", "car"),
            ("colour", colour),
        ])
    };
    let first = s
        .capture_detailed(EntityKind::Vehicle, &vehicle("白"))
        .unwrap();
    assert!(!first.existed);
    let again = s
        .capture_detailed(EntityKind::Vehicle, &vehicle("黑"))
        .unwrap();
    assert_eq!(
        (again.id, again.existed, again.changed),
        (first.id, true, vec!["colour".to_owned()])
    );
}

#[test]
fn dismissing_a_refused_edit_puts_back_what_the_server_holds_a_value_pulled_since_included() {
    let (clock, mut s) = clocked();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    answer(&mut s, &|_| false, "");
    clock.advance(60_000);
    s.edit(id, &input(&[("name", "王小芳")])).unwrap();
    // Another phone's rename, made between the capture and this edit, arrives: it loses here
    // to the newer local edit, but it is what the server holds once this edit is refused.
    let name_stamp = |s: &Store| s.states().unwrap()[&id].1["name"].stamp;
    let between = baylink_sync::Hlc::from_u64(
        (name_stamp(&s).hlc.as_u64() + s.states().unwrap()[&id].1["village"].stamp.hlc.as_u64())
            / 2,
    );
    let remote = remote_person_change(id, "name", "王芳芳", between);
    s.apply_remote(std::slice::from_ref(&remote)).unwrap();
    assert_eq!(
        s.get(id).unwrap().unwrap().fields["name"],
        "王小芳",
        "the local edit outranks it"
    );
    answer(&mut s, &|c| c.field == "name", "read_only");
    s.dismiss_refused(id).unwrap();
    let state = &s.states().unwrap()[&id].1;
    assert_eq!(
        (&state["name"].value, state["name"].stamp),
        (&serde_json::json!("王芳芳"), remote.stamp)
    );
}

#[test]
fn a_late_duplicate_of_an_old_pull_answer_is_dropped_whole() {
    use baylink_sync::wire::Cursor;
    let mut s = store();
    let id = uuid::Uuid::from_u128(5);
    let hlc = baylink_sync::Hlc::from_u64(1 << 40);
    let first = records_page(&[remote_person_change(id, "name", "王芳", hlc)], false);
    s.apply_pulls_from(vec![first], None, NOW_MS).unwrap();
    assert!(s.get(id).unwrap().is_some());
    // An older answer (it dropped her, before she came back) arrives again, late.
    let stale = baylink_sync::wire::PullResponse {
        purged: vec![id],
        next_cursor: Cursor(format!("s0:{VILLAGE}")),
        ..records_page(&[], false)
    };
    let report = s
        .apply_pulls_from(vec![stale.clone()], None, NOW_MS)
        .unwrap();
    assert_eq!(report.applied, 0);
    assert!(s.get(id).unwrap().is_some(), "a late page drops nothing");
    // The same page as the answer to the device's current cursor is applied.
    s.apply_pulls_from(vec![stale], Some(&format!("s1:{VILLAGE}")), NOW_MS)
        .unwrap();
    assert!(s.get(id).unwrap().is_none());
}

#[test]
fn a_deleted_record_cannot_be_edited_and_captured_again_comes_back() {
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    synced(&mut s);
    s.delete(id).unwrap();
    let err = s.edit(id, &input(&[("name", "王小芳")])).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.field_errors()[0].code == "deleted"),
        "{err}"
    );
    let again = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    assert_eq!(again, id);
    assert_eq!(s.get(id).unwrap().unwrap().fields["deleted"], "false");
}

#[test]
fn deleting_a_capture_the_server_never_saw_withdraws_it_and_anything_seen_leaves_a_tombstone() {
    let mut s = store();
    let person = |number: &str| {
        input(&[
            ("village", VILLAGE),
            ("id_type", "resident_id"),
            ("id_number", number),
            ("name", "王芳"),
        ])
    };
    // Mistyped, deleted before any sync, captured again: only the right one is left to push.
    let wrong = s
        .capture(EntityKind::Person, &person("440303199002020020"))
        .unwrap();
    assert_eq!(s.delete(wrong).unwrap(), mobile_core::Deletion::Withdrawn);
    assert!(s.get(wrong).unwrap().is_none(), "withdrawn, not kept");
    assert!(s.outbox(100).unwrap().iter().all(|c| c.entity != wrong));
    let right = s
        .capture(EntityKind::Person, &person("11010519491231002X"))
        .unwrap();
    assert_eq!(s.pending_records().unwrap(), 1);

    // The same person captured elsewhere and pulled (losing to this capture's later values):
    // the server holds her, so deleting her is a deletion it must hear of.
    let earlier = baylink_sync::Hlc::new(NOW_MS - 60_000, 0);
    s.apply_remote(&[remote_person_change(right, "created_by", "o2", earlier)])
        .unwrap();
    assert_eq!(s.delete(right).unwrap(), mobile_core::Deletion::Deleted);
    assert_eq!(s.get(right).unwrap().unwrap().fields["deleted"], "true");
    assert!(
        s.outbox(100)
            .unwrap()
            .iter()
            .any(|c| c.entity == right && c.field == "deleted")
    );

    // A capture handed out to a push whose answer never came may be on the server: deleted.
    let sent = s
        .capture(EntityKind::Person, &person("440303199002020020"))
        .unwrap();
    assert!(s.outbox(100).unwrap().iter().any(|c| c.entity == sent));
    s.delete(sent).unwrap();
    assert_eq!(s.get(sent).unwrap().unwrap().fields["deleted"], "true");

    // A capture that a residence on the phone names is deleted, not withdrawn.
    let named = s
        .capture(EntityKind::Person, &person("440102198001011235"))
        .unwrap();
    let house = s
        .capture(
            EntityKind::House,
            &input(&[
                ("village", VILLAGE),
                ("address", "澳头石化大道1号"),
                ("use", "rental"),
                ("status", "in_use"),
            ]),
        )
        .unwrap();
    s.capture(
        EntityKind::Residence,
        &input(&[
            ("village", VILLAGE),
            ("person", &named.to_string()),
            ("house", &house.to_string()),
            ("moved_in", "2026-01-01"),
            ("relation", "tenant"),
        ]),
    )
    .unwrap();
    s.delete(named).unwrap();
    assert_eq!(s.get(named).unwrap().unwrap().fields["deleted"], "true");
}

#[test]
fn two_restamps_in_one_sync_never_give_two_actions_one_stamp() {
    // The phone's clock runs two days ahead; the server refuses its pushes one batch at a time
    // and each refusal restamps (the clock set back each time to what the server said).
    let clock = Arc::new(ManualClock::new(NOW_MS + 2 * 86_400_000));
    let mut s = Store::open_in_memory()
        .expect("in-memory store")
        .with_clock(clock);
    let first = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    s.edit(first, &input(&[("occupation", "工人")])).unwrap();
    s.capture(EntityKind::House, &house("桥西一巷1号")).unwrap();
    let all = s.outbox(usize::MAX).unwrap();
    let refuse = |counters: &[u64]| -> Vec<u64> { counters.to_vec() };
    // The first push carries the person's capture; refused as stamped ahead, restamped.
    let capture: Vec<u64> = all
        .iter()
        .filter(|c| c.entity == first && c.field != "occupation")
        .map(|c| c.id.counter)
        .collect();
    s.restamp(&refuse(&capture), NOW_MS).unwrap();
    // The next push carries the edit and the house; refused likewise.
    let rest: Vec<u64> = s
        .outbox(usize::MAX)
        .unwrap()
        .iter()
        .filter(|c| !(c.entity == first && c.field != "occupation"))
        .map(|c| c.id.counter)
        .collect();
    s.restamp(&rest, NOW_MS).unwrap();
    let pending = s.outbox(usize::MAX).unwrap();
    let counters: std::collections::BTreeSet<u64> = pending.iter().map(|c| c.id.counter).collect();
    assert_eq!(
        counters.len(),
        pending.len(),
        "a counter given twice: {pending:#?}"
    );
    assert_eq!(pending.len() as u64, s.pending_count().unwrap());
    assert_eq!(pending.len(), all.len(), "every change still waits once");
    // One stamp, one action: the changes sharing a stamp are one record's.
    let mut by_stamp: std::collections::HashMap<_, std::collections::BTreeSet<uuid::Uuid>> =
        Default::default();
    for c in &pending {
        by_stamp.entry(c.stamp).or_default().insert(c.entity);
    }
    assert!(
        by_stamp.values().all(|records| records.len() == 1),
        "{by_stamp:?}"
    );
    let stamps_of_first: std::collections::BTreeSet<_> = pending
        .iter()
        .filter(|c| c.entity == first)
        .map(|c| c.stamp)
        .collect();
    assert_eq!(
        stamps_of_first.len(),
        2,
        "the capture and the edit stay two actions"
    );
}

#[test]
fn a_full_push_ends_before_a_record_whose_later_actions_would_not_fit() {
    let mut s = store();
    let first = s.capture(EntityKind::House, &house("桥西一巷1号")).unwrap();
    let edited = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    s.capture(EntityKind::Person, &person("440305198807120027", "李强"))
        .unwrap();
    s.capture(EntityKind::House, &house("桥西一巷2号")).unwrap();
    // Corrected later: the person has a second action at the end of the outbox.
    s.edit(edited, &input(&[("occupation", "工人")])).unwrap();
    let all = s.outbox(usize::MAX).unwrap();
    let count = |id| all.iter().filter(|c| c.entity == id).count();
    // Room for the first house, the first person's capture and a little more, not for all.
    let limit = count(first) + count(edited) + 3;
    let batch = s.outbox(limit).unwrap();
    assert!(
        batch.iter().all(|c| c.entity == first),
        "ends before the person: {:?}",
        batch
            .iter()
            .map(|c| (c.entity, &c.field))
            .collect::<Vec<_>>()
    );
    assert_eq!(batch.len(), count(first));
    // Room for everything but the edit: the rest goes whole next time.
    let after = batch.iter().map(|c| c.id.counter).max().unwrap();
    let next = s.outbox_after(after, usize::MAX, usize::MAX).unwrap();
    assert_eq!(batch.len() + next.len(), all.len());
    // A record first in the batch with more waiting than a push carries still goes: in parts.
    let lone = s
        .outbox_after(after, count(edited) - 1 + 1, usize::MAX)
        .unwrap();
    assert!(lone.iter().all(|c| c.entity == edited), "{lone:?}");
    assert!(!lone.is_empty());
}

#[test]
fn a_clock_set_back_climbs_past_the_readings_of_actions_still_waiting() {
    // Two days ahead: two captures; the first alone is refused and restamped (the clock set
    // back two days); the phone's clock runs on two more days and the officer captures again,
    // the clock climbing through the second capture's reading.
    let clock = Arc::new(ManualClock::new(NOW_MS + 2 * 86_400_000));
    let mut s = Store::open_in_memory()
        .expect("in-memory store")
        .with_clock(clock.clone());
    let first = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    s.capture(EntityKind::House, &house("桥西一巷1号")).unwrap();
    let counters: Vec<u64> = s
        .outbox(usize::MAX)
        .unwrap()
        .iter()
        .filter(|c| c.entity == first)
        .map(|c| c.id.counter)
        .collect();
    s.restamp(&counters, NOW_MS).unwrap();
    clock.set(NOW_MS + 4 * 86_400_000);
    s.capture(EntityKind::House, &house("桥西一巷2号")).unwrap();
    s.capture(EntityKind::House, &house("桥西一巷3号")).unwrap();
    let mut by_stamp: std::collections::HashMap<_, std::collections::BTreeSet<uuid::Uuid>> =
        Default::default();
    for c in s.outbox(usize::MAX).unwrap() {
        by_stamp.entry(c.stamp).or_default().insert(c.entity);
    }
    assert_eq!(by_stamp.len(), 4, "four actions, four stamps: {by_stamp:?}");
    assert!(
        by_stamp.values().all(|records| records.len() == 1),
        "{by_stamp:?}"
    );
}

/// One step of two connections to one store file (an app's screens and its sync): which
/// connection, what it does, and to which record.
fn arb_two_connection_steps() -> impl Strategy<Value = Vec<(bool, u8, u8)>> {
    prop::collection::vec((any::<bool>(), 0u8..3, any::<u8>()), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Two connections to one file, writing in any interleaving (captures, edits, pulled values
    /// stamped ahead), never hand out one change counter twice, and each local action's stamp
    /// comes after every stamp either connection wrote or took in before it: each write reads
    /// the device row under the write lock, not a copy an earlier read kept.
    #[test]
    fn two_connections_to_one_store_never_reuse_a_counter_or_a_stamp(
        steps in arb_two_connection_steps()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("field.db");
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let mut stores = [
            Store::open(&path).unwrap().with_clock(clock.clone()),
            Store::open(&path).unwrap().with_clock(clock),
        ];
        // As an app's FieldStore runs them: noting changed records for listeners.
        for s in &mut stores {
            s.watch_changes().unwrap();
        }
        let mut records = Vec::new();
        let mut newest = baylink_sync::Hlc::new(0, 0);
        let mut counters = std::collections::BTreeSet::new();
        for (i, (second, what, target)) in steps.into_iter().enumerate() {
            let s = &mut stores[usize::from(second)];
            match what {
                0 => {
                    let number = resident_number(i);
                    records.push(s.capture(EntityKind::Person, &person(&number, "王芳")).unwrap());
                }
                1 if !records.is_empty() => {
                    let id = records[usize::from(target) % records.len()];
                    let phone = format!("138{i:08}");
                    s.edit(id, &input(&[("phone", &phone)])).unwrap();
                }
                _ => {
                    // A value pulled from another phone, stamped a little ahead.
                    let at = baylink_sync::Hlc::new(NOW_MS + 1_000 * (i as u64 + 1), 0);
                    let remote = baylink_sync::NodeId(uuid::Uuid::from_u128(7));
                    s.apply_remote(&[baylink_sync::Change {
                        id: baylink_sync::ChangeId { device: remote, counter: i as u64 },
                        kind: "person".into(),
                        entity: uuid::Uuid::from_u128(1_000 + i as u128),
                        field: "name".into(),
                        value: serde_json::json!("李四"),
                        stamp: baylink_sync::Stamp::new(at, remote),
                        base: None,
                    }]).unwrap();
                    newest = newest.max(at);
                    continue;
                }
            }
            let waiting = s.outbox(usize::MAX).unwrap();
            let fresh: Vec<_> = waiting.iter().filter(|c| !counters.contains(&c.id.counter)).collect();
            prop_assert!(!fresh.is_empty(), "step {i} wrote no change");
            for change in &fresh {
                prop_assert!(
                    change.stamp.hlc > newest,
                    "step {i}: stamp {:?} not after {:?}", change.stamp.hlc, newest
                );
            }
            newest = fresh.iter().map(|c| c.stamp.hlc).max().unwrap_or(newest);
            counters.extend(fresh.iter().map(|c| c.id.counter));
        }
        let all: Vec<u64> = stores[0].outbox(usize::MAX).unwrap().iter().map(|c| c.id.counter).collect();
        let unique: std::collections::BTreeSet<u64> = all.iter().copied().collect();
        prop_assert_eq!(all.len(), unique.len(), "a counter handed out twice");
    }
}

/// What an app shows while a form is filled: every problem at once without saving anything,
/// the record a known number would update, a number another record holds, and the candidates
/// of a reference field.
#[test]
fn a_form_is_checked_without_saving_and_references_are_picked_by_kind() {
    let mut s = store();
    let fang = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let house = s
        .capture(EntityKind::House, &house("澳头石化大道1号"))
        .unwrap();
    let codes = |check: &mobile_core::Check| {
        check
            .problems
            .iter()
            .map(|p| (p.field.clone(), p.code.clone()))
            .collect::<Vec<_>>()
    };

    let wrong = input(&[
        ("village", VILLAGE),
        ("id_number", "110105194912310021"),
        ("name", &"长".repeat(51)),
        ("phone", "12345"),
    ]);
    let check = s.check_capture(EntityKind::Person, &wrong).unwrap();
    let mut found = codes(&check);
    found.sort();
    assert_eq!(
        found.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        ["id_number", "name", "phone"],
        "every wrong field at once: {found:?}"
    );
    assert!(check.existing.is_none());

    let again = s
        .check_capture(EntityKind::Person, &person("11010519491231002x", "王芳"))
        .unwrap();
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!(
        again.existing.map(|r| r.id),
        Some(fang.to_string()),
        "a known number says whose record it would update"
    );
    assert!(
        s.check_capture(EntityKind::Person, &person("441303199001010016", "李四"))
            .unwrap()
            .existing
            .is_none()
    );

    // The number edited onto another record: a capture would be a second record of her.
    let other = s
        .capture(EntityKind::Person, &person("110105195001010012", "李娜"))
        .unwrap();
    synced(&mut s);
    s.edit(other, &input(&[("id_number", "110105196001010017")]))
        .unwrap();
    let held = s
        .check_capture(EntityKind::Person, &person("110105196001010017", "李娜"))
        .unwrap();
    assert_eq!(codes(&held), [("id_number".into(), "duplicate".into())]);

    let stay = input(&[
        ("village", VILLAGE),
        ("person", &uuid::Uuid::new_v4().to_string()),
        ("house", &house.to_string()),
        ("moved_in", "2025-03-01"),
        ("relation", "tenant"),
    ]);
    let dangling = s.check_capture(EntityKind::Residence, &stay).unwrap();
    assert_eq!(
        codes(&dangling),
        [("person".into(), "no_such_record".into())]
    );
    let count = s.pending_count().unwrap();
    s.check_capture(EntityKind::Person, &person("441303199001010016", "李四"))
        .unwrap();
    assert_eq!(s.pending_count().unwrap(), count, "a check saves nothing");
    assert!(s.search("李四", 5).unwrap().is_empty());

    let picked: Vec<String> = s
        .pick(EntityKind::Person, "王", 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(picked, [fang.to_string()]);
    assert!(
        s.pick(EntityKind::House, "王", 10).unwrap().is_empty(),
        "only the field's kind"
    );
    let newest = s.pick(EntityKind::Person, " ", 10).unwrap();
    assert_eq!(newest.len(), 2, "nothing typed: the newest of the kind");
}

/// A sync reads the outbox on its own connection while the screens' connection edits the
/// records it names: every read agrees with itself (the waiting actions and the records their
/// values are read from, in one snapshot), never "an outbox change lost its value".
#[test]
fn the_outbox_reads_whole_while_another_connection_edits_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("field.db");
    let mut screens = Store::open(&path).unwrap();
    let sync = Store::open(&path).unwrap();
    let ids: Vec<uuid::Uuid> = (0..20)
        .map(|i| {
            let number = resident_number(i);
            screens
                .capture(EntityKind::Person, &person(&number, "王芳"))
                .unwrap()
        })
        .collect();
    let editing = std::thread::spawn(move || {
        for round in 0..60 {
            for id in &ids {
                let phone = format!("138{round:08}");
                screens.edit(*id, &input(&[("phone", &phone)])).unwrap();
            }
        }
    });
    let mut reads = 0;
    while !editing.is_finished() {
        let waiting = sync.outbox_after(0, 100_000, usize::MAX).unwrap();
        assert!(!waiting.is_empty());
        reads += 1;
    }
    editing.join().unwrap();
    assert!(reads > 0);
}

#[test]
fn a_record_dropped_by_a_pull_leaves_its_waiting_edit_to_be_answered_and_its_refusal_to_be_seen() {
    use baylink_sync::wire::Cursor;
    let purge = |ids: Vec<uuid::Uuid>| baylink_sync::wire::PullResponse {
        purged: ids,
        next_cursor: Cursor(format!("s9:{VILLAGE}")),
        ..records_page(&[], false)
    };
    let mut s = store();
    let waiting = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    let refused = s
        .capture(EntityKind::Person, &person("440303199002020020", "李明"))
        .unwrap();
    synced(&mut s);
    // Both are moved to another village on the server. Here one was edited while the sync
    // ran (after its push), and the push refused the other's edit.
    s.edit(refused, &input(&[("name", "李小明")])).unwrap();
    let sent = s.outbox(100).unwrap();
    // Another edit of that record made while its push was on its way, then the refusal.
    s.edit(refused, &input(&[("occupation", "厨师")])).unwrap();
    let results: Vec<ChangeResult> = sent
        .iter()
        .map(|c| ChangeResult {
            counter: c.id.counter,
            status: ChangeStatus::Refused,
            code: Some("forbidden".into()),
            message: Some("不在您的辖区 / out of scope".into()),
            extra: Default::default(),
        })
        .collect();
    s.settle(&results).unwrap();
    s.edit(waiting, &input(&[("name", "王小芳")])).unwrap();
    s.apply_pulls_from(vec![purge(vec![waiting, refused])], None, NOW_MS)
        .unwrap();
    assert!(s.get(waiting).unwrap().is_none());
    assert!(s.get(refused).unwrap().is_none());
    // The waiting edits go in the next push, with their values, for the server to answer.
    let values = |s: &Store| {
        s.outbox(100)
            .unwrap()
            .iter()
            .map(|c| (c.entity, c.field.clone(), c.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(&s),
        [
            (refused, "occupation".to_owned(), serde_json::json!("厨师")),
            (waiting, "name".to_owned(), serde_json::json!("王小芳"))
        ]
    );
    // The refusal the officer has not yet seen is still there to see, and dismissed it goes.
    let seen = s.refused_records().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, refused.to_string());
    assert_eq!(seen[0].fields[0].code, "forbidden");
    assert!(
        seen[0].label.contains("no longer on this phone"),
        "{}",
        seen[0].label
    );
    assert_eq!(
        s.dismiss_refused(refused).unwrap(),
        mobile_core::Dismissal::Removed
    );
    assert!(s.refused().unwrap().is_empty());
    assert_eq!(values(&s).len(), 2, "what waits to be pushed stays");
    // Stamped too far ahead, a waiting edit of a dropped record is made again with new
    // counters: the server may take them, and pulls send them back to this phone.
    let counter = s.outbox(1).unwrap()[0].id.counter;
    s.restamp(&[counter], NOW_MS).unwrap();
    let newest = s
        .outbox(100)
        .unwrap()
        .iter()
        .map(|c| c.id.counter)
        .max()
        .unwrap();
    assert!(s.own_held_after().unwrap() >= newest);
    assert_eq!(values(&s).len(), 2);
    // Refused in their turn, the edits wait to be seen; dismissed, nothing is left.
    answer(&mut s, &|_| true, "forbidden");
    assert_eq!(s.refused().unwrap().len(), 2);
    s.dismiss_refused(waiting).unwrap();
    s.dismiss_refused(refused).unwrap();
    assert_eq!(s.pending_count().unwrap(), 0);
    assert!(s.refused().unwrap().is_empty());
}

#[test]
fn a_refused_change_the_server_took_after_all_is_no_longer_refused_once_a_pull_brings_it() {
    use baylink_sync::wire::Cursor;
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    synced(&mut s);
    s.edit(id, &input(&[("name", "王小芳"), ("occupation", "厨师")]))
        .unwrap();
    // Both refused to one copy of the push; a later copy of it was taken (the officer's
    // village back), and the server sends the name back, with this phone's own stamp.
    answer(&mut s, &|_| true, "out_of_scope");
    let name = s.states().unwrap()[&id].1["name"].clone();
    let back = baylink_sync::Change {
        value: name.value.clone(),
        stamp: name.stamp,
        ..remote_person_change(id, "name", "", name.stamp.hlc)
    };
    let page = |more| baylink_sync::wire::PullResponse {
        next_cursor: Cursor(format!("s2:{VILLAGE}")),
        ..records_page(std::slice::from_ref(&back), more)
    };
    s.apply_pulls_from(vec![page(false)], None, NOW_MS).unwrap();
    let fields: Vec<String> = s.refused().unwrap().into_iter().map(|r| r.field).collect();
    assert_eq!(
        fields,
        ["occupation"],
        "only the change the server holds is taken"
    );
    // Dismissed, the occupation goes back; the name the server holds stays.
    s.dismiss_refused(id).unwrap();
    let kept = s.get(id).unwrap().unwrap();
    assert_eq!(kept.fields["name"], "王小芳");
    assert_ne!(
        kept.fields.get("occupation").map(String::as_str),
        Some("厨师")
    );

    // The same when the record was dropped (it left the villages) and comes back whole.
    let mut s = store();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    synced(&mut s);
    s.edit(id, &input(&[("notes", "第77次走访")])).unwrap();
    answer(&mut s, &|_| true, "out_of_scope");
    let whole: Vec<baylink_sync::Change> = s.states().unwrap()[&id]
        .1
        .iter()
        .map(|(field, v)| baylink_sync::Change {
            value: v.value.clone(),
            stamp: v.stamp,
            ..remote_person_change(id, field, "", v.stamp.hlc)
        })
        .collect();
    let dropped = baylink_sync::wire::PullResponse {
        purged: vec![id],
        next_cursor: Cursor(format!("s3:{VILLAGE}")),
        ..records_page(&[], false)
    };
    s.apply_pulls_from(vec![dropped], None, NOW_MS).unwrap();
    assert_eq!(
        s.refused().unwrap().len(),
        1,
        "the refusal is kept to be seen"
    );
    let back = baylink_sync::wire::PullResponse {
        next_cursor: Cursor(format!("s4:{VILLAGE}")),
        ..records_page(&whole, false)
    };
    s.apply_pulls_from(vec![back], Some(&format!("s3:{VILLAGE}")), NOW_MS)
        .unwrap();
    assert!(s.refused().unwrap().is_empty());
    assert_eq!(s.get(id).unwrap().unwrap().fields["notes"], "第77次走访");
}

#[test]
fn a_correction_sends_again_only_the_refused_values_the_record_still_holds() {
    let (clock, mut s) = clocked();
    let id = s
        .capture(EntityKind::Person, &person("11010519491231002X", "王芳"))
        .unwrap();
    synced(&mut s);
    clock.advance(60_000);
    s.edit(id, &input(&[("name", "王小芳"), ("occupation", "厨师")]))
        .unwrap();
    answer(&mut s, &|_| true, "out_of_scope");
    // Another officer's newer rename arrives: the name the record holds is theirs now.
    let ours = s.states().unwrap()[&id].1["name"].stamp.hlc.as_u64();
    let later = baylink_sync::Hlc::from_u64(ours + (1 << 20));
    s.apply_remote(&[remote_person_change(id, "name", "王芳芳", later)])
        .unwrap();
    s.edit(id, &input(&[("occupation", "司机")])).unwrap();
    let sent = s.outbox(100).unwrap();
    assert!(sent.iter().all(|c| c.field != "name"), "{sent:?}");
    assert!(
        sent.iter()
            .any(|c| c.field == "occupation" && c.value == "司机"),
        "{sent:?}"
    );
}
