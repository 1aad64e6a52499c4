//! A budget on the memory a push takes while parsed. A value is parsed into [`Value`]: 32
//! bytes a node, a B-tree leaf of about 640 bytes for each object with members, a block of four
//! nodes for each array with elements and room to grow for more. `[0,0,…]` is two bytes of body
//! a node and `[{"":0},…]` seven bytes an object, so eight megabytes of body could take hundreds
//! of megabytes parsed. A server reads a body [`within`] a budget in proportion to its length
//! ([`budget_for`]); each node read spends what it allocates, and past the budget the parse
//! fails. The values of changes and actions count against it ([`value`]), and the lists of them
//! ([`list`]); everywhere else (a phone reading its own outbox) nothing is counted. Vectors
//! growing to hold a list or an array may take a few hundred KiB more than was counted, for a
//! moment (`tests/bounded_memory.rs` measures it).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// What any node takes: the [`Value`] itself.
const NODE: usize = 32;
/// What an array's element takes beyond its node: the room its vector grows into (up to twice
/// what it holds, and while it moves to a larger block the old one too).
const ELEMENT: usize = 64;
/// What an array takes once it has an element: a vector's first block (room for four).
const ARRAY: usize = 128;
/// What an object takes once it has a member: its first B-tree leaf (eleven keys and values).
const MAP: usize = 640;
/// What each member takes beyond its value's node and its key's text: its share of the leaves
/// (as little as half-full after splits) and of the nodes above them.
const MEMBER: usize = 160;

thread_local! {
    /// Bytes left to the parse running on this thread under [`within`]; `None` outside one.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether that parse ran out.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// A budget running on this thread; the one it replaced (if any) is put back when it ends,
/// even if the parse panics.
struct Budget(Option<usize>, bool);

impl Budget {
    fn start(bytes: usize) -> Budget {
        Budget(LEFT.replace(Some(bytes)), SPENT.replace(false))
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        LEFT.set(self.0);
        SPENT.set(self.1);
    }
}

/// The values of a parse would have taken more memory than its budget allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded;

/// Runs `parse` (synchronous: the count is this thread's) with at most `bytes` of memory for the
/// values it reads, as counted here: past them a value fails to deserialize, and the
/// answer is [`Exceeded`] whatever error the parse made of that.
pub fn within<T, E>(
    bytes: usize,
    parse: impl FnOnce() -> Result<T, E>,
) -> Result<Result<T, E>, Exceeded> {
    let _outer = Budget::start(bytes);
    let parsed = parse();
    if SPENT.get() {
        return Err(Exceeded);
    }
    Ok(parsed)
}

/// Runs `parse` with a budget without end: what it returns, and what it spent.
pub fn spending<T>(parse: impl FnOnce() -> T) -> (T, usize) {
    let _outer = Budget::start(usize::MAX);
    let parsed = parse();
    let left = LEFT.get().unwrap_or(usize::MAX);
    (parsed, usize::MAX - left)
}

/// The budget of a body of `len` bytes: eight times its length, and 384 KiB whatever its size.
/// A phone's values take about their own length (names, numbers, dates: a node and its text);
/// the densest it may send, a list of one-letter names (`TEXT_LIST_CHARS` in baylink-domain),
/// about 25 times, so a push it cut to its least (16 KiB) always fits.
pub fn budget_for(len: usize) -> usize {
    len.saturating_mul(8).saturating_add(384 * 1024)
}

/// Deserializes a change's value (`#[serde(deserialize_with)]`), spending what it takes from the
/// budget of the [`within`] it runs in, if any.
pub fn value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Node.deserialize(deserializer)
}

/// Deserializes a list of records (a push's changes or actions, an action's fields), spending
/// what its vector takes from the budget of the [`within`] it runs in, if any: twice each
/// element's size, and a first block of four. A record may be written as a JSON array of its
/// members (`[0,"",0]` is a whole field of an action, nine bytes of body for about a hundred
/// parsed), so the records themselves are counted, not only their values.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(List(PhantomData))
}

/// Records gathered in blocks of this many before a long list is put together: a vector that
/// doubled as it grew would hold three times its records while it moved to a larger block.
const CHUNK: usize = 1024;

/// The visitor of [`list`].
struct List<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let size = std::mem::size_of::<T>();
        let mut blocks: Vec<Vec<T>> = Vec::new();
        let mut block = Vec::new();
        while let Some(item) = seq.next_element()? {
            // Its place in a block, and in the list the blocks end in.
            let first = if block.is_empty() && blocks.is_empty() {
                2 * size
            } else {
                0
            };
            spend(first + 2 * size)?;
            if block.len() == CHUNK {
                blocks.push(std::mem::replace(&mut block, Vec::with_capacity(CHUNK)));
            }
            block.push(item);
        }
        if blocks.is_empty() {
            return Ok(block);
        }
        let mut items = Vec::with_capacity(blocks.len() * CHUNK + block.len());
        for done in blocks {
            items.extend(done);
        }
        items.extend(block);
        Ok(items)
    }
}

