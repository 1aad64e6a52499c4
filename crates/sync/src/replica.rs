//! An in-memory replica: the merge rule applied to whole entities. It is the reference that the
//! device store and the server must agree with, and the model that property tests and the sync
//! simulation run.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::change::Change;
use crate::merge::{EntityState, FieldPlan, Versioned, plan_field};

/// One entity as a replica holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    /// Kind name.
    pub kind: String,
    /// Winning version of each field.
    pub fields: EntityState,
}

/// Entities by id, merged field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replica {
    entities: BTreeMap<Uuid, Entity>,
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Replica {
        Replica::default()
    }

    /// Merges one change and says what the merge decided.
    pub fn apply(&mut self, change: &Change) -> FieldPlan {
        let entity = self
            .entities
            .entry(change.entity)
            .or_insert_with(|| Entity {
                kind: change.kind.clone(),
                fields: EntityState::new(),
            });
        let plan = plan_field(
            entity.fields.get(&change.field),
            &change.version(),
            change.base,
        );
        if plan.apply {
            entity.fields.insert(change.field.clone(), change.version());
        }
        plan
    }

    /// The version of one field, if the replica has it.
    pub fn get(&self, entity: Uuid, field: &str) -> Option<&Versioned> {
        self.entities.get(&entity)?.fields.get(field)
    }

    /// Every entity.
    pub fn entities(&self) -> &BTreeMap<Uuid, Entity> {
        &self.entities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ChangeId;
    use crate::hlc::{Clock, Hlc};
    use crate::merge::compare;
    use crate::stamp::{NodeId, Stamp};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// One step of a schedule: a node writes, or a node receives some change made so far.
    #[derive(Clone, Debug)]
    enum Step {
        Write {
            node: usize,
            entity: u8,
            field: u8,
            value: u8,
            physical: u64,
        },
        Deliver {
            to: usize,
            pick: usize,
        },
    }

    fn arb_step(nodes: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..nodes, 0u8..3, 0u8..3, 0u8..4, 0u64..50).prop_map(
                |(node, entity, field, value, physical)| Step::Write {
                    node,
                    entity,
                    field,
                    value,
                    physical
                }
            ),
            (0..nodes, any::<usize>()).prop_map(|(to, pick)| Step::Deliver { to, pick }),
        ]
    }

    /// A deterministic shuffle with duplicates, from a seed (splitmix64).
    fn delivery_order(len: usize, mut seed: u64) -> Vec<usize> {
        let mut next = move || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut order: Vec<usize> = (0..len).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let extra = if len == 0 {
            0
        } else {
            next() as usize % (len + 1)
        };
        for _ in 0..extra {
            let dup = order[next() as usize % len];
            order.insert(next() as usize % (order.len() + 1), dup);
        }
        order
    }

    fn run(nodes: usize, steps: &[Step], seeds: &[u64]) -> (Vec<Replica>, Vec<Change>) {
        let ids: Vec<NodeId> = (0..nodes)
            .map(|n| NodeId(Uuid::from_u128(n as u128 + 1)))
            .collect();
        let mut replicas = vec![Replica::new(); nodes];
        let mut clocks = vec![Clock::default(); nodes];
        let mut log: Vec<Change> = Vec::new();
        for step in steps {
            match *step {
                Step::Write {
                    node,
                    entity,
                    field,
                    value,
                    physical,
                } => {
                    let entity = Uuid::from_u128(u128::from(entity) + 100);
                    let field = ["name", "phone", "deleted"][usize::from(field)].to_owned();
                    let hlc = clocks[node].tick(physical);
                    let change = Change {
                        id: ChangeId {
                            device: ids[node],
                            counter: log.len() as u64,
                        },
                        kind: "person".into(),
                        base: replicas[node].get(entity, &field).map(|v| v.stamp),
                        entity,
                        field,
                        value: if value == 0 {
                            Value::Null
                        } else {
                            json!(value)
                        },
                        stamp: Stamp::new(hlc, ids[node]),
                    };
                    replicas[node].apply(&change);
                    log.push(change);
                }
                Step::Deliver { to, pick } if !log.is_empty() => {
                    let change = &log[pick % log.len()];
                    clocks[to].observe(change.stamp.hlc);
                    replicas[to].apply(change);
                }
                Step::Deliver { .. } => {}
            }
        }
        for (replica, seed) in replicas.iter_mut().zip(seeds) {
            for i in delivery_order(log.len(), *seed) {
                replica.apply(&log[i]);
            }
        }
        (replicas, log)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn replicas_that_saw_the_same_changes_are_identical(
            nodes in 3usize..6,
            steps in prop::collection::vec(arb_step(5), 1..60),
            seeds in prop::collection::vec(any::<u64>(), 5),
        ) {
            let steps: Vec<Step> = steps.into_iter().map(|s| match s {
                Step::Write { node, entity, field, value, physical } =>
                    Step::Write { node: node % nodes, entity, field, value, physical },
                Step::Deliver { to, pick } => Step::Deliver { to: to % nodes, pick },
            }).collect();
            let (replicas, log) = run(nodes, &steps, &seeds);
            for replica in &replicas[1..] {
                prop_assert_eq!(replica, &replicas[0]);
            }
            // Nothing written is lost: every field holds the greatest version ever written to it.
            for change in &log {
                let held = replicas[0].get(change.entity, &change.field).unwrap();
                prop_assert!(compare(held, &change.version()) != std::cmp::Ordering::Less);
            }
        }
    }

    #[test]
    fn a_concurrent_edit_is_reported_and_a_sequential_one_is_not() {
        let (a, b) = (NodeId(Uuid::from_u128(1)), NodeId(Uuid::from_u128(2)));
        let entity = Uuid::from_u128(9);
        let change =
            |node: NodeId, counter: u64, hlc: u64, value: &str, base: Option<Stamp>| Change {
                id: ChangeId {
                    device: node,
                    counter,
                },
                kind: "person".into(),
                entity,
                field: "phone".into(),
                value: json!(value),
                stamp: Stamp::new(Hlc::new(hlc, 0), node),
                base,
            };
        let first = change(a, 1, 10, "13800138000", None);
        let mut server = Replica::new();
        assert!(!server.apply(&first).concurrent);
        // B saw A's value and corrected it: sequential.
        let seq = change(b, 1, 20, "13800138001", Some(first.stamp));
        assert!(!server.apply(&seq).concurrent);
        // A, offline, edited from its own old value: concurrent with B's correction.
        let conc = change(a, 2, 15, "13900139000", Some(first.stamp));
        let plan = server.apply(&conc);
        assert!(plan.concurrent && !plan.apply);
    }
}
