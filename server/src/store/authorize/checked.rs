//! A push's values checked before it reaches the one writer: each change's value alone, and
//! each record as the push alone leaves it (its errors, the fields it derives, its natural key).
//!
//! Checking is pure and was a tenth of the writer's time in a 50-device ingest: done here, on
//! the pushing thread, it runs beside the writer. The planner takes an answer only for the very
//! inputs it would check itself (the same kind, value, document type, day, and the same values
//! of the record as merged), and checks anything else as before: a memo, never a decision.

use std::borrow::Cow;
use std::collections::HashMap;

use baylink_domain::{
    Date, EntityKind, FieldError, Fields, missing_derived, natural_id, natural_key,
    validate_record, validate_values,
};
use baylink_sync::merge::merge_field;
use baylink_sync::{Change, EntityState};
use serde_json::Value;
use uuid::Uuid;

use super::facts::values;
use super::{CONSOLE_ONLY, SERVER_OWNED};

/// Pushes of more changes than this are checked on two threads (a phone's upload waits on it).
const SPLIT_CHANGES: usize = 2_000;

/// What a push's own values say, worked out before the writer (empty: nothing was).
#[derive(Default)]
pub struct Checked {
    /// The day they were checked on.
    today: Option<Date>,
    /// How many changes the push held.
    len: usize,
    /// Each change's value checked alone, by its index in the push.
    fields: Vec<Option<FieldCheck>>,
    /// Each record's checks, by id.
    records: HashMap<Uuid, RecordCheck>,
}

/// A document type longer than this is no document type: its record's ID numbers are not
/// checked before the writer (the planner checks them), so that no one long value is kept or
/// compared once per change.
const SHORT: usize = 64;

/// What was checked of one record beside its changes' values.
struct RecordCheck {
    /// The document type its ID numbers were read by: the last this push sends for it.
    id_type: Option<Value>,
    /// The record as the push alone leaves it.
    shape: Option<Shape>,
}

/// One record's changes checked: each value alone (by index in the push), and the record.
struct RecordChecks {
    id: Uuid,
    fields: Vec<(usize, FieldCheck)>,
    record: RecordCheck,
}

/// One change's value checked alone.
struct FieldCheck {
    kind: EntityKind,
    /// The field's first error.
    error: Option<String>,
}

/// A record's values and what the domain's rules make of them.
#[derive(Clone)]
pub(crate) struct Shape {
    kind: EntityKind,
    /// Its values.
    pub(crate) values: Fields,
    /// Every rule they break (one error a field at most).
    pub(crate) errors: Vec<FieldError>,
    /// The derived fields they lack, as the rules derive them.
    pub(crate) derived: Fields,
    /// Its natural key, read with the derived fields filled in.
    pub(crate) key: Option<String>,
    /// The id that key gives.
    pub(crate) natural: Option<Uuid>,
}

impl Shape {
    /// Works out what `values` make of a record of `kind` on `today`.
    fn of(kind: EntityKind, values: Fields, today: Date) -> Shape {
        let errors = validate_record(kind, &values, today);
        let derived = missing_derived(kind, &values, today);
        let mut keyed = values.clone();
        keyed.extend(derived.clone());
        Shape {
            kind,
            key: natural_key(kind, &keyed),
            natural: natural_id(kind, &keyed),
            values,
            errors,
            derived,
        }
    }
}

