//! The storage contract's conformance suite (`store::contract`): every backend runs it through
//! [`suite!`], with a function that makes a fresh, empty store. Each scenario drives the trait as
//! the server's handlers do — pushes, pulls page by page (including a pull whose answer is
//! lost: the device presents its old cursor again), administration, review — and checks the
//! outcome on the pages a device was sent and on the backend-neutral snapshot, never on one
//! backend's tables.

// Each test binary that includes this module runs part of it.
#![allow(dead_code)]

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use baylink_server::store::Store;
use baylink_server::store::caller::{Caller, Role};
use baylink_server::store::contract::{Actor, NewAccount, StoreFuture, Verdict};
use baylink_server::store::pull::{Page, parse_cursor};
use baylink_server::store::snapshot::Snapshot;
use baylink_server::store::{StoreError, now_ms};
use baylink_sync::wire::{ChangeResult, ChangeStatus, Cursor, FieldValue};
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

/// Village 桥西 (澳头 station).
pub(crate) const A: &str = "441303006001";
/// Village 东升 (澳头 station).
pub(crate) const B: &str = "441303006002";

/// A store under test, and whatever must live as long as it (a temporary directory).
pub(crate) struct Backend {
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    /// Dropped after the store.
    pub(crate) keep: Box<dyn Any + Send>,
}

/// Runs every scenario of the suite against the backend `$make` makes (a fresh one each);
/// with `if $ready`, only when `$ready()` says the backend is there.
#[macro_export]
macro_rules! suite {
    ($make:path) => {
        $crate::suite!($make, if conformance::always);
    };
    ($make:path, if $ready:path) => {
        $crate::suite!(@tests $make, $ready;
            a_village_given_then_taken_before_its_records_all_arrived_is_dropped_from_the_device,
            registering_a_person_known_elsewhere_without_a_residence_here_changes_nothing_of_her,
            records_captured_in_a_village_taken_away_before_the_next_pull_are_dropped,
            a_pull_over_two_villages_merges_their_feeds_in_order_each_value_once,
            a_record_that_left_a_village_is_no_longer_in_its_feed,
            a_record_that_left_a_village_since_taken_from_the_officer_is_dropped_from_the_device,
            an_officer_who_lost_a_village_is_told_to_drop_only_what_it_held_when_last_seen,
            a_phone_that_wrote_in_a_village_since_taken_is_told_only_its_own_records_there_after,
            a_fresh_phone_paging_a_snapshot_while_its_village_changes_ends_with_the_village_as_it_is,
            a_push_replayed_is_answered_as_the_first_time_and_applied_once,
            refusals_are_kept_and_store_nothing,
            a_pull_page_writes_nothing_a_device_is_sent,
            what_a_write_causes_commits_with_it,
            a_review_and_its_audit_entry_commit_together_or_neither_does,
            administration_is_audited_with_what_it_did,
            a_conflict_settled_writes_the_value_chosen_with_its_audit_entry,
            a_merge_and_a_dismissal_are_written_with_their_audit_entries,
            concurrent_pushes_and_a_device_pulling_meanwhile_see_every_value_exactly_once,
            a_device_is_not_sent_back_its_own_accepted_values,
            a_search_finds_each_key_by_its_prefix_in_the_villages_searched_only,
        );
    };
    (@tests $make:path, $ready:path; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                if $ready() {
                    conformance::$name($make());
                }
            }
        )*
    };
}

/// Every backend is there (the embedded one).
pub(crate) fn always() -> bool {
    true
}

/// A device of an officer: its node, next counter and cursor.
pub(crate) struct Officer {
    /// Sign-in name.
    pub(crate) name: &'static str,
    /// The device.
    pub(crate) node: NodeId,
    counter: u64,
    cursor: Option<String>,
    /// What its pulls say it holds of its own (none: an earlier phone, sent everything).
    pub(crate) own_held_after: Option<u64>,
}

/// A device of officer `name`, its node `n`.
pub(crate) fn officer(name: &'static str, n: u128) -> Officer {
    Officer {
        name,
        node: NodeId(Uuid::from_u128(n)),
        counter: 0,
        cursor: None,
        own_held_after: None,
    }
}

/// A backend set up as the scenarios expect: Daya Bay's places, officers `oa` (village A, device
/// 1) and `ob` (village B, device 2), reviewer `r006` of their station.
pub(crate) struct Suite {
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    runtime: tokio::runtime::Runtime,
    accounts: BTreeMap<&'static str, i64>,
    _keep: Box<dyn Any + Send>,
}

impl Suite {
    /// Sets a fresh backend up.
    pub(crate) fn new(backend: Backend) -> Suite {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut suite = Suite {
            store: backend.store,
            runtime,
            accounts: BTreeMap::new(),
            _keep: backend.keep,
        };
        let places = baylink_server::demo::VILLAGES.to_owned();
        suite.run(suite.store.import_places(Actor::Operator, places));
        for (name, role, villages) in [
            ("oa", Role::Officer, vec![A]),
            ("ob", Role::Officer, vec![B]),
            ("r006", Role::Reviewer, vec![]),
            ("admin", Role::Admin, vec![]),
        ] {
            let new = NewAccount {
                username: name.to_owned(),
                display_name: name.to_owned(),
                role,
                station: (role != Role::Admin).then(|| "441303006".to_owned()),
                password_hash: "-".to_owned(),
                villages: villages.into_iter().map(str::to_owned).collect(),
            };
            let id = suite.run(suite.store.create_account(Actor::Operator, new));
            suite.accounts.insert(name, id);
        }
        suite.device("oa", 1);
        suite.device("ob", 2);
        suite
    }

    /// Runs a use case to its end; a failure fails the test.
    pub(crate) fn run<T>(&self, call: StoreFuture<T>) -> T {
        self.try_run(call).expect("store call")
    }

    /// Runs a use case to its end.
    pub(crate) fn try_run<T>(&self, call: StoreFuture<T>) -> Result<T, StoreError> {
        self.runtime.block_on(call)
    }

    /// Registers device `n` to officer `name`.
    pub(crate) fn device(&self, name: &str, n: u128) {
        let account = self.accounts[name];
        self.run(
            self.store
                .register_device(Uuid::from_u128(n), account, "p".into()),
        );
    }

    /// The caller a device's access token makes of it, as stored now.
    pub(crate) fn caller(&self, officer: &Officer) -> Caller {
        let holder = self.run(
            self.store
                .token_holder(officer.node.0, self.accounts[officer.name]),
        );
        let account = holder.account.expect("account");
        Caller {
            account: account.id,
            role: account.role,
            device: officer.node.to_string(),
            villages: holder.villages,
        }
    }

    /// A reviewer or administrator as the console acts for them.
    pub(crate) fn console_caller(&self, name: &str) -> Caller {
        let holder = self.run(self.store.token_holder(Uuid::nil(), self.accounts[name]));
        let account = holder.account.expect("account");
        Caller {
            account: account.id,
            role: account.role,
            device: "console".into(),
            villages: holder.villages,
        }
    }

    /// Pushes a person's fields, one stamp for all.
    pub(crate) fn push(
        &self,
        officer: &mut Officer,
        entity: Uuid,
        hlc_ms: u64,
        fields: &[(&str, Value)],
    ) -> Vec<ChangeResult> {
        self.push_kind(officer, "person", entity, hlc_ms, fields)
    }

    /// Pushes a record's fields, one stamp for all.
    pub(crate) fn push_kind(
        &self,
        officer: &mut Officer,
        kind: &str,
        entity: Uuid,
        hlc_ms: u64,
        fields: &[(&str, Value)],
    ) -> Vec<ChangeResult> {
        let changes = changes(officer, kind, entity, hlc_ms, fields);
        self.run(self.store.push(self.caller(officer), changes, 60_000))
    }

