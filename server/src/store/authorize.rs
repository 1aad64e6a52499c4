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
    Date, EntityKind, FieldType, Fields, KEY_FIELDS, Writer, missing_derived, natural_id,
    natural_key, to_text, validate_record, validate_values,
};
use baylink_sync::hlc::too_far_ahead;
use baylink_sync::merge::merge_field;
use baylink_sync::wire::refusal;
use baylink_sync::{Change, EntityState, NodeId};
use serde_json::Value;
use uuid::Uuid;

use crate::store::accounts::Role;

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

/// A record as the server holds it.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// Its stored kind.
    pub kind: String,
    /// The villages it lies in (its scope).
    pub villages: BTreeSet<String>,
    /// Its current values with their stamps (read for the records a push writes, not for those
    /// it only names).
    pub state: EntityState,
}

/// What the server knows when it decides a push.
pub struct Facts<'a> {
    /// The caller's role.
    pub role: Role,
    /// The caller's villages.
    pub villages: &'a [String],
    /// The pushing device.
    pub device: NodeId,
    /// The last counter of this device the server applied.
    pub last_counter: u64,
    /// Server time.
    pub now_ms: u64,
    /// How far ahead of server time a stamp may be.
    pub max_ahead_ms: u64,
    /// Today, in China.
    pub today: Date,
    /// Every stored record the push names, as the record written or as a reference.
    pub records: &'a HashMap<Uuid, Held>,
}

/// The decision on one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Already processed: answered as the first time.
    Replay,
    /// Refused for good (or, for `clock_ahead`, until restamped).
    Refuse {
        /// Refusal code.
        code: &'static str,
        /// What is wrong, in Chinese and English.
        message: String,
    },
    /// Merged as sent.
    Apply,
    /// Accepted, and the server writes its own value instead: a server-owned field, or a field
    /// of a record's home village ([`HOME_ONLY`]) sent by a caller who holds it from elsewhere.
    Own,
}

impl Decision {
    fn refuse(code: &'static str, message: impl Into<String>) -> Decision {
        Decision::Refuse {
            code,
            message: message.into(),
        }
    }

    /// Whether the change is accepted (applied as sent or replaced by the server's value).
    pub fn accepted(&self) -> bool {
        matches!(self, Decision::Apply | Decision::Own)
    }
}