impl Checked {
    /// Checks every change of a push on `today`.
    pub fn of(changes: &[Change], today: Date) -> Checked {
        // Each record's changes, in the push's order.
        let mut records: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            records.entry(change.entity).or_default().push(i);
        }
        let records: Vec<(Uuid, Vec<usize>)> = records.into_iter().collect();
        let check = |part: &[(Uuid, Vec<usize>)]| -> Vec<RecordChecks> {
            part.iter()
                .map(|(id, idx)| {
                    let (fields, id_type) = fields_of(changes, idx, today);
                    RecordChecks {
                        id: *id,
                        fields,
                        record: RecordCheck {
                            id_type,
                            shape: shape_of(changes, idx, today),
                        },
                    }
                })
                .collect()
        };
        let checked = if changes.len() > SPLIT_CHANGES && records.len() > 1 {
            let (first, second) = records.split_at(records.len() / 2);
            std::thread::scope(|s| {
                let other = s.spawn(|| check(second));
                let mut all = check(first);
                // A panic in the other half (a rule's bug) leaves its records unchecked: the
                // planner checks them itself, and meets the bug there.
                all.extend(other.join().unwrap_or_default());
                all
            })
        } else {
            check(&records)
        };
        let mut fields: Vec<Option<FieldCheck>> = Vec::new();
        fields.resize_with(changes.len(), || None);
        let mut records = HashMap::with_capacity(checked.len());
        for record in checked {
            for (i, check) in record.fields {
                fields[i] = Some(check);
            }
            records.insert(record.id, record.record);
        }
        Checked {
            today: Some(today),
            len: changes.len(),
            fields,
            records,
        }
    }

    /// Whether these are the checks of `changes` (a push of as many changes): answers are
    /// found by a change's index.
    pub(crate) fn of_push(&self, changes: &[Change]) -> bool {
        self.today.is_some() && self.len == changes.len()
    }

    /// The first error of the field change `changes[i]` sets, its value read alone (an ID
    /// number by `id_type`) by the rules of `kind` on `today`: as checked before, when it was
    /// checked with these.
    pub(crate) fn field_error(
        &self,
        i: usize,
        kind: EntityKind,
        change: &Change,
        id_type: Option<&Value>,
        today: Date,
    ) -> Option<String> {
        let number = change.field == "id_number";
        let id_type = id_type.filter(|_| number);
        // An ID number's answer holds for the document type it was read by.
        let read_by = |record: &RecordCheck| record.id_type.as_ref() == id_type;
        if let Some(check) = self.fields.get(i).and_then(Option::as_ref)
            && self.today == Some(today)
            && check.kind == kind
            && (!number || self.records.get(&change.entity).is_some_and(read_by))
        {
            return check.error.clone();
        }
        field_error(kind, change, id_type, today)
    }

    /// What the values of `after` make of record `id`: as checked before, when they are the
    /// values the push alone gave it (a new record, every change applied) on the same day.
    pub(crate) fn shape(
        &self,
        id: Uuid,
        kind: EntityKind,
        after: &EntityState,
        today: Date,
    ) -> Cow<'_, Shape> {
        if let Some(shape) = self.records.get(&id).and_then(|r| r.shape.as_ref())
            && self.today == Some(today)
            && shape.kind == kind
            && same_values(after, &shape.values)
        {
            return Cow::Borrowed(shape);
        }
        Cow::Owned(Shape::of(kind, values(after), today))
    }
}

/// The first error of a field change's value read alone, as the planner reads it.
fn field_error(
    kind: EntityKind,
    change: &Change,
    id_type: Option<&Value>,
    today: Date,
) -> Option<String> {
    let mut values = Fields::from([(change.field.clone(), change.value.clone())]);
    if let Some(id_type) = id_type {
        values.insert("id_type".into(), id_type.clone());
    }
    validate_values(kind, &values, today)
        .into_iter()
        .find(|e| e.field == change.field)
        .map(|e| e.to_string())
}

/// The record's changes' values checked alone, each by the document type the planner would
/// read it by when the record is new (the last this push sends), with that type.
fn fields_of(
    changes: &[Change],
    idx: &[usize],
    today: Date,
) -> (Vec<(usize, FieldCheck)>, Option<Value>) {
    let id_type = idx
        .iter()
        .rev()
        .map(|&i| &changes[i])
        .find(|c| c.field == "id_type")
        .map(|c| &c.value);
    let short = id_type.is_none_or(|t| t.as_str().is_some_and(|t| t.len() <= SHORT));
    let checks = idx
        .iter()
        .filter_map(|&i| {
            let change = &changes[i];
            let kind = EntityKind::parse(&change.kind)?;
            kind.field(&change.field)?;
            let number = change.field == "id_number";
            if change.value.is_null() || (number && !short) {
                return None;
            }
            let error = field_error(kind, change, id_type.filter(|_| number), today);
            Some((i, FieldCheck { kind, error }))
        })
        .collect();
    (checks, id_type.filter(|_| short).cloned())
}

/// The record as the push alone leaves it, every change the planner may apply applied (not the
/// server's own fields, nor the console's): what a new record's changes make when all are
/// accepted.
fn shape_of(changes: &[Change], idx: &[usize], today: Date) -> Option<Shape> {
    let kind = EntityKind::parse(&changes[*idx.first()?].kind)?;
    let mut state = EntityState::new();
    for &i in idx {
        let change = &changes[i];
        let field = change.field.as_str();
        if kind.field(field).is_none()
            || SERVER_OWNED.contains(&field)
            || CONSOLE_ONLY.contains(&field)
        {
            continue;
        }
        merge_field(&mut state, field, change.version());
    }
    Some(Shape::of(kind, values(&state), today))
}