    /// One pull page; `deliver` false loses the answer (the cursor stays where it was).
    pub(crate) fn pull(&self, officer: &mut Officer, limit: u32, deliver: bool) -> Page {
        let cursor = officer.cursor.clone().map(Cursor);
        let from = parse_cursor(cursor.as_ref()).expect("cursor");
        let own = officer.own_held_after;
        let page = self.run(self.store.pull_page(self.caller(officer), from, limit, own));
        if deliver {
            officer.cursor = Some(page.next.0.clone());
        }
        page
    }

    /// Pulls pages, each delivered, until none is left: every value sent, in order.
    pub(crate) fn pull_all(
        &self,
        officer: &mut Officer,
        limit: u32,
    ) -> Vec<FieldValue<Box<RawValue>>> {
        let mut sent = Vec::new();
        loop {
            let page = self.pull(officer, limit, true);
            // Whole records: more values only when one record alone has more.
            let records: BTreeSet<Uuid> = page.values.iter().map(|v| v.entity).collect();
            assert!(
                page.values.len() <= limit as usize || records.len() == 1,
                "{} values",
                page.values.len()
            );
            sent.extend(page.values);
            if !page.more {
                return sent;
            }
        }
    }

    /// A house of `village` at `address` under id `house` (stamped `t`), and a residence in it
    /// of `person` (stamped `t + 1`), both pushed by `officer`; answers the residence's id.
    pub(crate) fn lodge(
        &self,
        officer: &mut Officer,
        (village, address, house): (&str, &str, Uuid),
        person: Uuid,
        t: u64,
    ) -> Uuid {
        self.push_kind(officer, "house", house, t, &house_fields(village, address));
        let fields = residence_fields(village, person, house);
        let residence = natural(baylink_domain::EntityKind::Residence, &fields);
        self.push_kind(officer, "residence", residence, t + 1, &fields);
        residence
    }

    /// Gives officer `name` exactly these villages.
    pub(crate) fn assign(&self, name: &str, villages: &[&str]) {
        let villages = villages.iter().map(|v| (*v).to_owned()).collect();
        self.run(
            self.store
                .assign_villages(Actor::Operator, name.to_owned(), villages),
        );
    }

    /// Everything the store holds, in one snapshot.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.run(self.store.snapshot())
    }

    /// Checks the invariants every state of every backend keeps; a failure fails the test.
    pub(crate) fn check(&self) {
        if let Err(e) = invariants(&self.snapshot()) {
            panic!("invariant broken: {e}");
        }
    }
}

/// The invariants of a stored state, recomputed from the snapshot alone (the sync simulation's,
/// in Rust): every value's record exists; each record's villages are the scope rule's
/// (`baylink_domain::scope`) over the stored values; each record stands at the newest of its
/// values' sequence numbers, no two records at one, none past the last issued; each village's
/// feed holds exactly the records in it, once each, at their numbers.
pub(crate) fn invariants(held: &Snapshot) -> Result<(), String> {
    use baylink_domain::scope::{Residence, person_villages, record_villages};
    let mut newest: BTreeMap<Uuid, i64> = BTreeMap::new();
    for ((entity, field), stored) in &held.values {
        if !held.entities.contains_key(entity) {
            return Err(format!("{entity} {field}: a value of no record"));
        }
        if stored.seq <= 0 || stored.seq > held.last_seq {
            return Err(format!("{entity} {field}: sequence number {}", stored.seq));
        }
        let at = newest.entry(*entity).or_default();
        *at = (*at).max(stored.seq);
    }
    let mut seqs = BTreeSet::new();
    for (id, entity) in &held.entities {
        if newest.get(id).copied().unwrap_or(0) != entity.seq {
            return Err(format!(
                "{id}: stands at {}, its newest value at {:?}",
                entity.seq,
                newest.get(id)
            ));
        }
        if !seqs.insert(entity.seq) {
            return Err(format!("{id}: sequence number {} taken twice", entity.seq));
        }
    }
    let text = |entity: Uuid, field: &str| held.value(entity, field).and_then(Value::as_str);
    let mut lives: BTreeMap<Uuid, Vec<Residence>> = BTreeMap::new();
    for (id, entity) in &held.entities {
        if entity.kind != "residence" {
            continue;
        }
        let Some(person) = text(*id, "person").and_then(|p| Uuid::parse_str(p).ok()) else {
            continue;
        };
        let house_village = text(*id, "house")
            .and_then(|h| Uuid::parse_str(h).ok())
            .and_then(|h| held.entities.get(&h))
            .and_then(|h| h.village.clone());
        lives.entry(person).or_default().push(Residence {
            house_village,
            moved_out: held.value(*id, "moved_out").is_some_and(|v| !v.is_null()),
            deleted: held.value(*id, "deleted") == Some(&Value::Bool(true)),
        });
    }
    let mut expected: BTreeSet<(Uuid, String)> = BTreeSet::new();
    for (id, entity) in &held.entities {
        let home = entity.village.as_deref();
        let villages = match entity.kind.as_str() {
            "person" => person_villages(home, lives.get(id).into_iter().flatten()),
            _ => record_villages(home),
        };
        expected.extend(villages.into_iter().map(|v| (*id, v)));
    }
    if expected != held.scopes {
        let extra: Vec<_> = held.scopes.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&held.scopes).collect();
        return Err(format!(
            "scopes: {extra:?} held but not the rule's, {missing:?} missing"
        ));
    }
    // Every village with a record or a feed: a feed row left where nothing is scoped is caught.
    let villages: BTreeSet<&String> = held
        .scopes
        .iter()
        .map(|(_, v)| v)
        .chain(held.feeds.keys())
        .collect();
    for village in villages {
        let fed: Vec<(i64, Uuid)> = held
            .feeds
            .get(village)
            .into_iter()
            .flatten()
            .map(|e| (e.seq, e.entity))
            .collect();
        let mut current: Vec<(i64, Uuid)> = held
            .entities
            .iter()
            .filter(|(e, _)| held.scopes.contains(&(**e, village.clone())))
            .map(|(e, entity)| (entity.seq, *e))
            .collect();
        current.sort_unstable();
        if fed != current {
            let extra: Vec<_> = fed
                .iter()
                .filter(|e| !current.contains(e))
                .take(3)
                .collect();
            let missing: Vec<_> = current
                .iter()
                .filter(|e| !fed.contains(e))
                .take(3)
                .collect();
            return Err(format!(
                "feed of {village}: {extra:?} extra, {missing:?} missing"
            ));
        }
    }
    Ok(())
}

/// A device's changes of one record, one stamp for all, counters after its last.
pub(crate) fn changes(
    officer: &mut Officer,
    kind: &str,
    entity: Uuid,
    hlc_ms: u64,
    fields: &[(&str, Value)],
) -> Vec<Change> {
    let stamp = Stamp::new(Hlc::new(hlc_ms, 0), officer.node);
    fields
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
            }
        })
        .collect()
}

/// A person with a passport, under the id a phone derives from it.
pub(crate) fn person(village: &str, n: u128) -> (Uuid, Vec<(&'static str, Value)>) {
    let fields = vec![
        ("village", json!(village)),
        ("id_type", json!("passport")),
        ("id_number", json!(format!("E{n:07}"))),
        ("name", json!(format!("P{n}"))),
    ];
    (natural(baylink_domain::EntityKind::Person, &fields), fields)
}

/// The id a phone derives for a record of these fields.
pub(crate) fn natural(kind: baylink_domain::EntityKind, fields: &[(&str, Value)]) -> Uuid {
    let values: baylink_domain::Fields = fields
        .iter()
        .map(|(f, v)| ((*f).to_owned(), v.clone()))
        .collect();
    baylink_domain::natural_id(kind, &values).expect("a natural key")
}

/// A whole house: its required fields.
pub(crate) fn house_fields(village: &str, address: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("village", json!(village)),
        ("address", json!(address)),
        ("use", json!("rental")),
        ("status", json!("in_use")),
    ]
}

