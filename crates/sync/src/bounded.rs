//! A budget on the JSON a body's values may hold. A value is parsed into [`Value`], about 32
//! bytes a node: `[0,0,…]` is two bytes of body a node, so eight megabytes of it take
//! 128 MiB while parsed. A server reads a body's values [`within`] a number of nodes in
//! proportion to the body's length, so no body costs it more than a few times its size. The
//! values of changes and actions count against it; everywhere else (a phone reading its own
//! outbox) nothing is counted.

use std::cell::Cell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

thread_local! {
    /// Nodes left to the parse running on this thread under [`within`]; `None` outside one.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether that parse ran out.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// The values of a parse held more JSON nodes than its budget allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded;

/// Runs `parse` (synchronous: the count is this thread's) with at most `nodes` JSON nodes in the
/// values it reads: past them a value fails to deserialize, and the answer is [`Exceeded`]
/// whatever error the parse made of that.
pub fn within<T, E>(
    nodes: usize,
    parse: impl FnOnce() -> Result<T, E>,
) -> Result<Result<T, E>, Exceeded> {
    struct Restore(Option<usize>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEFT.set(self.0);
            SPENT.set(self.1);
        }
    }
    // Restored even if `parse` panics, and nested budgets give back the outer one.
    let _outer = Restore(LEFT.replace(Some(nodes)), SPENT.replace(false));
    let parsed = parse();
    if SPENT.get() {
        return Err(Exceeded);
    }
    Ok(parsed)
}

/// The budget of a body of `bytes` bytes: one node for every eight bytes (a change of a real
/// phone's push takes dozens of bytes a node), and a few thousand for a small body. At about
/// 32 bytes a node, its values take at most about four times the body, and the text of their
/// strings.
pub fn nodes_for(bytes: usize) -> usize {
    bytes / 8 + 4_096
}

/// Deserializes a change's value (`#[serde(deserialize_with)]`), counting its nodes against the
/// budget of the [`within`] it runs in, if any.
pub fn value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Node.deserialize(deserializer)
}

/// Takes one node from the budget, if one is running.
fn spend<E: de::Error>() -> Result<(), E> {
    match LEFT.get() {
        None => Ok(()),
        Some(0) => {
            SPENT.set(true);
            Err(E::custom(
                "value: the values hold more JSON than a body of this size may carry",
            ))
        }
        Some(left) => {
            LEFT.set(Some(left - 1));
            Ok(())
        }
    }
}

/// One JSON node and everything inside it, as [`Value`]'s own deserializer reads it.
struct Node;

impl<'de> DeserializeSeed<'de> for Node {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        spend()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        spend()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        spend()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        spend()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        spend()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        spend()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        spend()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Node)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        spend()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // A member's key is a node of its own, as a string is.
            spend()?;
            let item = map.next_value_seed(Node)?;
            members.insert(key, item);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Deserialize, Debug)]
    struct Holder {
        #[serde(deserialize_with = "value")]
        value: Value,
    }

    fn parse(text: &str) -> serde_json::Result<Value> {
        serde_json::from_str::<Holder>(text).map(|h| h.value)
    }

    /// How many nodes the budget counts in a value.
    fn nodes(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
            Value::Object(members) => 1 + members.values().map(|v| 1 + nodes(v)).sum::<usize>(),
            _ => 1,
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Quarters: exact in binary, so their text reads back to the same number.
            (-4_000i32..4_000).prop_map(|q| Value::from(f64::from(q) / 4.0)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Within its budget, or outside any, a value reads as serde_json reads it; one node
        /// short, it is refused as exceeding, never read in part.
        #[test]
        fn a_value_reads_as_serde_json_reads_it_until_its_budget_is_one_node_short(v in json()) {
            let text = serde_json::json!({ "value": v }).to_string();
            prop_assert_eq!(&parse(&text).unwrap(), &v);
            let n = nodes(&v);
            let within_budget = within(n, || parse(&text)).unwrap().unwrap();
            prop_assert_eq!(&within_budget, &v);
            prop_assert!(matches!(within(n - 1, || parse(&text)), Err(Exceeded)));
        }
    }

    #[test]
    fn a_body_of_bare_nodes_is_refused_and_the_budget_ends_with_its_parse() {
        let text = format!(r#"{{"value": [{}0]}}"#, "0,".repeat(100_000));
        let bytes = text.len();
        assert!(
            matches!(within(nodes_for(bytes), || parse(&text)), Err(Exceeded)),
            "{bytes} bytes"
        );
        // Outside `within`, nothing is counted: the same text reads whole.
        assert_eq!(parse(&text).unwrap().as_array().unwrap().len(), 100_001);
        // A nested budget gives the outer one back.
        let outer = within(10, || {
            let inner = within(1_000_000, || parse(&text));
            assert!(matches!(inner, Ok(Ok(_))));
            parse(r#"{"value": [1, 2, 3]}"#)
        });
        assert!(matches!(outer, Ok(Ok(_))));
    }
}