/// Whether a record's merged state holds exactly `values`.
fn same_values(state: &EntityState, values: &Fields) -> bool {
    state.len() == values.len()
        && state
            .iter()
            .zip(values)
            .all(|((f, v), (g, w))| f == g && v.value == *w)
}

#[cfg(test)]
mod tests {
    // Helpers here are part of the tests: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::authorize::{Decision, Facts, Held, plan_push};
    use crate::store::caller::Role;
    use baylink_domain::synthetic::{plate, resident_id};
    use baylink_domain::{Input, validate_capture};
    use baylink_sync::{ChangeId, Hlc, NodeId, Stamp, Versioned};
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    const VILLAGE: &str = "441303006001";
    /// 2026-12-01 10:00 in China.
    const NOW: u64 = 1_796_090_400_000;

    /// A record of a push: a whole capture (or none), what else is sent of it, and whether the
    /// server holds it already.
    #[derive(Clone, Debug)]
    struct Record {
        vehicle: bool,
        n: u64,
        whole: bool,
        /// 0: its key's id; 1: a fresh time-ordered one; 2: a random one.
        id: u8,
        /// Field, value, stamp's offset, and mischief: 6 claims the other kind, 7 stamps as
        /// another device.
        extra: Vec<(usize, usize, i64, u8)>,
        held: bool,
        /// Whether what the server holds is newer than the push (its changes lose).
        held_newer: bool,
    }

    /// Fields sent beside a capture: its own, the server's, the console's, one no kind has.
    const FIELDS: [&str; 14] = [
        "village",
        "id_type",
        "id_number",
        "name",
        "gender",
        "birth_date",
        "plate",
        "plate_kind",
        "vehicle_type",
        "deleted",
        "created_by",
        "review_status",
        "review_comment",
        "hull",
    ];