/// A residence of `person` in `house`, in `village`.
pub(crate) fn residence_fields(
    village: &str,
    person: Uuid,
    house: Uuid,
) -> [(&'static str, Value); 5] {
    [
        ("village", json!(village)),
        ("person", json!(person.to_string())),
        ("house", json!(house.to_string())),
        ("moved_in", json!("2026-01-01")),
        ("relation", json!("tenant")),
    ]
}

/// The values of a village's records, as stored.
fn village_values(snapshot: &Snapshot, village: &str) -> BTreeMap<(Uuid, String), Value> {
    snapshot
        .values
        .iter()
        .filter(|((entity, _), _)| snapshot.scopes.contains(&(*entity, village.to_owned())))
        .map(|(key, stored)| (key.clone(), stored.value.clone()))
        .collect()
}

pub(crate) fn a_village_given_then_taken_before_its_records_all_arrived_is_dropped_from_the_device(
    backend: Backend,
) {
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let mut t = now_ms();
    for n in 0..3 {
        let (id, fields) = person(A, n);
        t += 1;
        s.push(&mut oa, id, t, &fields);
    }
    while s.pull(&mut ob, 100, true).more {}
    // B's officer is given A, and receives part of it...
    s.assign("ob", &[A, B]);
    let first = s.pull(&mut ob, 3, true);
    assert!(first.more && !first.values.is_empty());
    // ...then A is taken away again before the rest arrives: the next page says drop A's records,
    // and says it again when that answer is lost.
    s.assign("ob", &[B]);
    let lost = s.pull(&mut ob, 100, false);
    let again = s.pull(&mut ob, 100, true);
    for page in [&lost, &again] {
        for n in 0..3 {
            assert!(page.purged.contains(&person(A, n).0), "{:?}", page.purged);
        }
    }
    assert!(again.values.is_empty());
    s.check();
}

pub(crate) fn registering_a_person_known_elsewhere_without_a_residence_here_changes_nothing_of_her(
    backend: Backend,
) {
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let (id, fields) = person(B, 7);
    let t = now_ms();
    // B's officer registers her in B; A's officer, offline, registers her in A later by the
    // clock. Nothing brings her to A (no residence in A names her): refused, she stays B's.
    s.push(&mut ob, id, t, &fields);
    let (_, mut later) = person(A, 7);
    later.push(("phone", json!("13800138000")));
    let results = s.push(&mut oa, id, t + 60_000, &later);
    assert!(
        results
            .iter()
            .all(|r| r.status == ChangeStatus::Refused && r.code.as_deref() == Some("out_of_scope")),
        "{results:?}"
    );
    let held = s.snapshot();
    assert_eq!(held.entities[&id].village.as_deref(), Some(B));
    assert_eq!(held.value(id, "phone"), None);
    let page = s.pull(&mut oa, 100, true);
    assert!(page.values.iter().all(|v| v.entity != id));
    s.check();
}

pub(crate) fn records_captured_in_a_village_taken_away_before_the_next_pull_are_dropped(
    backend: Backend,
) {
    let s = Suite::new(backend);
    let mut ob = officer("ob", 2);
    while s.pull(&mut ob, 100, true).more {}
    s.assign("ob", &[A, B]);
    // Captured in A and pushed before any pull brought A...
    let (id, fields) = person(A, 9);
    s.push(&mut ob, id, now_ms(), &fields);
    // ...and A taken away: the phone holds a record of A that no pull ever sent it.
    s.assign("ob", &[B]);
    let lost = s.pull(&mut ob, 100, false);
    assert!(lost.purged.contains(&id));
    let page = s.pull(&mut ob, 100, true);
    assert!(page.purged.contains(&id), "told again after a lost answer");
    let after = s.pull(&mut ob, 100, true);
    assert!(after.purged.is_empty(), "once applied, not told again");
    s.check();
}

pub(crate) fn a_pull_over_two_villages_merges_their_feeds_in_order_each_value_once(
    backend: Backend,
) {
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    // B's officer is given A too, and is up to date: what follows comes through the feeds.
    s.assign("ob", &[A, B]);
    s.pull_all(&mut ob, 3);
    let mut t = now_ms();
    let mut order = Vec::new();
    for n in 0..4 {
        for (officer, village) in [(&mut oa, A), (&mut ob, B)] {
            let (id, fields) = person(village, n * 2 + u128::from(village == B));
            t += 1;
            s.push(officer, id, t, &fields);
            order.push(id);
        }
    }
    // A person of A who lives in a house of B: in both villages' feeds.
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    s.lodge(&mut ob, (B, "霞涌1巷1号", house), order[0], t + 1);
    let everything = |officer: &mut Officer| -> Vec<(Uuid, String)> {
        let sent = s.pull_all(officer, 3);
        sent.into_iter().map(|v| (v.entity, v.field)).collect()
    };
    let values = s.snapshot().values.len();
    // A fresh phone of B's officer, sent a snapshot of both villages, and the up-to-date one,
    // sent the feeds: each value once, every value of both villages.
    let fresh = everything(&mut officer("ob", 2));
    let seen = everything(&mut ob);
    for sent in [&fresh, &seen] {
        let once: BTreeSet<_> = sent.iter().collect();
        assert_eq!(once.len(), sent.len(), "each value once: {sent:?}");
        assert_eq!(sent.len(), values, "every value of both villages");
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
    s.check();
}

pub(crate) fn a_record_that_left_a_village_is_no_longer_in_its_feed(backend: Backend) {
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    // A phone of each village, up to date before: what follows reaches them through the feeds
    // (a fresh phone is sent a snapshot of its villages' records instead).
    let (mut phone_a, mut phone_b) = (officer("oa", 1), officer("ob", 2));
    s.pull_all(&mut phone_a, 100);
    s.pull_all(&mut phone_b, 100);
    let t = now_ms();
    // A person of B lives in a house of A, so is in both villages; then moves out.
    let (person, fields) = person(B, 1);
    s.push(&mut ob, person, t, &fields);
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let residence = s.lodge(&mut oa, (A, "澳头1巷1号", house), person, t + 1);
    let moved = [("moved_out", json!("2026-11-01"))];
    s.push_kind(&mut oa, "residence", residence, t + 3, &moved);
    // A's phone gets the house and the residence, nothing of the person; B's the person, whole.
    let sent = s.pull_all(&mut phone_a, 100);
    assert!(sent.iter().all(|v| v.entity != person), "{sent:?}");
    assert!(sent.iter().any(|v| v.entity == house && v.kind == "house"));
    assert!(
        sent.iter()
            .any(|v| v.entity == residence && v.kind == "residence" && v.field == "moved_out")
    );
    let sent = s.pull_all(&mut phone_b, 100);
    let values = s
        .snapshot()
        .values
        .keys()
        .filter(|(e, _)| *e == person)
        .count();
    assert_eq!(sent.iter().filter(|v| v.entity == person).count(), values);
    s.check();
}

pub(crate) fn a_record_that_left_a_village_since_taken_from_the_officer_is_dropped_from_the_device(
    backend: Backend,
) {
    const C: &str = "441303006003";
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    s.assign("oa", &[A, C]);
    let mut phone = officer("oa", 1);
    s.pull_all(&mut phone, 100);
    // A person of B lives in a house of A: A's officer's phone holds her.
    let t = now_ms();
    let (person, fields) = person(B, 1);
    s.push(&mut ob, person, t, &fields);
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0078);
    let residence = s.lodge(&mut oa, (A, "澳头2巷1号", house), person, t + 1);
    let sent = s.pull_all(&mut phone, 100);
    assert!(sent.iter().any(|v| v.entity == person));
    // Records of C registered meanwhile, before her move: the pull that follows takes pages.
    for n in 0..3 {
        let (id, fields) = self::person(C, 20 + n);
        s.push(&mut oa, id, t + 2, &fields);
    }
    // She moves out (she leaves A), and A is then taken from the officer, before the phone
    // pulls again: nothing of A's now holds her, yet the phone does.
    s.push_kind(
        &mut oa,
        "residence",
        residence,
        t + 3,
        &[("moved_out", json!("2026-11-01"))],
    );
    s.assign("oa", &[C]);
    let mut purged = BTreeSet::new();
    let mut pages = 0;
    loop {
        let page = s.pull(&mut phone, 5, true);
        purged.extend(page.purged);
        pages += 1;
        if !page.more {
            break;
        }
    }
    assert!(pages > 2, "{pages} pages");
    for id in [person, house, residence] {
        assert!(purged.contains(&id), "{id}: {purged:?}");
    }
    s.check();
}

/// A village taken from an officer: their phone is told to drop the village's records it may
/// hold, not the ids of records registered there since its last pull (after it was taken). A
/// cursor that does not say which records the phone holds (naming no villages, as an unsigned
/// one is read, or no position, as an earlier server's) starts the phone over instead.
pub(crate) fn an_officer_who_lost_a_village_is_told_to_drop_only_what_it_held_when_last_seen(
    backend: Backend,
) {
    const C: &str = "441303006003";
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    s.assign("oa", &[A, C]);
    s.assign("ob", &[A, B]);
    let t = now_ms();
    let (held, fields) = person(A, 1);
    s.push(&mut oa, held, t, &fields);
    let mut phone = officer("ob", 2);
    let sent = s.pull_all(&mut phone, 100);
    assert!(sent.iter().any(|v| v.entity == held));
    let cursor = phone.cursor.clone().expect("a cursor");
    // A is taken from B's officer. Then A's officer registers a person in A, and lodges a
    // person of C in a house of A, who moves out again (she left A: only her drop names her).
    s.assign("ob", &[B]);
    let (later, fields) = person(A, 2);
    s.push(&mut oa, later, t + 1, &fields);
    let (lodger, fields) = person(C, 3);
    s.push(&mut oa, lodger, t + 2, &fields);
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0079);
    let residence = s.lodge(&mut oa, (A, "澳头3巷1号", house), lodger, t + 3);
    let moved = [("moved_out", json!("2026-11-01"))];
    s.push_kind(&mut oa, "residence", residence, t + 5, &moved);
    // The cursor naming no villages, and the cursor without its position: told to start over,
    // told no ids (the pages are not applied).
    let position = baylink_server::auth::cursor::position_only(&cursor).0;
    let (unplaced, _) = cursor.rsplit_once('/').expect("a position in the cursor");
    for text in [position, unplaced.to_owned()] {
        let from = parse_cursor(Some(&Cursor(text.clone()))).expect("cursor");
        let caller = s.caller(&phone);
        match s.try_run(s.store.pull_page(caller, from, 100, None)) {
            Err(StoreError::Expired(_)) => {}
            other => panic!("{text}: {:?}", other.map(|p| p.purged)),
        }
    }
    // The cursor as issued: only what the phone held.
    let page = s.pull(&mut phone, 100, true);
    assert!(page.purged.contains(&held), "{:?}", page.purged);
    for id in [later, lodger, house, residence] {
        assert!(!page.purged.contains(&id), "told of {id}");
    }
    assert!(s.pull(&mut phone, 100, true).purged.is_empty());
    s.check();
}

