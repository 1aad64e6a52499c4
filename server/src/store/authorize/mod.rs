//! Who may write what: the decision on every change of a push, made from what the server holds
//! and nothing the device claims, before anything is written. Pure: the push reads the facts
//! (each named record's stored kind, villages and values), this module plans, the push applies.
//!
//! The rules, each a finding of docs/security.md's threat model:
//! - a change is the pushing device's own: its stamp names that device, its counter follows the
//!   device's last one by a bounded step (a counter far ahead would make every later change look
//!   like a replay);
//! - a record keeps its stored kind: a change claiming another kind is refused;
//! - a stored record is written only by a caller whose villages it lies in; the one way into a
//!   caller's scope is a residence in the caller's village naming a person who moves in, and that
//!   brings the person named, nothing else (her home village stays hers);
//! - a new record is created only whole: its village one of the caller's, every required field
//!   present and valid, derived fields agreeing with what they derive from, its id the one its
//!   natural key gives;
//! - a reference names a stored (or in this push created) record of the field's kind, in the
//!   caller's villages (a residence's person excepted: that is the move-in);
//! - review and merge fields belong to the console; creation and review-state fields to the
//!   server, which writes its own value in their place.

use std::collections::{BTreeSet, HashMap, HashSet};

use baylink_domain::{
    EntityKind, FieldType, Fields, Writer, excerpt, missing_derived, natural_id, natural_key,
    read_with, to_text, validate_record, validate_value,
};
use baylink_sync::hlc::too_far_ahead;
use baylink_sync::wire::refusal;
use baylink_sync::{Change, EntityState};
use serde_json::Value;
use uuid::Uuid;

use crate::store::caller::Role;

mod facts;
mod field;
mod keys;
pub mod review;

pub use facts::{Compacted, Decision, Facts, Held};
use facts::{World, merged_after, value_of, values};
use field::decide_field;
pub(crate) use keys::keyed;
use keys::refuse_key_collision;
pub use keys::{edited_keys, key_collisions};

/// How far past the device's last counter a change's counter may be: a phone writes far fewer
/// changes than this between two syncs, and an honest outbox numbers its changes one by one.
pub const MAX_COUNTER_STEP: u64 = 1 << 24;

/// Fields the server writes itself: a device's write of one is answered as accepted and
/// replaced by the server's value (old apps send them with every capture).
pub const SERVER_OWNED: [&str; 3] = ["created_by", "created_at", "review_status"];

/// Fields of a record that only the officers of its home village write: who it is, where it
/// belongs, whether it exists. A caller who holds a person only because she lives in their
/// village (or moves in) sends them in vain: the server keeps its values (see [`Decision::Own`]).
pub const HOME_ONLY: [&str; 9] = [
    "village",
    "deleted",
    "id_type",
    "id_number",
    "gender",
    "birth_date",
    "origin_code",
    "origin_name",
    "category",
];

/// Fields only the console's audited use cases write, never a device, whatever its role.
pub const CONSOLE_ONLY: [&str; 2] = ["review_comment", "merged_into"];

fn out_of_scope(why: &str) -> Decision {
    Decision::refuse(
        refusal::OUT_OF_SCOPE,
        format!("不在您的辖区 / out of scope: {why}"),
    )
}

/// The refusal of a change to a record of another village (held, or compacted away), by the kind
/// the change claims.
fn outside(kind: EntityKind) -> Decision {
    out_of_scope(if kind == EntityKind::Person {
        "此人已在其他村（社区）登记：请在您辖区的房屋登记其居住信息 / this person is registered in another village: register the residence in a house of yours to bring the person here"
    } else {
        "this record lies outside your villages"
    })
}

/// The ids of every record a push names: the records written and those its reference fields
/// name, which the server reads before deciding.
pub fn named_records(changes: &[Change]) -> BTreeSet<Uuid> {
    let mut ids = BTreeSet::new();
    for change in changes {
        ids.insert(change.entity);
        if let Some(target) = reference(change) {
            ids.insert(target.1);
        }
    }
    ids
}