fn out_of_scope(why: &str) -> Decision {
    Decision::refuse(
        refusal::OUT_OF_SCOPE,
        format!("不在您的辖区 / out of scope: {why}"),
    )
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

/// The kinds no two live records of which may share a natural key (a residence's key is its
/// person, house and date: a second one is a second stay, merged by its id).
fn is_keyed(kind: EntityKind) -> bool {
    matches!(
        kind,
        EntityKind::Person | EntityKind::Vehicle | EntityKind::House
    )
}

/// The key values a push gives records (new ones, edits of stored ones, or bringing them back
/// by undeleting them), by where they are found: the summary's `id_number` and `plate` columns,
/// or houses' `address_code` field. The push reads every live record that already holds one as
/// a fact, so that no key ends on two records.
pub fn edited_keys(
    changes: &[Change],
    records: &HashMap<Uuid, Held>,
) -> BTreeSet<(String, &'static str, String)> {
    let mut keys = BTreeSet::new();
    for change in changes {
        let held = records.get(&change.entity);
        let kind = held.map_or(change.kind.as_str(), |h| h.kind.as_str());
        // The field holding the key's text, for every change that may change the key: the
        // text itself, what qualifies it (an ID type, a plate kind and the vehicle type it
        // derives from), or an undeletion (null or false).
        let column = match (kind, change.field.as_str()) {
            ("person", "id_number" | "id_type") => "id_number",
            ("vehicle", "plate" | "plate_kind" | "vehicle_type") => "plate",
            ("house", "address_code") => "address_code",
            ("person" | "vehicle" | "house", "deleted") if change.value != Value::Bool(true) => {
                match kind {
                    "person" => "id_number",
                    "vehicle" => "plate",
                    _ => "address_code",
                }
            }
            _ => continue,
        };
        let value = if change.field == column {
            change.value.clone()
        } else if let Some(held) = held {
            value_of(&held.state, column).clone()
        } else {
            continue;
        };
        if let Some(text) = value.as_str() {
            keys.insert((kind.to_owned(), column, text.to_owned()));
        }
    }
    keys
}

/// A record's values as its key reads them: with the derived fields it lacks filled in, as
/// the push will fill them (a plate kind left out is the vehicle type's).
fn keyed(kind: EntityKind, mut values: Fields, today: Date) -> Fields {
    let fills = missing_derived(kind, &values, today);
    values.extend(fills);
    values
}

/// The records a push's natural keys might collide with, by id: for each stored record whose
/// key fields the push changes, the id its key would then give; for each new record whose id
/// is not the one its key gives, that one (held by a record with another key, it is why).
/// The push reads them, with their values, as facts too.
pub fn key_collisions(
    changes: &[Change],
    records: &HashMap<Uuid, Held>,
    today: Date,
) -> BTreeSet<Uuid> {
    let mut keys: HashMap<Uuid, (EntityKind, Fields)> = HashMap::new();
    for change in changes {
        let held = records.get(&change.entity);
        let kind_name = held.map_or(change.kind.as_str(), |h| h.kind.as_str());
        let Some(kind) = EntityKind::parse(kind_name).filter(|k| is_keyed(*k)) else {
            continue;
        };
        if held.is_some()
            && !KEY_FIELDS.contains(&change.field.as_str())
            && change.field != "vehicle_type"
        {
            continue;
        }
        keys.entry(change.entity)
            .or_insert_with(|| (kind, held.map(|h| values(&h.state)).unwrap_or_default()))
            .1
            .insert(change.field.clone(), change.value.clone());
    }
    keys.into_iter()
        .filter_map(|(id, (kind, after))| {
            natural_id(kind, &keyed(kind, after, today)).filter(|n| *n != id)
        })
        .collect()
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

/// What the records decided so far in a push add to the server's facts.
struct World {
    /// Records this push creates (accepted), by kind.
    created: HashMap<Uuid, EntityKind>,
    /// Persons an accepted residence of this push names: they move into the caller's village.
    arrivals: HashSet<Uuid>,
    /// Derived fields to fill in, by record.
    fills: HashMap<Uuid, Fields>,
    /// Natural keys this push gave records (created, changed or brought back), by record: a
    /// second record given one in the same push is refused as if it were stored.
    claimed: HashMap<String, Uuid>,
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

/// A new record, or an edit of a stored one, that gives it the natural key of another live
/// record (a person's ID number, a plate with its kind, an address code): two records would then
/// be one person, vehicle or house. A new record is refused whole; an edit's key changes are
/// refused; both with a pointer to the other record when the caller may open it (a reviewer
/// merges true duplicates).
fn refuse_key_collision(
    facts: &Facts<'_>,
    changes: &[Change],
    (id, kind): (Uuid, EntityKind),
    held: Option<&Held>,
    idx: &[usize],
    plan: &mut [Option<Decision>],
    world: &mut World,
) {
    if !is_keyed(kind) {
        return;
    }
    let key_of = |state: &EntityState| natural_key(kind, &keyed(kind, values(state), facts.today));
    let after = merged_after(held, changes, idx, plan);
    let gone = |state: &EntityState, field: &str| {
        let value = value_of(state, field);
        !value.is_null() && value != &Value::Bool(false)
    };
    // The key as the push leaves it, when the push creates the record, changes its key or
    // brings it back.
    let undeleted = held.is_some_and(|h| gone(&h.state, "deleted")) && !gone(&after, "deleted");
    let Some(new_key) = key_of(&after) else {
        return;
    };
    if held.is_some_and(|h| key_of(&h.state).as_ref() == Some(&new_key) && !undeleted) {
        return;
    }
    // Another live record of the kind holding that key: the one its id names, or any other
    // stored, or one this push gave it before.
    let holds = |other: &Held| {
        other.kind == kind.as_str()
            && !gone(&other.state, "deleted")
            && !gone(&other.state, "merged_into")
            && key_of(&other.state).as_ref() == Some(&new_key)
    };
    let natural = natural_id(kind, &keyed(kind, values(&after), facts.today)).filter(|n| *n != id);
    let stored = natural
        .and_then(|n| facts.records.get(&n).filter(|o| holds(o)).map(|o| (n, o)))
        .or_else(|| {
            facts
                .records
                .iter()
                .filter(|(other, _)| **other != id)
                .find(|(_, o)| holds(o) && !o.state.is_empty())
                .map(|(n, o)| (*n, o))
        });
    let other = match stored {
        Some((n, o)) => Some((
            n,
            facts.role == Role::Admin || o.villages.iter().any(|v| facts.villages.contains(v)),
        )),
        // The caller's own, in this very push: visible.
        None => world
            .claimed
            .get(&new_key)
            .filter(|c| **c != id)
            .map(|c| (*c, true)),
    };
    let Some((natural, visible)) = other else {
        world.claimed.insert(new_key, id);
        return;
    };
    let (zh, en) = match kind {
        EntityKind::Vehicle => ("号牌", "plate"),
        EntityKind::House => ("地址编码", "address code"),
        _ => ("证件号码", "ID number"),
    };
    let message = if visible {
        format!(
            "{zh}：与另一条记录（{natural}）相同。请核对；若是同一{}，请审核人员合并两条记录 / {en}: another record ({natural}) has it. Check it; if both are the same, a reviewer merges them",
            kind.label_zh()
        )
    } else {
        format!(
            "{zh}：与其他村（社区）的一条记录相同，请核对 / {en}: a record of another village has it; check it"
        )
    };
    let refused = Decision::refuse(refusal::INVALID, message);
    if held.is_none() {
        for &i in idx {
            plan[i] = Some(refused.clone());
        }
        return;
    }
    // The key and what derives from it go together: a refused number must not leave its birth
    // date, sex and origin behind on the record.
    let derived = ["gender", "birth_date", "origin_code", "origin_name"];
    for &i in idx {
        let field = changes[i].field.as_str();
        if (KEY_FIELDS.contains(&field) || derived.contains(&field) || field == "deleted")
            && plan[i].as_ref().is_some_and(Decision::accepted)
        {
            plan[i] = Some(refused.clone());
        }
    }
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
        let why = if kind == EntityKind::Person {
            "此人已在其他村（社区）登记：请在您辖区的房屋登记其居住信息 / this person is registered in another village: register the residence in a house of yours to bring the person here"
        } else {
            "this record lies outside your villages"
        };
        return refuse_all(plan, &out_of_scope(why));
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
    for &i in idx {
        plan[i] = Some(decide_field(
            facts,
            changes,
            &changes[i],
            kind,
            held,
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
    // The record as this push leaves it must be whole and valid: errors it did not have before
    // refuse the changes that bring them, or the record's whole push when no change of it does.
    let before: BTreeSet<String> = held.map_or_else(BTreeSet::new, |h| {
        validate_record(kind, &values(&h.state), facts.today)
            .into_iter()
            .map(|e| e.field)
            .collect()
    });
    for round in 0..2 {
        let after = merged_after(held, changes, idx, plan);
        let new_errors: Vec<_> = validate_record(kind, &values(&after), facts.today)
            .into_iter()
            .filter(|e| !before.contains(&e.field))
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
    refuse_key_collision(facts, changes, (id, kind), held, idx, plan, world);
    if idx
        .iter()
        .any(|&i| plan[i].as_ref().is_some_and(Decision::accepted))
    {
        let after = values(&merged_after(held, changes, idx, plan));
        let fills = missing_derived(kind, &after, facts.today);
        if !fills.is_empty() {
            world.fills.insert(id, fills);
        }
        if held.is_none() {
            // A record with a natural key (a person's ID number, a plate, an address code) has
            // the id it gives: no one may hold that id with another key and keep the real
            // record out. Unless a record holds that id with another key already (one edited
            // off its key since, or a motorcycle captured before plate kinds counted): then the
            // new record takes a fresh time-ordered id, which is no one's natural id.
            let keyed_after = keyed(kind, after.clone(), facts.today);
            let taken = |natural: &Uuid| {
                facts.records.get(natural).is_some_and(|o| {
                    natural_key(kind, &keyed(kind, values(&o.state), facts.today))
                        != natural_key(kind, &keyed_after)
                })
            };
            if let Some(natural) = natural_id(kind, &keyed_after)
                .filter(|n| *n != id && !(taken(n) && id.get_version_num() == 7))
            {
                let message = format!(
                    "id：记录编号与其证件号码、号牌或地址编码不符 / id: {id} is not the id its natural key gives ({natural})"
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

/// The decision on one field change of a record the caller may write.
fn decide_field(
    facts: &Facts<'_>,
    changes: &[Change],
    change: &Change,
    kind: EntityKind,
    held: Option<&Held>,
    home: bool,
    world: &World,
) -> Decision {
    let Some(spec) = kind.field(&change.field) else {
        return Decision::refuse(refusal::INVALID, "field");
    };
    if SERVER_OWNED.contains(&spec.name) {
        return Decision::Own;
    }
    if !home && HOME_ONLY.contains(&spec.name) {
        // Held here because she lives here (or moves in): her home village's officers keep who
        // she is and where she belongs.
        return Decision::Own;
    }
    if spec.name == "deleted" {
        return if change.value.is_boolean() || change.value.is_null() {
            Decision::Apply
        } else {
            Decision::refuse(
                refusal::INVALID,
                "deleted：应为是或否 / deleted: must be true or false",
            )
        };
    }
    debug_assert!(spec.writer != Writer::System, "system field {}", spec.name);
    if spec.name == "village" {
        let mine = change
            .value
            .as_str()
            .is_some_and(|v| facts.villages.iter().any(|m| m == v));
        if facts.role != Role::Admin && !change.value.is_null() && !mine {
            return out_of_scope(&format!(
                "village {} is not one of yours",
                to_text(&change.value)
            ));
        }
    }
    if change.value.is_null() {
        return Decision::Apply;
    }
    // The value itself, with the document type it is read by (this push's or the stored one).
    let mut values = Fields::from([(change.field.clone(), change.value.clone())]);
    if change.field == "id_number" {
        let id_type = changes
            .iter()
            .rev()
            .find(|c| c.entity == change.entity && c.field == "id_type")
            .map(|c| c.value.clone())
            .or_else(|| {
                held.and_then(|h| h.state.get("id_type"))
                    .map(|v| v.value.clone())
            });
        if let Some(id_type) = id_type {
            values.insert("id_type".into(), id_type);
        }
    }
    if let Some(error) = validate_values(kind, &values, facts.today)
        .into_iter()
        .find(|e| e.field == change.field)
    {
        return Decision::refuse(refusal::INVALID, error.to_string());
    }
    if let Some((target, target_id)) = reference(change) {
        return decide_reference(facts, kind, spec.name, spec.zh, target, target_id, world);
    }
    Decision::Apply
}

/// Whether a reference field may name `id`: a stored or just created record of the right kind,
/// in the caller's villages (a residence's person may live anywhere: she moves in).
fn decide_reference(
    facts: &Facts<'_>,
    kind: EntityKind,
    field: &str,
    label: &str,
    target: EntityKind,
    id: Uuid,
    world: &World,
) -> Decision {
    let (found, reachable) = match (world.created.get(&id), facts.records.get(&id)) {
        (Some(created), _) => (Some(created.as_str()), true),
        (None, Some(held)) => (
            Some(held.kind.as_str()),
            facts.role == Role::Admin
                || held.villages.iter().any(|v| facts.villages.contains(v))
                || world.arrivals.contains(&id),
        ),
        (None, None) => (None, false),
    };
    let moves_in = kind == EntityKind::Residence && field == "person";
    match found {
        Some(k) if k == target.as_str() && (reachable || moves_in) => Decision::Apply,
        // Another kind in the caller's villages may be said; elsewhere it is not the caller's to know.
        Some(k) if reachable && k != target.as_str() => Decision::refuse(
            refusal::INVALID,
            format!(
                "{label}：应指向{}记录 / {field}: must name a {target}, names a {k}",
                target.label_zh()
            ),
        ),
        // No such record and one outside the caller's villages are told alike: the caller may
        // not learn which.
        _ => Decision::refuse(
            refusal::OUT_OF_SCOPE,
            format!(
                "{label}：您的辖区内没有这个{} / {field}: names no {target} in your villages",
                target.label_zh()
            ),
        ),
    }
}

/// A record's values with their stamps after the changes planned to apply.
fn merged_after(
    held: Option<&Held>,
    changes: &[Change],
    idx: &[usize],
    plan: &[Option<Decision>],
) -> EntityState {
    let mut state = held.map(|h| h.state.clone()).unwrap_or_default();
    for &i in idx {
        if plan[i] == Some(Decision::Apply) {
            merge_field(&mut state, &changes[i].field, changes[i].version());
        }
    }
    state
}

/// A record's values without their stamps.
pub fn values(state: &EntityState) -> Fields {
    state
        .iter()
        .map(|(field, v)| (field.clone(), v.value.clone()))
        .collect()
}

/// The merged value of `field` in a state, as JSON (`Null` when absent).
pub fn value_of<'a>(state: &'a EntityState, field: &str) -> &'a Value {
    state.get(field).map_or(&Value::Null, |v| &v.value)
}