/// A phone that wrote in a village since taken from its officer is told to drop the records it
/// held there once; after that (its next cursor no longer names the village, or it pulls from no
/// cursor) only its own records there, whichever of its cursors it presents, in whatever order.
pub(crate) fn a_phone_that_wrote_in_a_village_since_taken_is_told_only_its_own_records_there_after(
    backend: Backend,
) {
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    s.assign("ob", &[A, B]);
    let mut phone = officer("ob", 2);
    let t = now_ms();
    let (mine, fields) = person(A, 1);
    s.push(&mut phone, mine, t, &fields);
    let (theirs, fields) = person(A, 2);
    s.push(&mut oa, theirs, t, &fields);
    s.pull_all(&mut phone, 100);
    let first = phone.cursor.clone().expect("a cursor");
    s.assign("ob", &[B]);
    let (later, fields) = person(A, 3);
    s.push(&mut oa, later, t + 1, &fields);
    // The page after the loss: what the phone held of A.
    let page = s.pull(&mut phone, 100, true);
    assert!(page.purged.contains(&mine) && page.purged.contains(&theirs));
    assert!(!page.purged.contains(&later), "{:?}", page.purged);
    let second = phone.cursor.clone().expect("a cursor");
    // Then the first cursor again and the second (each presented after a write, so that the
    // village's note is told again), and no cursor at all.
    for (n, cursor) in (10..).zip([Some(first.clone()), Some(second), Some(first), None]) {
        let (id, fields) = person(B, n);
        s.push(&mut phone, id, t + 2, &fields);
        phone.cursor = cursor.clone();
        let page = s.pull(&mut phone, 100, false);
        assert!(
            !page.purged.contains(&later),
            "{cursor:?}: {:?}",
            page.purged
        );
        if cursor.is_none() {
            assert!(page.purged.contains(&mine) && !page.purged.contains(&theirs));
        }
    }
    s.check();
}

pub(crate) fn a_fresh_phone_paging_a_snapshot_while_its_village_changes_ends_with_the_village_as_it_is(
    backend: Backend,
) {
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let t = now_ms();
    // In id order: a house of A, a residence in it of a lodger from B, the lodger, ten persons.
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let (lodger, fields) = person(B, 0);
    s.push(&mut ob, lodger, t, &fields);
    let residence = s.lodge(&mut oa, (A, "澳头1巷1号", house), lodger, t + 1);
    for n in 10..20 {
        let (id, fields) = person(A, n);
        s.push(&mut oa, id, t + 3, &fields);
    }
    let mut phone = officer("oa", 1);
    let mut held: BTreeMap<(Uuid, String), (Value, Stamp)> = Default::default();
    let apply = |held: &mut BTreeMap<_, _>, page: &Page| {
        assert!(page.values.len() <= 24, "{} values", page.values.len());
        for v in &page.values {
            let key = (v.entity, v.field.clone());
            if held.get(&key).is_none_or(|(_, s)| *s < v.stamp) {
                let value: Value = serde_json::from_str(v.value.get()).expect("JSON");
                held.insert(key, (value, v.stamp));
            }
        }
        held.retain(|(entity, _), _| !page.purged.contains(entity));
    };
    // The first page: the house, the residence, the lodger and a field of the first person.
    let first = s.pull(&mut phone, 24, true);
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
    let moved = [("moved_out", json!("2026-11-01"))];
    s.push_kind(&mut oa, "residence", residence, t + 4, &moved);
    let address = [("address", json!("澳头1巷2号"))];
    s.push_kind(&mut oa, "house", house, t + 5, &address);
    for n in [10, 19] {
        let name = [("name", json!(format!("改{n}")))];
        s.push(&mut oa, person(A, n).0, t + 6, &name);
    }
    let (late, fields) = person(A, 5);
    s.push(&mut oa, late, t + 7, &fields);
    loop {
        let page = s.pull(&mut phone, 24, true);
        apply(&mut held, &page);
        if !page.more {
            break;
        }
    }
    let expected = village_values(&s.snapshot(), A);
    let got: BTreeMap<(Uuid, String), Value> = held.into_iter().map(|(k, (v, _))| (k, v)).collect();
    assert_eq!(got, expected);
    assert!(got.keys().all(|(entity, _)| *entity != lodger));
    assert_eq!(got[&(late, "name".to_owned())], json!("P5"));
    assert_eq!(got[&(house, "address".to_owned())], json!("澳头1巷2号"));
    assert_eq!(got[&(person(A, 19).0, "name".to_owned())], json!("改19"));
    s.check();
}

