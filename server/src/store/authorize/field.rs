//! The fields and references of a push's changes decided one by one, after their record's
//! rules.

// The planner's own rules and types, shared with its parent.
use super::*;

/// The decision on one field change of a record the caller may write.
#[allow(clippy::too_many_arguments)]
pub(super) fn decide_field(
    facts: &Facts<'_>,
    change: &Change,
    id_type: Option<&Value>,
    kind: EntityKind,
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
            // Quoted in part: the refusal goes to every change of a new record.
            return out_of_scope(&format!(
                "village {} is not one of yours",
                excerpt(&to_text(&change.value))
            ));
        }
    }
    if change.value.is_null() {
        return Decision::Apply;
    }
    // The value itself, an ID number read by the record's document type (this push's or the
    // stored one): neither copied nor checked again for each of a push's numbers.
    if let Some(error) = validate_value(kind, &change.field, &change.value, id_type, facts.today) {
        return Decision::refuse(refusal::INVALID, error.to_string());
    }
    if let Some((target, target_id)) = reference(change) {
        return decide_reference(facts, kind, spec.name, spec.zh, target, target_id, world);
    }
    Decision::Apply
}

/// Whether a reference field may name `id`: a stored or just created record of the right kind,
/// in the caller's villages (a residence's person may live anywhere: she moves in).
pub(super) fn decide_reference(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::authorize::facts::numbered;
    use crate::store::authorize::{Compacted, Held, plan_push};
    use baylink_sync::{Hlc, NodeId, Stamp};

    /// 2026-12-01 10:00 in China.
    const NOW: u64 = 1_796_090_400_000;

    #[test]
    fn a_village_not_the_caller_s_is_quoted_in_part_to_each_change_it_refuses() {
        let device = NodeId(Uuid::from_u128(9));
        let entity = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let village = Value::String("4".repeat(100_000));
        let notes = (0..1_000).map(|k| ("notes", Value::String(format!("第{k}条"))));
        let fields = std::iter::once(("village", village)).chain(notes);
        let stamp = |k: usize| Stamp::new(Hlc::new(NOW - 60_000, k as u16), device);
        let changes = numbered("visit", entity, device, fields, stamp);
        let villages = vec!["441303006001".to_owned()];
        let (records, compacted) = (
            HashMap::<Uuid, Held>::new(),
            HashMap::<Uuid, Compacted>::new(),
        );
        let facts = Facts {
            role: Role::Officer,
            villages: &villages,
            device,
            last_counter: 0,
            now_ms: NOW,
            max_ahead_ms: 300_000,
            today: baylink_domain::Date::from_unix_ms(
                NOW as i64,
                baylink_domain::date::CHINA_OFFSET_MINUTES,
            ),
            records: &records,
            compacted: &compacted,
        };
        let plan = plan_push(&facts, &changes);
        assert_eq!(plan.decisions.len(), changes.len());
        for decision in &plan.decisions {
            let Decision::Refuse { code, message } = decision else {
                panic!("accepted: {decision:?}");
            };
            assert_eq!(*code, refusal::OUT_OF_SCOPE);
            assert!(message.contains("4444…"), "{message}");
            assert!(message.len() < 300, "{} bytes", message.len());
        }
    }
}
