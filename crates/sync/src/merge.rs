//! The merge rule, once for every replica: per field, last writer wins by stamp. Commutative,
//! associative and idempotent, so replicas that saw the same writes hold the same state whatever
//! the order, duplication or interleaving. Also tells concurrent edits from sequential ones.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stamp::Stamp;

/// A field's value with the stamp of the write that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value; `null` when cleared.
    pub value: Value,
    /// Who set it, when.
    pub stamp: Stamp,
}

impl Versioned {
    /// A value with its stamp.
    pub fn new(value: Value, stamp: Stamp) -> Versioned {
        Versioned { value, stamp }
    }
}

/// Orders two versions of one field: by stamp; equal stamps (which a correct node never issues
/// twice) fall back to the values' text, so that even then every replica picks the same one.
pub fn compare(a: &Versioned, b: &Versioned) -> Ordering {
    a.stamp
        .cmp(&b.stamp)
        .then_with(|| a.value.to_string().cmp(&b.value.to_string()))
}

/// What to do with an incoming version of a field, decided before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPlan {
    /// The incoming version wins and replaces the held one.
    pub apply: bool,
    /// The incoming write did not know the held value: two nodes edited the field concurrently
    /// and chose different values. The merge still stands; reviewers are told.
    pub concurrent: bool,
}

/// Decides the merge of `incoming` (written on a node that held the version stamped `base`)
/// into the replica's `held` version.
///
/// A write is concurrent when the replica holds a different value, written by another node, than
/// the one the writer had seen. Exact when a node's writes arrive in order and bases are values
/// the receiver has seen, which is how the server receives pushes.
pub fn plan_field(
    held: Option<&Versioned>,
    incoming: &Versioned,
    base: Option<Stamp>,
) -> FieldPlan {
    let Some(held) = held else {
        return FieldPlan {
            apply: true,
            concurrent: false,
        };
    };
    let apply = compare(incoming, held) == Ordering::Greater;
    let concurrent = held.stamp != incoming.stamp
        && base != Some(held.stamp)
        && held.stamp.node != incoming.stamp.node
        && held.value != incoming.value;
    FieldPlan { apply, concurrent }
}

/// The state of one entity: the winning version of each field, by field name.
pub type EntityState = BTreeMap<String, Versioned>;

/// Merges a version of one field into an entity; true if it changed the state.
pub fn merge_field(state: &mut EntityState, field: &str, incoming: Versioned) -> bool {
    let held = state.get(field);
    if plan_field(held, &incoming, None).apply {
        state.insert(field.to_owned(), incoming);
        true
    } else {
        false
    }
}

/// Merges a whole entity state into another (the join of the two).
pub fn merge_state(into: &mut EntityState, other: &EntityState) {
    for (field, version) in other {
        merge_field(into, field, version.clone());
    }
}

/// The plain values of an entity state, without stamps.
pub fn values(state: &EntityState) -> BTreeMap<String, Value> {
    state
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::stamp::NodeId;
    use proptest::prelude::*;
    use serde_json::json;
    use uuid::Uuid;

    fn stamp(hlc: u64, node: u128) -> Stamp {
        Stamp::new(Hlc::from_u64(hlc), NodeId(Uuid::from_u128(node)))
    }

    fn v(value: Value, hlc: u64, node: u128) -> Versioned {
        Versioned::new(value, stamp(hlc, node))
    }

    #[test]
    fn the_later_stamp_wins_and_ties_on_clock_go_to_the_node() {
        let held = v(json!("a"), 10, 1);
        assert!(plan_field(Some(&held), &v(json!("b"), 11, 1), None).apply);
        assert!(!plan_field(Some(&held), &v(json!("b"), 9, 2), None).apply);
        assert!(plan_field(Some(&held), &v(json!("b"), 10, 2), None).apply);
        assert!(!plan_field(Some(&held), &held, None).apply);
    }

    #[test]
    fn an_edit_based_on_the_held_value_is_sequential() {
        let held = v(json!("王芳"), 10, 1);
        let plan = plan_field(Some(&held), &v(json!("王 芳"), 20, 2), Some(held.stamp));
        assert_eq!(
            plan,
            FieldPlan {
                apply: true,
                concurrent: false
            }
        );
    }

    #[test]
    fn an_edit_that_did_not_see_the_held_value_is_concurrent_whichever_wins() {
        let base = stamp(5, 9);
        let held = v(json!("13800138000"), 10, 1);
        let later = plan_field(Some(&held), &v(json!("13900139000"), 20, 2), Some(base));
        assert_eq!(
            later,
            FieldPlan {
                apply: true,
                concurrent: true
            }
        );
        let earlier = plan_field(Some(&held), &v(json!("13900139000"), 8, 2), None);
        assert_eq!(
            earlier,
            FieldPlan {
                apply: false,
                concurrent: true
            }
        );
        // Same value chosen on both sides: nothing for a reviewer to settle.
        let same = plan_field(Some(&held), &v(json!("13800138000"), 20, 2), Some(base));
        assert!(!same.concurrent);
        // A node overwriting its own earlier write is never in conflict with itself.
        let own = plan_field(Some(&held), &v(json!("x"), 20, 1), Some(base));
        assert!(!own.concurrent);
    }

    fn arb_version() -> impl Strategy<Value = (String, Versioned)> {
        (
            prop::sample::select(vec!["name", "phone", "deleted"]),
            prop_oneof![
                Just(json!(null)),
                Just(json!(true)),
                "[a-c]{1,2}".prop_map(Value::from)
            ],
            0u64..6,
            0u128..3,
        )
            .prop_map(|(field, value, hlc, node)| (field.to_owned(), v(value, hlc, node)))
    }

    fn arb_state() -> impl Strategy<Value = EntityState> {
        prop::collection::vec(arb_version(), 0..8).prop_map(|versions| {
            let mut state = EntityState::new();
            for (field, version) in versions {
                merge_field(&mut state, &field, version);
            }
            state
        })
    }

    fn joined(a: &EntityState, b: &EntityState) -> EntityState {
        let mut out = a.clone();
        merge_state(&mut out, b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_state(), b in arb_state()) {
            prop_assert_eq!(joined(&a, &b), joined(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in arb_state(), b in arb_state(), c in arb_state()) {
            prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in arb_state(), b in arb_state()) {
            let ab = joined(&a, &b);
            prop_assert_eq!(joined(&ab, &b), ab);
            prop_assert_eq!(joined(&a, &a), a);
        }

        #[test]
        fn the_result_holds_the_greatest_version_of_every_field(writes in prop::collection::vec(arb_version(), 1..20)) {
            let mut state = EntityState::new();
            for (field, version) in &writes {
                merge_field(&mut state, field, version.clone());
            }
            for (field, held) in &state {
                let greatest = writes.iter().filter(|(f, _)| f == field).map(|(_, v)| v)
                    .max_by(|a, b| compare(a, b)).unwrap();
                prop_assert_eq!(held, greatest);
            }
        }
    }
}