/// Contract 1: a push answered, then sent again (its answer lost), is answered the same and
/// applied once; its changes and a newer one together are applied once more only for the new.
pub(crate) fn a_push_replayed_is_answered_as_the_first_time_and_applied_once(backend: Backend) {
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    let (id, fields) = person(A, 1);
    let batch = changes(&mut oa, "person", id, now_ms(), &fields);
    let caller = s.caller(&oa);
    let push = |changes: Vec<Change>| s.run(s.store.push(caller.clone(), changes, 60_000));
    let first = push(batch.clone());
    assert!(
        first.iter().all(|r| r.status == ChangeStatus::Accepted),
        "{first:?}"
    );
    let before = s.snapshot();
    assert_eq!(push(batch.clone()), first);
    let after = s.snapshot();
    assert_eq!(after.values, before.values);
    assert_eq!(after.history, before.history);
    assert_eq!(after.last_seq, before.last_seq);
    // The same changes again, with one new: only the new one is applied.
    let mut more = batch;
    more.extend(changes(
        &mut oa,
        "person",
        id,
        now_ms() + 1,
        &[("phone", json!("13800138000"))],
    ));
    let answer = push(more);
    assert_eq!(answer[..first.len()], first[..]);
    let after = s.snapshot();
    assert_eq!(after.history.len(), before.history.len() + 1);
    assert_eq!(after.value(id, "phone"), Some(&json!("13800138000")));
    s.check();
}

/// Refused changes keep their refusal (a replay answers it again) and store nothing: unknown
/// kinds and fields, and fields only the console writes. A field the server owns is accepted
/// and keeps the server's value.
pub(crate) fn refusals_are_kept_and_store_nothing(backend: Backend) {
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    let (id, fields) = person(A, 2);
    s.push(&mut oa, id, now_ms(), &fields);
    let before = s.snapshot();
    let t = now_ms() + 1;
    let mut batch = changes(
        &mut oa,
        "starship",
        Uuid::now_v7(),
        t,
        &[("village", json!(A))],
    );
    batch.extend(changes(
        &mut oa,
        "person",
        id,
        t,
        &[("shoe_size", json!(42))],
    ));
    batch.extend(changes(
        &mut oa,
        "person",
        id,
        t,
        &[("review_comment", json!("好"))],
    ));
    let answer = s.run(s.store.push(s.caller(&oa), batch.clone(), 60_000));
    let codes: Vec<Option<&str>> = answer.iter().map(|r| r.code.as_deref()).collect();
    assert!(
        answer.iter().all(|r| r.status == ChangeStatus::Refused),
        "{answer:?}"
    );
    assert_eq!(
        codes,
        [Some("invalid"), Some("invalid"), Some("read_only")],
        "{answer:?}"
    );
    assert_eq!(s.run(s.store.push(s.caller(&oa), batch, 60_000)), answer);
    let after = s.snapshot();
    assert_eq!(after.values, before.values);
    assert_eq!(after.history, before.history);
    assert_eq!(after.entities, before.entities);
    // An officer approving her own record: answered, and the record stays pending.
    let approve = [("review_status", json!("approved"))];
    s.push(&mut oa, id, now_ms() + 2, &approve);
    assert_eq!(
        s.snapshot().value(id, "review_status"),
        Some(&json!("pending"))
    );
    s.check();
}

/// Contract 3: a pull page writes nothing a device is sent: values, history, feeds and
/// scopes read the same after pages of it, lost answers included.
pub(crate) fn a_pull_page_writes_nothing_a_device_is_sent(backend: Backend) {
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    for n in 0..5 {
        let (id, fields) = person(A, n);
        s.push(&mut oa, id, now_ms(), &fields);
    }
    let before = s.snapshot();
    let mut phone = officer("oa", 1);
    // A lost answer is read again the same way.
    let sent = |page: &Page| -> Vec<(Uuid, String, Stamp)> {
        page.values
            .iter()
            .map(|v| (v.entity, v.field.clone(), v.stamp))
            .collect()
    };
    let lost = s.pull(&mut phone, 3, false);
    let again = s.pull(&mut phone, 3, true);
    assert_eq!(sent(&lost), sent(&again));
    assert_eq!((lost.next, lost.more), (again.next, again.more));
    s.pull_all(&mut phone, 3);
    s.pull(&mut phone, 3, true);
    let after = s.snapshot();
    assert_eq!(after.values, before.values);
    assert_eq!(after.history, before.history);
    assert_eq!(after.feeds, before.feeds);
    assert_eq!(after.scopes, before.scopes);
    assert_eq!(after.last_seq, before.last_seq);
}

/// Contract 4: a record's scope, its village's feed and its history are there once its push
/// is answered; a change of residence moves its person into the house's village at once.
pub(crate) fn what_a_write_causes_commits_with_it(backend: Backend) {
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let t = now_ms();
    let (lodger, fields) = person(B, 3);
    s.push(&mut ob, lodger, t, &fields);
    let held = s.snapshot();
    assert!(held.scopes.contains(&(lodger, B.to_owned())));
    assert!(!held.scopes.contains(&(lodger, A.to_owned())));
    let fed: Vec<i64> = held.feeds[B]
        .iter()
        .filter(|e| e.entity == lodger)
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        fed,
        [held.entities[&lodger].seq],
        "the record is in its village's feed once, at its number"
    );
    assert!(
        held.values
            .iter()
            .filter(|((e, _), _)| *e == lodger)
            .all(|(_, stored)| stored.seq == held.entities[&lodger].seq),
        "its values were written together"
    );
    assert!(held.history.iter().filter(|w| w.entity == lodger).count() >= fields.len());
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0078);
    s.lodge(&mut oa, (A, "澳头2巷1号", house), lodger, t + 1);
    let held = s.snapshot();
    assert!(
        held.scopes.contains(&(lodger, A.to_owned())),
        "she lives in A now"
    );
    assert!(held.feeds[A].iter().any(|e| e.entity == lodger));
    s.check();
}

/// Contract 5: a review writes its decision and its audit entry together; a refused one
/// writes neither.
pub(crate) fn a_review_and_its_audit_entry_commit_together_or_neither_does(backend: Backend) {
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    let (id, fields) = person(A, 4);
    s.push(&mut oa, id, now_ms(), &fields);
    let reviewer = s.console_caller("r006");
    let refused = s.try_run(
        s.store
            .review(reviewer.clone(), id, Verdict::Return(" ".into())),
    );
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let held = s.snapshot();
    assert_eq!(held.audited("return"), 0);
    assert_ne!(held.value(id, "review_status"), Some(&json!("returned")));
    s.run(
        s.store
            .review(reviewer.clone(), id, Verdict::Return("电话号码有误".into())),
    );
    let held = s.snapshot();
    assert_eq!(held.audited("return"), 1);
    assert_eq!(held.value(id, "review_status"), Some(&json!("returned")));
    assert_eq!(
        held.value(id, "review_comment"),
        Some(&json!("电话号码有误"))
    );
    // An officer's review is refused, and writes nothing.
    let officer = s.caller(&oa);
    let refused = s.try_run(s.store.review(officer, id, Verdict::Approve(String::new())));
    assert!(refused.is_err());
    assert_eq!(s.snapshot().audited("approve"), 0);
    // An approval keeps the reviewer's note.
    s.run(
        s.store
            .review(reviewer, id, Verdict::Approve("已核对 ".into())),
    );
    let held = s.snapshot();
    assert_eq!(held.audited("approve"), 1);
    assert_eq!(held.value(id, "review_status"), Some(&json!("approved")));
    assert_eq!(held.value(id, "review_comment"), Some(&json!("已核对")));
    assert_eq!(
        held.summaries[&id].review_status.as_deref(),
        Some("approved")
    );
    s.check();
}