    /// Values for them, well-formed for some fields and not for others.
    fn value(k: usize) -> Value {
        [
            json!(VILLAGE),
            json!("441303006002"),
            json!("resident_id"),
            json!("passport"),
            json!(resident_id(7)),
            json!("E9000001"),
            json!("12"),
            json!("王芳"),
            json!(""),
            json!("male"),
            json!("1990-01-01"),
            // Tomorrow's date: a birth date not yet possible today.
            json!("2026-12-02"),
            json!(plate(3)),
            json!("motorcycle"),
            json!(true),
            Value::Null,
            json!(["a"]),
        ][k % 17]
            .clone()
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            any::<bool>(),
            0u64..4,
            prop::bool::weighted(0.6),
            0u8..3,
            prop::collection::vec((0..FIELDS.len(), 0usize..17, -2i64..3, 0u8..8), 0..6),
            prop::bool::weighted(0.4),
            any::<bool>(),
        )
            .prop_map(|(vehicle, n, whole, id, extra, held, held_newer)| Record {
                vehicle,
                n,
                whole,
                id,
                extra,
                held,
                held_newer,
            })
    }

    /// A whole capture's values, as a phone sends them (derived fields filled).
    fn capture(r: &Record, today: Date) -> (EntityKind, Fields) {
        let (kind, pairs) = if r.vehicle {
            let pairs = [
                ("village", VILLAGE.to_owned()),
                ("plate", plate(r.n)),
                ("vehicle_type", "car".into()),
            ];
            (EntityKind::Vehicle, pairs.to_vec())
        } else {
            let pairs = [
                ("village", VILLAGE.to_owned()),
                ("id_type", "resident_id".into()),
                ("id_number", resident_id(r.n)),
                ("name", "王芳".into()),
            ];
            (EntityKind::Person, pairs.to_vec())
        };
        let input: Input = pairs.into_iter().map(|(f, v)| (f.to_owned(), v)).collect();
        (kind, validate_capture(kind, &input, today).unwrap())
    }

    /// The push's changes and the records the server holds.
    fn push_of(records: &[Record], today: Date) -> (Vec<Change>, HashMap<Uuid, Held>) {
        let device = NodeId(Uuid::from_u128(9));
        let mut changes = Vec::new();
        let mut held = HashMap::new();
        for (k, r) in records.iter().enumerate() {
            let (kind, values) = capture(r, today);
            let id = match r.id {
                0 => natural_id(kind, &values).unwrap(),
                1 => Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + k as u128),
                _ => Uuid::from_u128(0x1234_5678_9abc_4def_8000_0000_0000_0000 + k as u128),
            };
            let at = |dt: i64| {
                Stamp::new(
                    Hlc::new((NOW as i64 - 60_000 + dt * 1_000) as u64, 0),
                    device,
                )
            };
            let sent = r
                .whole
                .then_some(values.clone())
                .into_iter()
                .flatten()
                .map(|(f, v)| (f, v, 0, 0));
            let extra = r
                .extra
                .iter()
                .map(|&(f, v, dt, m)| (FIELDS[f].to_owned(), value(v), dt, m));
            for (field, value, dt, mischief) in sent.chain(extra) {
                let other = if r.vehicle { "person" } else { "vehicle" };
                let mut stamp = at(dt);
                if mischief == 7 {
                    stamp.node = NodeId(Uuid::from_u128(8));
                }
                changes.push(Change {
                    id: ChangeId {
                        device,
                        counter: changes.len() as u64 + 1,
                    },
                    kind: if mischief == 6 { other } else { kind.as_str() }.into(),
                    entity: id,
                    field,
                    value,
                    stamp,
                    base: None,
                });
            }
            if r.held {
                let node = NodeId(Uuid::from_u128(7));
                let at = if r.held_newer {
                    NOW - 1_000
                } else {
                    NOW - 86_400_000
                };
                let stamp = Stamp::new(Hlc::new(at, 0), node);
                let state = values
                    .into_iter()
                    .map(|(f, value)| (f, Versioned { value, stamp }))
                    .collect();
                let villages = BTreeSet::from([VILLAGE.to_owned()]);
                held.insert(
                    id,
                    Held {
                        kind: kind.as_str().into(),
                        villages,
                        state,
                    },
                );
            }
        }
        (changes, held)
    }

    /// The decisions and fills of a push, with nothing checked before and with its values
    /// checked on `checked_on`.
    fn plans(
        changes: &[Change],
        held: &HashMap<Uuid, Held>,
        last_counter: u64,
        checked_on: Date,
    ) -> [(Vec<Decision>, HashMap<Uuid, Fields>); 2] {
        let today = Date::from_unix_ms(NOW as i64, baylink_domain::date::CHINA_OFFSET_MINUTES);
        let villages = vec![VILLAGE.to_owned()];
        let compacted = HashMap::new();
        [Checked::default(), Checked::of(changes, checked_on)].map(|checked| {
            let facts = Facts {
                role: Role::Officer,
                villages: &villages,
                device: NodeId(Uuid::from_u128(9)),
                last_counter,
                now_ms: NOW,
                max_ahead_ms: 300_000,
                today,
                records: held,
                compacted: &compacted,
                checked: &checked,
            };
            let plan = plan_push(&facts, changes);
            (plan.decisions, plan.fills)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a push holds (replays among it, changes claiming another kind or stamped
        /// as another device), and whichever day its values were checked on, the planner
        /// decides it and fills its records exactly as with nothing checked before.
        #[test]
        fn a_push_is_decided_alike_with_its_values_checked_before_or_not(
            records in prop::collection::vec(record(), 1..5),
            next_day in prop::bool::weighted(0.2),
            last_counter in 0u64..4,
        ) {
            let today = Date::from_unix_ms(NOW as i64, baylink_domain::date::CHINA_OFFSET_MINUTES);
            let (changes, held) = push_of(&records, today);
            let checked_on = if next_day { Date::from_days(today.to_days() + 1) } else { today };
            let [without, with] = plans(&changes, &held, last_counter, checked_on);
            prop_assert_eq!(without, with);
        }
    }

    #[test]
    fn a_push_checked_on_two_threads_is_decided_alike() {
        let today = Date::from_unix_ms(NOW as i64, baylink_domain::date::CHINA_OFFSET_MINUTES);
        // 300 captures (whole, stored, with a bad value beside), over the 2,000 changes a
        // push is checked on one thread within.
        let records: Vec<Record> = (0..300)
            .map(|n| Record {
                vehicle: n % 3 == 0,
                n,
                whole: true,
                id: (n % 5 == 0) as u8,
                extra: if n % 7 == 0 {
                    vec![(3, 6, 1, 0)]
                } else {
                    Vec::new()
                },
                held: n % 11 == 0,
                held_newer: false,
            })
            .collect();
        let (changes, held) = push_of(&records, today);
        assert!(changes.len() > SPLIT_CHANGES);
        let [without, with] = plans(&changes, &held, 0, today);
        assert_eq!(without, with);
        // Most records taken whole, some refused: both paths were decided.
        let accepted = with.0.iter().filter(|d| d.accepted()).count();
        assert!(accepted > changes.len() / 2 && accepted < changes.len());
    }
}