/// The kind and id a change's reference field names, if the field is one and names an id.
fn reference(change: &Change) -> Option<(EntityKind, Uuid)> {
    let spec = EntityKind::parse(&change.kind)?.field(&change.field)?;
    let FieldType::Ref(target) = spec.ty else {
        return None;
    };
    let id = Uuid::parse_str(change.value.as_str()?).ok()?;
    Some((target, id))
}

/// The order in which a push's records are decided: what others reference first, and a person
/// known elsewhere after the residences that may bring her in.
fn rank(kind: EntityKind, arriving: bool) -> u8 {
    match kind {
        EntityKind::House => 0,
        EntityKind::Person if !arriving => 1,
        EntityKind::Residence => 2,
        EntityKind::Person => 3,
        EntityKind::Vehicle | EntityKind::Visit | EntityKind::Dispute => 4,
    }
}

/// A push's plan: the decision on each change, and what the server writes beside them.
#[derive(Debug, Default)]
pub struct Plan {
    /// The decision on each change, in the push's order.
    pub decisions: Vec<Decision>,
    /// Derived fields a written record lacks, as the server derives them (a device that left
    /// out a person's origin cannot keep her off a watch list of her region).
    pub fills: HashMap<Uuid, Fields>,
}

/// Decides every change of a push, in its order. Nothing here reads or writes storage.
pub fn plan_push(facts: &Facts<'_>, changes: &[Change]) -> Plan {
    let mut plan: Vec<Option<Decision>> = vec![None; changes.len()];
    let mut seen = facts.last_counter;
    let mut groups: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (i, change) in changes.iter().enumerate() {
        if let Some(decision) = first_look(facts, change, &mut seen) {
            plan[i] = Some(decision);
            continue;
        }
        groups.entry(change.entity).or_default().push(i);
    }
    let mine = |villages: &BTreeSet<String>| {
        facts.role == Role::Admin || villages.iter().any(|v| facts.villages.contains(v))
    };
    let mut order: Vec<(u8, Uuid)> = groups
        .keys()
        .map(|id| {
            let kind = EntityKind::parse(&changes[groups[id][0]].kind);
            let held = facts.records.get(id);
            let arriving = held.is_some_and(|h| !mine(&h.villages));
            (kind.map_or(5, |k| rank(k, arriving)), *id)
        })
        .collect();
    order.sort_unstable();
    let mut world = World {
        created: HashMap::new(),
        arrivals: HashSet::new(),
        fills: HashMap::new(),
        claimed: HashMap::new(),
        held_keys: None,
    };
    for (_, id) in order {
        let idx = &groups[&id];
        decide_record(facts, changes, id, idx, &mut plan, &mut world);
    }
    Plan {
        decisions: plan
            .into_iter()
            .map(|d| d.unwrap_or_else(|| Decision::refuse(refusal::INVALID, "undecided")))
            .collect(),
        fills: world.fills,
    }
}

/// The checks that need no record: replays, counters, the stamp's device, the clock, the kind
/// and field, console-only and server-owned fields. `None`: decided with its record.
fn first_look(facts: &Facts<'_>, change: &Change, seen: &mut u64) -> Option<Decision> {
    let counter = change.id.counter;
    if counter <= *seen {
        return Some(Decision::Replay);
    }
    if counter > facts.last_counter.saturating_add(MAX_COUNTER_STEP) {
        return Some(Decision::refuse(
            refusal::INVALID,
            format!(
                "计数器跳跃过大 / counter: {counter} is more than {MAX_COUNTER_STEP} past this device's last ({})",
                facts.last_counter
            ),
        ));
    }
    *seen = counter;
    if change.stamp.node != facts.device || change.id.device != facts.device {
        return Some(Decision::refuse(
            refusal::INVALID,
            "时间戳不属于本设备 / stamp: names another device than the one pushing",
        ));
    }
    if too_far_ahead(change.stamp.hlc, facts.now_ms, facts.max_ahead_ms) {
        let ahead_s = change.stamp.hlc.millis().saturating_sub(facts.now_ms) / 1000;
        return Some(Decision::refuse(
            refusal::CLOCK_AHEAD,
            format!(
                "时间戳超前服务器{ahead_s}秒，请校时后重发 / stamped {ahead_s} s ahead of server time: restamp and resend"
            ),
        ));
    }
    // The server stores only what it can validate: a newer app meets an upgraded server first.
    let Some(kind) = EntityKind::parse(&change.kind) else {
        return Some(Decision::refuse(
            refusal::INVALID,
            format!(
                "kind：未知的记录类型“{0}” / kind: `{0}` is not a kind this server knows",
                change.kind
            ),
        ));
    };
    let Some(spec) = kind.field(&change.field) else {
        return Some(Decision::refuse(
            refusal::INVALID,
            format!(
                "{0}：{1}没有这个字段 / {0}: a {kind} has no such field",
                change.field,
                kind.label_zh()
            ),
        ));
    };
    if CONSOLE_ONLY.contains(&spec.name) {
        return Some(Decision::refuse(
            refusal::READ_ONLY,
            format!(
                "{}：只能在审核台修改 / {}: only the console's review may set it",
                spec.zh, spec.en
            ),
        ));
    }
    None
}