/// Contract 5: every administration step is audited, the operator's included.
pub(crate) fn administration_is_audited_with_what_it_did(backend: Backend) {
    let s = Suite::new(backend);
    let before = s.snapshot();
    assert_eq!(before.audited("import_places"), 1);
    assert_eq!(before.audited("add_account"), 4);
    s.assign("oa", &[A, B]);
    s.run(s.store.revoke_device(Actor::Operator, Uuid::from_u128(2)));
    let access = baylink_server::store::contract::Access::Disabled;
    // Only an administrator administers, as the store holds her: a reviewer is refused.
    let reviewer = Actor::Account(s.accounts["r006"]);
    let refused = s.try_run(s.store.set_access(reviewer, "ob".into(), access));
    assert!(
        matches!(refused, Err(StoreError::Forbidden(_))),
        "{refused:?}"
    );
    let refused = s.try_run(s.store.revoke_device(reviewer, Uuid::from_u128(1)));
    assert!(
        matches!(refused, Err(StoreError::Forbidden(_))),
        "{refused:?}"
    );
    let admin = Actor::Account(s.accounts["admin"]);
    s.run(s.store.set_access(admin, "ob".into(), access));
    let held = s.snapshot();
    for action in ["assign_villages", "revoke_device", "disable_account"] {
        assert_eq!(held.audited(action), 1, "{action}");
    }
    let disabled = held.audit.iter().find(|a| a.action == "disable_account");
    assert_eq!(disabled.and_then(|a| a.account), Some(s.accounts["admin"]));
    // A disabled administrator administers no more.
    s.run(s.store.set_access(Actor::Operator, "admin".into(), access));
    let enable = baylink_server::store::contract::Access::Enabled;
    let refused = s.try_run(s.store.set_access(admin, "ob".into(), enable));
    assert!(
        matches!(refused, Err(StoreError::Forbidden(_))),
        "{refused:?}"
    );
    // A step refused (no such account) is not audited.
    let missing = s.try_run(
        s.store
            .assign_villages(Actor::Operator, "nobody".into(), vec![]),
    );
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    assert_eq!(s.snapshot().audited("assign_villages"), 1);
}

/// Contract 5: settling a conflict writes the value chosen, closes the conflict and audits it,
/// in one transaction; a conflict settled is settled once.
pub(crate) fn a_conflict_settled_writes_the_value_chosen_with_its_audit_entry(backend: Backend) {
    let s = Suite::new(backend);
    s.device("oa", 10);
    let (mut phone, mut other) = (officer("oa", 1), officer("oa", 10));
    let (id, mut fields) = person(A, 5);
    fields.push(("phone", json!("13800138000")));
    let t = now_ms();
    s.push(&mut phone, id, t, &fields);
    // The officer's other phone, which never saw that number, writes another later.
    s.push(&mut other, id, t + 1, &[("phone", json!("13900139000"))]);
    let held = s.snapshot();
    assert_eq!(held.open_conflicts.get(&id), Some(&1));
    assert_eq!(held.value(id, "phone"), Some(&json!("13900139000")));
    let reviewer = s.console_caller("r006");
    let open = s.run(s.store.conflicts(reviewer.villages.clone(), 10));
    let conflict = open
        .iter()
        .find(|c| c.entity == id.to_string())
        .expect("listed");
    // An officer may not settle it (the console's use cases are not an officer's).
    let keep = baylink_server::store::contract::Keep::Lost;
    let officer = s.caller(&phone);
    let refused = s.try_run(s.store.settle_conflict(officer, conflict.id, keep));
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    s.run(s.store.settle_conflict(reviewer.clone(), conflict.id, keep));
    let held = s.snapshot();
    assert_eq!(held.value(id, "phone"), Some(&json!("13800138000")));
    assert_eq!(held.open_conflicts.get(&id), None);
    assert_eq!(held.audited("settle_conflict"), 1);
    let again = s.try_run(s.store.settle_conflict(reviewer, conflict.id, keep));
    assert!(matches!(again, Err(StoreError::NotFound(_))), "{again:?}");
    assert_eq!(s.snapshot().audited("settle_conflict"), 1);
    s.check();
}

/// Contract 5: a merge redirects the duplicate and repoints what named it; a dismissal is
/// recorded; each with its audit entry, and a refused one writes nothing.
pub(crate) fn a_merge_and_a_dismissal_are_written_with_their_audit_entries(backend: Backend) {
    let s = Suite::new(backend);
    let mut oa = officer("oa", 1);
    let t = now_ms();
    let (kept, fields) = person(A, 6);
    s.push(&mut oa, kept, t, &fields);
    let (duplicate, fields) = person(A, 7);
    s.push(&mut oa, duplicate, t, &fields);
    let (other, fields) = person(A, 8);
    s.push(&mut oa, other, t, &fields);
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0079);
    let residence = s.lodge(&mut oa, (A, "澳头3巷1号", house), duplicate, t + 1);
    let reviewer = s.console_caller("r006");
    let itself = s.try_run(s.store.merge_records(reviewer.clone(), kept, kept));
    assert!(itself.is_err());
    s.run(s.store.merge_records(reviewer.clone(), duplicate, kept));
    let held = s.snapshot();
    assert_eq!(
        held.value(duplicate, "merged_into"),
        Some(&json!(kept.to_string()))
    );
    assert_eq!(
        held.value(residence, "person"),
        Some(&json!(kept.to_string()))
    );
    assert_eq!(held.audited("merge"), 1);
    s.run(s.store.dismiss_pair(reviewer, kept, other));
    assert_eq!(s.snapshot().audited("dismiss_duplicate"), 1);
    s.check();
}

pub(crate) fn concurrent_pushes_and_a_device_pulling_meanwhile_see_every_value_exactly_once(
    backend: Backend,
) {
    let s = Suite::new(backend);
    if let Err(e) = concurrent_pushes_and_pulls(&s) {
        panic!("{e}");
    }
    s.check();
}