/// Takes `bytes` from the budget, if one is running.
fn spend<E: de::Error>(bytes: usize) -> Result<(), E> {
    let Some(left) = LEFT.get() else {
        return Ok(());
    };
    match left.checked_sub(bytes) {
        Some(rest) => {
            LEFT.set(Some(rest));
            Ok(())
        }
        None => {
            LEFT.set(Some(0));
            SPENT.set(true);
            Err(E::custom(
                "value: the values take more memory than a body of this size may",
            ))
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
        spend(NODE)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        spend(NODE)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        spend(NODE)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        spend(NODE)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        spend(NODE + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        spend(NODE + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        spend(NODE)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        spend(NODE)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Node)? {
            let first = if items.is_empty() { ARRAY } else { 0 };
            spend(first + ELEMENT)?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        spend(NODE)?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let first = if members.is_empty() { MAP } else { 0 };
            spend(first + MEMBER + key.len())?;
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
                prop::collection::btree_map(".{0,4}", inner, 0..14)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Outside any budget a value reads as serde_json reads it; within what reading it
        /// spends it reads the same, and a byte short it is refused as exceeding, never read in
        /// part.
        #[test]
        fn a_value_reads_as_serde_json_reads_it_until_its_budget_is_a_byte_short(v in json()) {
            let text = serde_json::json!({ "value": v }).to_string();
            prop_assert_eq!(&parse(&text).unwrap(), &v);
            let (read, spent) = spending(|| parse(&text));
            prop_assert_eq!(&read.unwrap(), &v);
            let within_budget = within(spent, || parse(&text)).unwrap().unwrap();
            prop_assert_eq!(&within_budget, &v);
            prop_assert!(matches!(within(spent - 1, || parse(&text)), Err(Exceeded)));
        }
    }

    /// A phone's push of `persons` new persons, each field a change (what its capture writes).
    fn persons(persons: u32) -> Vec<crate::Change> {
        use crate::{ChangeId, Hlc, NodeId, Stamp};
        let device = NodeId(uuid::Uuid::from_u128(1));
        let mut counter = 0;
        let mut changes = Vec::new();
        for n in 0..persons {
            let stamp = Stamp::new(Hlc::new(1_796_000_000_000 + u64::from(n), 0), device);
            let entity = uuid::Uuid::from_u128(u128::from(n) << 64 | 7);
            for (field, value) in [
                ("village", "441303006001".to_owned()),
                ("id_type", "resident_id".to_owned()),
                ("id_number", format!("4413031990{n:08}")),
                ("name", "欧阳明".to_owned()),
                ("gender", "male".to_owned()),
                ("birth_date", "1990-01-01".to_owned()),
                ("origin_code", "441303".to_owned()),
                ("origin_name", "广东省惠州市惠阳区".to_owned()),
                ("phone", format!("138{n:08}")),
                ("occupation", "个体经营".to_owned()),
                ("notes", "".to_owned()),
                ("registered_on", "2026-12-01".to_owned()),
                ("created_by", "o1".to_owned()),
                ("review_status", "pending".to_owned()),
            ] {
                counter += 1;
                changes.push(crate::Change {
                    id: ChangeId { device, counter },
                    kind: "person".into(),
                    entity,
                    field: field.into(),
                    value: Value::String(value),
                    stamp,
                    base: None,
                });
            }
        }
        changes
    }

    #[test]
    fn a_phones_push_of_persons_spends_less_than_half_its_budget_in_either_form() {
        use crate::wire::PushRequest;
        let changes = persons(1_300);
        let device = changes[0].id.device;
        let as_actions = PushRequest::of_actions(device, changes.clone());
        let as_changes = PushRequest {
            protocol: 2,
            device,
            changes,
            actions: Vec::new(),
        };
        for push in [as_actions, as_changes] {
            let text = serde_json::to_string(&push).unwrap();
            let half = (budget_for(text.len()) - 384 * 1024) / 2;
            let read = within(half, || serde_json::from_str::<PushRequest>(&text));
            assert!(
                matches!(read, Ok(Ok(ref p)) if *p == push),
                "{} bytes",
                text.len()
            );
        }
    }

    #[test]
    fn a_body_of_bare_nodes_is_refused_and_the_budget_ends_with_its_parse() {
        for text in [
            format!(r#"{{"value": [{}0]}}"#, "0,".repeat(100_000)),
            format!(r#"{{"value": [{}{{}}]}}"#, r#"{"":0},"#.repeat(30_000)),
        ] {
            let bytes = text.len();
            assert!(
                matches!(within(budget_for(bytes), || parse(&text)), Err(Exceeded)),
                "{bytes} bytes"
            );
            // Outside `within`, nothing is counted: the same text reads whole.
            assert!(parse(&text).is_ok());
        }
        // A nested budget gives the outer one back.
        let text = format!(r#"{{"value": [{}0]}}"#, "0,".repeat(100_000));
        let outer = within(1_000, || {
            let inner = within(100_000_000, || parse(&text));
            assert!(matches!(inner, Ok(Ok(_))));
            parse(r#"{"value": [1, 2, 3]}"#)
        });
        assert!(matches!(outer, Ok(Ok(_))));
    }
}