/// Decides the changes of one record that passed [`first_look`].
fn decide_record(
    facts: &Facts<'_>,
    changes: &[Change],
    id: Uuid,
    idx: &[usize],
    plan: &mut [Option<Decision>],
    world: &mut World,
) {
    let refuse_all = |plan: &mut [Option<Decision>], decision: &Decision| {
        for &i in idx {
            if plan[i].as_ref().is_none_or(Decision::accepted) {
                plan[i] = Some(decision.clone());
            }
        }
    };
    let claimed = &changes[idx[0]].kind;
    let Some(kind) = EntityKind::parse(claimed) else {
        return refuse_all(plan, &Decision::refuse(refusal::INVALID, "kind"));
    };
    if idx.iter().any(|&i| &changes[i].kind != claimed) {
        let message = "kind：同一记录不能有两种类型 / kind: one record, two kinds";
        return refuse_all(plan, &Decision::refuse(refusal::INVALID, message));
    }
    let held = facts.records.get(&id);
    let admin = facts.role == Role::Admin;
    let in_scope =
        held.is_none_or(|h| admin || h.villages.iter().any(|v| facts.villages.contains(v)));
    let arriving = !in_scope && kind == EntityKind::Person && world.arrivals.contains(&id);
    // Whether the caller holds the record's home village (a new record's is checked below).
    let home = held.is_none_or(|h| {
        admin
            || value_of(&h.state, "village")
                .as_str()
                .is_some_and(|v| facts.villages.iter().any(|m| m == v))
    });
    if !in_scope && !arriving {
        return refuse_all(plan, &outside(kind));
    }
    if let Some(held) = held.filter(|h| h.kind != claimed.as_str()) {
        let message = format!(
            "kind：此记录是{}，不是{} / kind: this record is a {}, not a {claimed}",
            EntityKind::parse(&held.kind).map_or("?", EntityKind::label_zh),
            kind.label_zh(),
            held.kind
        );
        return refuse_all(plan, &Decision::refuse(refusal::INVALID, message));
    }
    // The document type a new ID number is read by, field by field: the last this push sends
    // for the record, or the stored one. Worked out once: a record's changes may be many. The
    // record as merged is checked again below, by the type it ends with.
    let id_type = idx
        .iter()
        .rev()
        .map(|&i| &changes[i])
        .find(|c| c.field == "id_type")
        .map(|c| c.value.clone())
        .or_else(|| {
            held.and_then(|h| h.state.get("id_type"))
                .map(|v| v.value.clone())
        });
    for &i in idx {
        plan[i] = Some(decide_field(
            facts,
            &changes[i],
            id_type.as_ref(),
            kind,
            home,
            world,
        ));
    }
    // A new record in a village not the caller's is not the caller's at all.
    if held.is_none() {
        let elsewhere = idx.iter().find_map(|&i| match &plan[i] {
            Some(d @ Decision::Refuse { code, .. }) if *code == refusal::OUT_OF_SCOPE => {
                Some(d.clone())
            }
            _ => None,
        });
        if let Some(decision) = elsewhere {
            // Over every other reason: the record is not the caller's to be told more of.
            for &i in idx {
                plan[i] = Some(decision.clone());
            }
            return;
        }
    }
    // A change of a record deleted and compacted away since: nothing is left to change, and
    // what the deletion outranked must not bring the record back. Sent whole again, stamped
    // after everything the server ever took for it, it is a new registration of the record.
    let compacted = facts.compacted.get(&id).filter(|_| held.is_none());
    if let Some(last) = compacted {
        // Decided as the tombstone would have been: another village's record is not the
        // caller's (nor its history theirs to inherit), and a record keeps its kind.
        let home = last
            .village
            .as_ref()
            .is_none_or(|v| admin || facts.villages.contains(v));
        if !home {
            // Told as a live record of another village is: the answer says nothing of whether
            // it was deleted.
            return refuse_all(plan, &outside(kind));
        }
        if last.kind != claimed.as_str() {
            let message = format!(
                "kind：此记录是{}，不是{} / kind: this record is a {}, not a {claimed}",
                EntityKind::parse(&last.kind).map_or("?", EntityKind::label_zh),
                kind.label_zh(),
                last.kind
            );
            return refuse_all(plan, &Decision::refuse(refusal::INVALID, message));
        }
        let older = idx.iter().any(|&i| changes[i].stamp <= last.newest);
        let after = merged_after(held, changes, idx, plan);
        let whole = validate_record(kind, &values(&after), facts.today).is_empty();
        // Whole, but stamped before what the record last had (a phone that never saw the
        // deletion, its clock a little behind): stamped again from the server's time, which is
        // past it, the registration goes through.
        if whole && older && last.newest.hlc.millis() < facts.now_ms {
            let message = "记录曾被删除：请以服务器时间重新标记后再发送 / the record was deleted \
                           after this was stamped: restamp from the server's time and send again";
            return refuse_all(plan, &Decision::refuse(refusal::CLOCK_AHEAD, message));
        }
        if older || !whole {
            let message =
                "该记录已删除，服务器不再保留 / the record was deleted and is no longer kept";
            return refuse_all(plan, &Decision::refuse(refusal::GONE, message));
        }
    }
    // The record as this push leaves it must be whole and valid: errors it did not have before
    // refuse the changes that bring them, or the record's whole push when no change of it does.
    // An error it had already (captured under older rules) is let be only while its field, and
    // every field its rule reads with it, keep their values: a new value is checked in the
    // record as merged, not through a document type the push sends that may not win.
    let before: BTreeSet<String> = held.map_or_else(BTreeSet::new, |h| {
        validate_record(kind, &values(&h.state), facts.today)
            .into_iter()
            .map(|e| e.field)
            .collect()
    });
    let kept = |after: &EntityState, field: &str| {
        held.is_some_and(|h| value_of(&h.state, field) == value_of(after, field))
    };
    let let_be = |after: &EntityState, field: &String| {
        before.contains(field)
            && kept(after, field)
            && read_with(kind, field).iter().all(|f| kept(after, f))
    };
    let mut after = merged_after(held, changes, idx, plan);
    for round in 0..2 {
        if round > 0 {
            after = merged_after(held, changes, idx, plan);
        }
        let new_errors: Vec<_> = validate_record(kind, &values(&after), facts.today)
            .into_iter()
            .filter(|e| !let_be(&after, &e.field))
            .collect();
        if new_errors.is_empty() {
            break;
        }
        let written: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| plan[i] == Some(Decision::Apply))
            .collect();
        let mut blamed = false;
        for error in &new_errors {
            let brought: Vec<usize> = written
                .iter()
                .copied()
                .filter(|&i| changes[i].field == error.field)
                .collect();
            for i in &brought {
                plan[*i] = Some(Decision::refuse(refusal::INVALID, error.to_string()));
            }
            blamed |= !brought.is_empty();
        }
        let unblamed = new_errors
            .iter()
            .any(|e| !written.iter().any(|&i| changes[i].field == e.field));
        if unblamed || round == 1 || !blamed {
            let first = new_errors
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let message = if held.is_none() {
                format!("新记录不完整或无效 / a new record must be whole and valid: {first}")
            } else {
                format!("修改后记录无效 / the record would be invalid: {first}")
            };
            return refuse_all(plan, &Decision::refuse(refusal::INVALID, message));
        }
    }
    // The record as the plan leaves it, worked out again only when the key check changed it.
    if refuse_key_collision(facts, changes, (id, kind), held, idx, plan, &after, world) {
        after = merged_after(held, changes, idx, plan);
    }
    if idx
        .iter()
        .any(|&i| plan[i].as_ref().is_some_and(Decision::accepted))
    {
        let after = values(&after);
        let derived = missing_derived(kind, &after, facts.today);
        // The record's values with what derives from them, by which its natural key is read.
        let mut keyed_after = after.clone();
        keyed_after.extend(derived.clone());
        let mut fills = derived;
        // Registered again after its tombstone was compacted: each field the record had and
        // this registration leaves out is written empty, after it, so that a phone still
        // holding the old record (deleted, its old values) ends with the new one exactly.
        if let Some(last) = compacted {
            // The fields the server writes itself at a creation get its values, not nothing.
            let left_out = last
                .fields
                .iter()
                .filter(|f| !after.contains_key(*f) && !SERVER_OWNED.contains(&f.as_str()));
            for field in left_out {
                fills.entry(field.clone()).or_insert(Value::Null);
            }
        }
        if !fills.is_empty() {
            world.fills.insert(id, fills);
        }
        if held.is_none() {
            // A record with a natural key (a person's ID number, a plate, an address code) has
            // the id it gives: no one may hold that id with another key and keep the real
            // record out. Unless a record holds that id with another key already (one edited
            // off its key since, or a motorcycle captured before plate kinds counted): then the
            // new record takes a fresh time-ordered id, which is no one's natural id.
            let taken = |natural: &Uuid| {
                facts.records.get(natural).is_some_and(|o| {
                    natural_key(kind, &keyed(kind, values(&o.state), facts.today))
                        != natural_key(kind, &keyed_after)
                })
            };
            if let Some(natural) = natural_id(kind, &keyed_after)
                .filter(|n| *n != id && !(taken(n) && id.get_version_num() == 7))
            {
                // A fresh id from a phone whose copy of the key's record was behind (it had
                // another key there, or was deleted since): the officer syncs and captures again.
                let message = if id.get_version_num() == 7 {
                    format!(
                        "id：已有记录（{natural}）使用此证件号码、号牌或地址编码，请同步后重新采集 / id: a record ({natural}) has this key already: sync, then capture again"
                    )
                } else {
                    format!(
                        "id：记录编号与其证件号码、号牌或地址编码不符 / id: {id} is not the id its natural key gives ({natural})"
                    )
                };
                return refuse_all(plan, &Decision::refuse(refusal::INVALID, message));
            }
            // A record with no natural key (a visit, a dispute, a house without an address
            // code) takes a fresh time-ordered id: never another record's natural id, which
            // would keep that record out of its own village.
            if natural_id(kind, &keyed_after).is_none() && id.get_version_num() != 7 {
                let message = format!(
                    "id：无自然键的记录须使用新生成的编号（UUIDv7） / id: a record with no natural key takes a fresh time-ordered id (UUIDv7), not {id}"
                );
                return refuse_all(plan, &Decision::refuse(refusal::INVALID, message));
            }
            world.created.insert(id, kind);
        }
        // A person moves in by a residence that, as this push leaves it, names her and is open:
        // not one whose naming lost the merge, nor one moved out or deleted in the same push.
        if kind == EntityKind::Residence {
            let open = after.get("moved_out").is_none_or(Value::is_null)
                && after.get("deleted") != Some(&Value::Bool(true));
            let named = after
                .get("person")
                .and_then(Value::as_str)
                .and_then(|p| Uuid::parse_str(p).ok());
            let placed = idx
                .iter()
                .any(|&i| changes[i].field == "person" && plan[i] == Some(Decision::Apply));
            if let (true, true, Some(person)) = (open, placed, named) {
                world.arrivals.insert(person);
            }
        }
    } else if held.is_none() {
        // Nothing of a new record accepted: nothing of it may be written (a server-owned field
        // alone would otherwise create it).
        refuse_all(
            plan,
            &out_of_scope("a new record needs its village and its fields"),
        );
    }
}
