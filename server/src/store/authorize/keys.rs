//! Natural keys: no two live records of a kind share one. Which stored records a push's keys may collide with (for the push to read as facts), and the refusal of a change that would make two.

use std::collections::{BTreeSet, HashMap};

use baylink_domain::{
    Date, EntityKind, Fields, KEY_FIELDS, missing_derived, natural_id, natural_key,
};
use baylink_sync::wire::refusal;
use baylink_sync::{Change, EntityState};
use serde_json::Value;
use uuid::Uuid;

use super::facts::{Decision, Facts, Held, World, value_of, values};
use crate::store::caller::Role;

/// The kinds no two live records of which may share a natural key (a residence's key is its
/// person, house and date: a second one is a second stay, merged by its id).
pub(crate) fn is_keyed(kind: EntityKind) -> bool {
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
pub(crate) fn keyed(kind: EntityKind, mut values: Fields, today: Date) -> Fields {
    let fills = missing_derived(kind, &values, today);
    values.extend(fills);
    values
}

/// The records a push's natural keys might collide with, by id: for each stored record whose
/// key fields the push changes, the id its key would then give; for each new record with a fresh
/// id (UUIDv7), the id its key gives (held by a record with another key, it is why).
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
        // A new record with another id than its key's is refused unless it took a fresh id
        // because that id is held: only then is the key's record a fact (an honest capture
        // has its key's id, and the push spares its key here).
        if held.is_none() && change.entity.get_version_num() != 7 {
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

/// Whether a record's `deleted` or `merged_into` says it is gone.
fn gone(state: &EntityState, field: &str) -> bool {
    let value = value_of(state, field);
    !value.is_null() && value != &Value::Bool(false)
}

/// The push's stored facts that are live records of a keyed kind, by their natural key as
/// stored: read once per push (looking through every fact for each new record was quadratic in
/// the push's size).
fn held_keys<'w>(facts: &Facts<'_>, world: &'w mut World) -> &'w HashMap<String, Vec<Uuid>> {
    world.held_keys.get_or_insert_with(|| {
        let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (id, held) in facts.records {
            let Some(kind) = EntityKind::parse(&held.kind).filter(|k| is_keyed(*k)) else {
                continue;
            };
            let state = &held.state;
            if state.is_empty() || gone(state, "deleted") || gone(state, "merged_into") {
                continue;
            }
            if let Some(key) = natural_key(kind, &keyed(kind, values(&held.state), facts.today)) {
                by_key.entry(key).or_default().push(*id);
            }
        }
        by_key
    })
}

/// A new record, or an edit of a stored one, that gives it the natural key of another live
/// record (a person's ID number, a plate with its kind, an address code): two records would then
/// be one person, vehicle or house. A new record is refused whole; an edit's key changes are
/// refused; both with a pointer to the other record when the caller may open it (a reviewer
/// merges true duplicates).
#[allow(clippy::too_many_arguments)]
pub(crate) fn refuse_key_collision(
    facts: &Facts<'_>,
    changes: &[Change],
    (id, kind): (Uuid, EntityKind),
    held: Option<&Held>,
    idx: &[usize],
    plan: &mut [Option<Decision>],
    after: &EntityState,
    world: &mut World,
) -> bool {
    if !is_keyed(kind) {
        return false;
    }
    let key_of = |state: &EntityState| natural_key(kind, &keyed(kind, values(state), facts.today));
    // The key as the push leaves it, when the push creates the record, changes its key or
    // brings it back.
    let undeleted = held.is_some_and(|h| gone(&h.state, "deleted")) && !gone(after, "deleted");
    let keyed_after = keyed(kind, values(after), facts.today);
    let Some(new_key) = natural_key(kind, &keyed_after) else {
        return false;
    };
    if held.is_some_and(|h| key_of(&h.state).as_ref() == Some(&new_key) && !undeleted) {
        return false;
    }
    // Another live record of the kind holding that key: the one its id names, or any other
    // stored, or one this push gave it before.
    let holds = |other: &Held| {
        other.kind == kind.as_str()
            && !gone(&other.state, "deleted")
            && !gone(&other.state, "merged_into")
            && key_of(&other.state).as_ref() == Some(&new_key)
    };
    let natural = natural_id(kind, &keyed_after).filter(|n| *n != id);
    let stored = natural
        .and_then(|n| facts.records.get(&n).filter(|o| holds(o)).map(|o| (n, o)))
        .or_else(|| {
            held_keys(facts, world)
                .get(&new_key)?
                .iter()
                .find(|other| **other != id)
                .and_then(|n| facts.records.get(n).map(|o| (*n, o)))
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
        return false;
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
        return true;
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
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::authorize::facts::numbered;
    use crate::store::authorize::plan_push;
    use baylink_sync::{Hlc, NodeId, Stamp, Versioned};
    use serde_json::json;
    use std::collections::BTreeSet;

    const VILLAGE: &str = "441303006001";
    /// 2026-12-01 10:00 in China.
    const NOW: u64 = 1_796_090_400_000;

    /// A stored person holding the passport `number`, with `extra` values beside.
    fn stored(number: &str, extra: &[(&str, Value)]) -> Held {
        let node = NodeId(Uuid::from_u128(7));
        let stamp = Stamp::new(Hlc::new(NOW - 86_400_000, 0), node);
        let mut values = vec![
            ("village", json!(VILLAGE)),
            ("id_type", json!("passport")),
            ("id_number", json!(number)),
            ("name", json!("王芳")),
        ];
        values.extend(extra.iter().cloned());
        Held {
            kind: "person".into(),
            villages: BTreeSet::from([VILLAGE.to_owned()]),
            state: values
                .into_iter()
                .map(|(f, value)| (f.to_owned(), Versioned { value, stamp }))
                .collect(),
        }
    }

    /// What the push of a new person holding `number` (with its key's id, as a phone gives it)
    /// is decided, given the stored `records`.
    fn decide(number: &str, records: &HashMap<Uuid, Held>) -> Decision {
        let device = NodeId(Uuid::from_u128(9));
        let stamp = Stamp::new(Hlc::new(NOW - 60_000, 0), device);
        let fields = [
            ("village", json!(VILLAGE)),
            ("id_type", json!("passport")),
            ("id_number", json!(number)),
            ("name", json!("王芳")),
        ];
        let values: Fields = fields
            .iter()
            .map(|(f, v)| ((*f).to_owned(), v.clone()))
            .collect();
        let entity = natural_id(EntityKind::Person, &values).unwrap();
        let changes = numbered("person", entity, device, fields, |_| stamp);
        let villages = vec![VILLAGE.to_owned()];
        let compacted = HashMap::new();
        let facts = Facts {
            role: Role::Officer,
            villages: &villages,
            device,
            last_counter: 0,
            now_ms: NOW,
            max_ahead_ms: 300_000,
            today: Date::from_unix_ms(NOW as i64, baylink_domain::date::CHINA_OFFSET_MINUTES),
            records,
            compacted: &compacted,
        };
        let plan = plan_push(&facts, &changes);
        assert!(plan.decisions.iter().all(|d| *d == plan.decisions[0]));
        plan.decisions[0].clone()
    }

    #[test]
    fn a_new_key_is_refused_for_a_live_holder_only_whatever_else_the_facts_hold() {
        let number = "E9000001";
        // Records holding the key that do not count: deleted, merged away; and one with no
        // values (holding no key at all).
        let mut records: HashMap<Uuid, Held> = HashMap::new();
        records.insert(
            Uuid::from_u128(1),
            stored(number, &[("deleted", json!(true))]),
        );
        let merged = json!(Uuid::from_u128(5).to_string());
        records.insert(
            Uuid::from_u128(2),
            stored(number, &[("merged_into", merged)]),
        );
        let mut nameless = stored(number, &[]);
        nameless.state.clear();
        records.insert(Uuid::from_u128(3), nameless);
        // Many live persons holding other keys.
        for n in 0..500u128 {
            records.insert(Uuid::from_u128(100 + n), stored(&format!("E8{n:06}"), &[]));
        }
        assert!(decide(number, &records).accepted(), "no live holder");
        // One live holder among them: refused, naming it.
        let holder = Uuid::from_u128(4);
        records.insert(holder, stored(number, &[]));
        match decide(number, &records) {
            Decision::Refuse { message, .. } => {
                assert!(message.contains(&holder.to_string()), "{message}");
            }
            other => panic!("accepted beside a live holder: {other:?}"),
        }
        // Its key as the push's own checks read it: a holder of another document type does not
        // hold it.
        records.insert(
            holder,
            stored(number, &[("id_type", json!("hk_macao_permit"))]),
        );
        assert!(decide(number, &records).accepted());
    }
}