/// Contract 2 under concurrency: pushes from several devices at once, while a device pulls page
/// after page, end with the puller having every value exactly once — sequence numbers become
/// visible in commit order, so a pull never skips a value committed late, and never sends one
/// twice. Answers what went wrong, for the test that runs it against a broken backend.
pub(crate) fn concurrent_pushes_and_pulls(s: &Suite) -> Result<(), String> {
    const PHONES: u128 = 3;
    const RECORDS: u128 = 40;
    for n in 10..10 + PHONES {
        s.device("oa", n);
    }
    let mut reader = officer("oa", 1);
    // The reader has bootstrapped already: what follows comes from the villages' feeds.
    let (id, fields) = person(A, 999_999);
    s.push(&mut reader, id, now_ms(), &fields);
    let mut seen = s.pull_all(&mut reader, 50);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (10..10 + PHONES)
        .map(|n| {
            let (store, done) = (s.store.clone(), done.clone());
            let handle = s.runtime.handle().clone();
            let caller = s.caller(&officer("oa", n));
            std::thread::spawn(move || {
                let mut phone = officer("oa", n);
                let pushed = (0..RECORDS).try_for_each(|i| {
                    let (id, fields) = person(A, n * 1_000 + i);
                    let batch = changes(&mut phone, "person", id, now_ms(), &fields);
                    let results = handle
                        .block_on(store.push(caller.clone(), batch, 60_000))
                        .map_err(|e| format!("push: {e}"))?;
                    match results.iter().find(|r| r.status != ChangeStatus::Accepted) {
                        Some(refused) => Err(format!("push refused: {refused:?}")),
                        None => Ok(()),
                    }
                });
                // Counted done whatever happened, so the puller stops.
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                pushed
            })
        })
        .collect();
    // Pull while they push until they are done and the last page says nothing more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == PHONES as usize;
        let page = s.pull(&mut reader, 7, true);
        seen.extend(page.values);
        if finished && !page.more {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err("the pull never caught up with the pushes".into());
        }
    }
    for w in writers {
        w.join()
            .map_err(|_| "a pushing phone panicked".to_owned())??;
    }
    let mut once = BTreeSet::new();
    for v in &seen {
        if !once.insert((v.entity, v.field.clone(), v.stamp)) {
            return Err(format!("{} {} sent twice", v.entity, v.field));
        }
    }
    // None skipped: the puller's newest version of every field is the server's, stamp and value.
    let mut held: BTreeMap<(Uuid, String), (Stamp, Value)> = BTreeMap::new();
    for v in seen {
        let key = (v.entity, v.field.clone());
        if held.get(&key).is_none_or(|(stamp, _)| *stamp < v.stamp) {
            let value = serde_json::from_str(v.value.get()).expect("JSON");
            held.insert(key, (v.stamp, value));
        }
    }
    let snapshot = s.snapshot();
    let stored: BTreeMap<(Uuid, String), (Stamp, Value)> = snapshot
        .values
        .iter()
        .filter(|((e, _), _)| snapshot.scopes.contains(&(*e, A.to_owned())))
        .map(|(key, stored)| (key.clone(), (stored.stamp, stored.value.clone())))
        .collect();
    let persons: BTreeSet<Uuid> = stored.keys().map(|(id, _)| *id).collect();
    if persons.len() != (PHONES * RECORDS + 1) as usize {
        return Err(format!("{} persons stored", persons.len()));
    }
    let missed = stored.keys().filter(|k| !held.contains_key(k)).count();
    if missed > 0 {
        return Err(format!("{missed} of {} values never sent", stored.len()));
    }
    if held != stored {
        return Err("the puller's versions differ from the server's".into());
    }
    Ok(())
}

/// No echo: a pull leaves out the values the device itself wrote and the server accepted, above
/// the counter it says it holds its own values from, unless something newer replaced them; the
/// server's own values, another device's and an earlier phone's (which says nothing) are sent.
pub(crate) fn a_device_is_not_sent_back_its_own_accepted_values(backend: Backend) {
    let s = Suite::new(backend);
    let mut phone = officer("oa", 1);
    phone.own_held_after = Some(0);
    let t = now_ms();
    let people: Vec<Uuid> = (0..3)
        .map(|n| {
            let (id, fields) = person(A, 40 + n);
            s.push(&mut phone, id, t + n as u64, &fields);
            id
        })
        .collect();
    let mine = phone.node;
    let sent = s.pull_all(&mut phone, 5);
    assert!(sent.iter().all(|v| v.stamp.node != mine), "{sent:?}");
    // Every value of the records is on the phone: what it wrote, and what it was sent.
    let held = s.snapshot();
    let mut on_phone: BTreeSet<(Uuid, String)> =
        sent.iter().map(|v| (v.entity, v.field.clone())).collect();
    for id in &people {
        for (field, _) in person(A, 0).1 {
            on_phone.insert((*id, field.to_owned()));
        }
        assert!(on_phone.contains(&(*id, "created_by".to_owned())));
    }
    let stored: BTreeSet<(Uuid, String)> = held
        .values
        .keys()
        .filter(|(e, _)| people.contains(e))
        .cloned()
        .collect();
    assert_eq!(on_phone, stored);
    // Another phone's edit of one of them is sent; its other values are not sent again.
    s.device("oa", 3);
    let mut other = officer("oa", 3);
    s.push(&mut other, people[0], t + 10, &[("name", json!("改名"))]);
    let sent = s.pull_all(&mut phone, 5);
    let got: Vec<(Uuid, String)> = sent.iter().map(|v| (v.entity, v.field.clone())).collect();
    assert_eq!(got, [(people[0], "name".to_owned())]);
    // A phone that says nothing (an earlier version) is sent its own values too, and so is one
    // that dropped records since writing them (its floor above their counters).
    for own in [None, Some(phone.counter)] {
        let mut again = officer("oa", 1);
        again.own_held_after = own;
        let sent = s.pull_all(&mut again, 50);
        assert!(sent.iter().any(|v| v.stamp.node == mine), "{own:?}");
        assert_eq!(sent.len(), village_values(&held, A).len(), "{own:?}");
    }
    s.check();
}

/// One step of [`a_phone_whose_villages_change_is_told_only_what_it_may_hold`].
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// A's officer (who holds A and B) registers a person in A or B.
    Register { in_b: bool },
    /// The phone captures a person in one of its officer's villages (the `pick`th).
    Capture { pick: usize },
    /// The station gives the phone's officer A and B, B only, or A only.
    Assign(u8),
    /// The phone pulls with its last cursor, an earlier one it was given (the `pick`th), or
    /// none; the answer reaches it (and the phone applies it: its last cursor only) or is lost.
    Pull {
        cursor: u8,
        pick: usize,
        deliver: bool,
    },
}

/// What the phone of the generated test was sent, wrote, holds and was given.
#[derive(Default)]
struct Model {
    sent: BTreeSet<Uuid>,
    own: BTreeSet<Uuid>,
    held: BTreeSet<Uuid>,
    given: Vec<String>,
}

/// One pull of the generated test (`cursor` presented, the answer delivered or not, applied
/// when it answers the phone's last cursor), checked: every value in `villages`, every drop of
/// a record the phone was sent or wrote. Whether more pages follow.
fn generated_pull(
    s: &Suite,
    phone: &mut Officer,
    (cursor, deliver, apply): (Option<String>, bool, bool),
    villages: &[&str],
    model: &mut Model,
) -> Result<bool, proptest::test_runner::TestCaseError> {
    let latest = phone.cursor.clone();
    phone.cursor = cursor;
    let page = s.pull(phone, 1_000, deliver);
    if !(deliver && apply) {
        phone.cursor = latest;
    }
    let snapshot = s.snapshot();
    for v in &page.values {
        let lies = villages
            .iter()
            .any(|village| snapshot.scopes.contains(&(v.entity, (*village).to_owned())));
        proptest::prop_assert!(lies, "sent {} outside {:?}", v.entity, villages);
        model.sent.insert(v.entity);
    }
    for id in &page.purged {
        proptest::prop_assert!(
            model.sent.contains(id) || model.own.contains(id),
            "told to drop {} it was never sent nor wrote",
            id
        );
    }
    if deliver && apply {
        model.held.extend(page.values.iter().map(|v| v.entity));
        for id in &page.purged {
            model.held.remove(id);
        }
        model.given.extend(phone.cursor.clone());
    }
    Ok(page.more)
}

/// Random steps of a phone whose officer gains and loses villages while records are registered
/// in them, its pulls made with any cursor it was given (a stale one, none) and answers lost.
/// After every pull: each id it is told to drop is one it was sent or wrote, each value lies in
/// its officer's villages now. At the end, pulled to the end with its last cursor, the phone
/// holds exactly the records of its officer's villages.
pub(crate) fn a_phone_whose_villages_change_is_told_only_what_it_may_hold(
    make: fn() -> Backend,
    cases: u32,
) {
    use proptest::prelude::*;
    let step = prop_oneof![
        3 => any::<bool>().prop_map(|in_b| Step::Register { in_b }),
        2 => (0..2usize).prop_map(|pick| Step::Capture { pick }),
        2 => (0..3u8).prop_map(Step::Assign),
        4 => (0..3u8, 0..8usize, any::<bool>())
            .prop_map(|(cursor, pick, deliver)| Step::Pull { cursor, pick, deliver }),
    ];
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(step, 1..24), |steps| {
        let s = Suite::new(make());
        s.assign("oa", &[A, B]);
        let mut oa = officer("oa", 1);
        let mut phone = officer("ob", 2);
        let mut villages: Vec<&str> = vec![B];
        let mut model = Model::default();
        let t = now_ms();
        for (n, step) in (100..).zip(steps) {
            match step {
                Step::Register { in_b } => {
                    let (id, fields) = person(if in_b { B } else { A }, n);
                    s.push(&mut oa, id, t + n as u64, &fields);
                }
                Step::Capture { pick } => {
                    let village = villages[pick % villages.len()];
                    let (id, fields) = person(village, n);
                    let results = s.push(&mut phone, id, t + n as u64, &fields);
                    prop_assert!(results.iter().all(|r| r.status == ChangeStatus::Accepted));
                    model.own.insert(id);
                    model.held.insert(id);
                }
                Step::Assign(which) => {
                    villages = match which {
                        0 => vec![A, B],
                        1 => vec![B],
                        _ => vec![A],
                    };
                    s.assign("ob", &villages);
                }
                Step::Pull {
                    cursor,
                    pick,
                    deliver,
                } => {
                    let (text, apply) = match cursor {
                        0 => (phone.cursor.clone(), true),
                        1 if !model.given.is_empty() => {
                            (Some(model.given[pick % model.given.len()].clone()), false)
                        }
                        _ => (None, false),
                    };
                    generated_pull(
                        &s,
                        &mut phone,
                        (text, deliver, apply),
                        &villages,
                        &mut model,
                    )?;
                }
            }
        }
        // Pulled to the end with its last cursor: exactly its officer's villages' records.
        for pages in 0.. {
            let cursor = phone.cursor.clone();
            if !generated_pull(&s, &mut phone, (cursor, true, true), &villages, &mut model)? {
                break;
            }
            prop_assert!(pages < 100, "no end to the pull");
        }
        let expected: BTreeSet<Uuid> = s
            .snapshot()
            .scopes
            .iter()
            .filter(|(_, village)| villages.contains(&village.as_str()))
            .map(|(id, _)| *id)
            .collect();
        prop_assert_eq!(&model.held, &expected);
        s.check();
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

pub(crate) fn a_search_finds_each_key_by_its_prefix_in_the_villages_searched_only(
    backend: Backend,
) {
    use baylink_server::store::records::Filter;
    let s = Suite::new(backend);
    let (mut oa, mut ob) = (officer("oa", 1), officer("ob", 2));
    let t = now_ms();
    // A person and a house in each village, the same prefixes in both.
    let mut written = BTreeMap::new();
    let mut plates = Vec::new();
    for (officer, village, n) in [(&mut oa, A, 1u128), (&mut ob, B, 2)] {
        let fields = vec![
            ("village", json!(village)),
            ("id_type", json!("passport")),
            ("id_number", json!(format!("E900000{n}"))),
            ("name", json!(format!("王芳{n}"))),
            ("phone", json!(format!("1380013800{n}"))),
        ];
        let person = natural(baylink_domain::EntityKind::Person, &fields);
        let accepted = s.push(officer, person, t + n as u64, &fields);
        assert!(
            accepted.iter().all(|r| r.status == ChangeStatus::Accepted),
            "{accepted:?}"
        );
        let house = Uuid::from_u128(0x7000_8000_0000_0000_0100 + n);
        let address = format!("澳头{n}巷1号");
        let accepted = s.push_kind(
            officer,
            "house",
            house,
            t + 10 + n as u64,
            &house_fields(village, &address),
        );
        assert!(
            accepted.iter().all(|r| r.status == ChangeStatus::Accepted),
            "{accepted:?}"
        );
        let plate = baylink_domain::synthetic::plate(n as u64);
        let vehicle_fields = vec![
            ("village", json!(village)),
            ("plate", json!(plate)),
            ("vehicle_type", json!("car")),
        ];
        let vehicle = natural(baylink_domain::EntityKind::Vehicle, &vehicle_fields);
        let accepted = s.push_kind(
            officer,
            "vehicle",
            vehicle,
            t + 20 + n as u64,
            &vehicle_fields,
        );
        assert!(
            accepted.iter().all(|r| r.status == ChangeStatus::Accepted),
            "{accepted:?}"
        );
        written.insert((village, "person"), person);
        written.insert((village, "house"), house);
        written.insert((village, "vehicle"), vehicle);
        plates.push(plate);
    }
    let station = vec![A.to_owned(), B.to_owned()];
    let found = |villages: &[String], village: Option<&str>, query: &str| -> Vec<Uuid> {
        let filter = Filter {
            village: village.map(str::to_owned),
            query: Some(query.to_owned()),
            ..Filter::default()
        };
        s.run(s.store.records(villages.to_vec(), filter, 50, 0))
            .into_iter()
            .map(|row| row.id.parse().expect("an id"))
            .collect()
    };
    let (pa, pb) = (written[&(A, "person")], written[&(B, "person")]);
    let (ha, hb) = (written[&(A, "house")], written[&(B, "house")]);
    // Each key by its prefix, newest first, in every village searched.
    for query in ["王芳", " 王 芳", "1380013800", "e900 000"] {
        assert_eq!(found(&station, None, query), vec![pb, pa], "{query}");
        assert_eq!(found(&[A.to_owned()], None, query), vec![pa], "{query}");
        assert_eq!(found(&station, Some(B), query), vec![pb], "{query}");
    }
    assert_eq!(found(&station, None, "王芳2"), vec![pb]);
    assert_eq!(found(&station, None, "13800138001"), vec![pa]);
    assert_eq!(found(&station, None, "澳头"), vec![hb, ha]);
    assert_eq!(found(&[B.to_owned()], None, "澳头"), vec![hb]);
    assert_eq!(found(&station, Some(A), "澳头1"), vec![ha]);
    let (va, vb) = (written[&(A, "vehicle")], written[&(B, "vehicle")]);
    assert_eq!(found(&station, None, &plates[1]), vec![vb]);
    let shared: String = plates[0]
        .chars()
        .zip(plates[1].chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    assert!(shared.chars().count() >= 2, "{plates:?}");
    assert_eq!(found(&station, None, &shared), vec![vb, va]);
    // A village not the caller's, a prefix nobody holds, a text inside a key but not at its
    // start, a text that is no key: nothing.
    assert!(found(&[A.to_owned()], Some(B), "王芳").is_empty());
    let inside: String = plates[0].chars().skip(1).collect();
    for query in [
        "李",
        "13900",
        "澳头3",
        "·",
        "芳1",
        "0013800",
        "巷1号",
        "9000001",
        inside.as_str(),
    ] {
        assert!(found(&station, None, query).is_empty(), "{query}");
    }
    s.check();
}
