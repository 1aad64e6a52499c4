//! A record's merged state as the server keeps it, one row per record (`entity.state`): each
//! field's value and stamp, the sequence number it was last written or resent at, and the
//! counter of the device change that wrote it. Writes of one unit of work gather in [`Pending`]
//! and reach the tables once per record: its row, its feed entries, its links and its history.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::store::conn::{Conn, Dialect, Optional, Value as SqlValue, params};
use baylink_sync::{EntityState, Hlc, NodeId, Stamp, Versioned};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::store::error::StoreError;
use crate::store::values::corrupt;

/// One field of a record as stored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Slot {
    /// The winning value with its stamp.
    pub(crate) version: Versioned,
    /// The sequence number it was last written or resent at (the pull's order).
    pub(crate) seq: i64,
    /// The counter of the change that wrote it, when the device named by its stamp pushed it
    /// (0 otherwise): what a pull leaves out of that device's answer.
    pub(crate) counter: u64,
}

/// A record's fields by name.
pub(crate) type State = BTreeMap<String, Slot>;

/// The stored text: node ids listed once, each field `[value, clock, node index, seq, counter]`.
#[derive(Deserialize)]
struct Compact<V> {
    n: Vec<NodeId>,
    f: BTreeMap<String, (V, u64, usize, i64, u64)>,
}

/// The text of an empty state.
pub(crate) const EMPTY: &str = r#"{"n":[],"f":{}}"#;

struct Encoded<'a> {
    state: &'a State,
    nodes: Vec<NodeId>,
}

struct Fields<'a>(&'a Encoded<'a>);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Compact", 2)?;
        out.serialize_field("n", &self.nodes)?;
        out.serialize_field("f", &Fields(self))?;
        out.end()
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nodes = &self.0.nodes;
        let mut map = serializer.serialize_map(Some(self.0.state.len()))?;
        for (name, slot) in self.0.state {
            let node = nodes
                .iter()
                .position(|n| *n == slot.version.stamp.node)
                .unwrap_or_default();
            let stamp = slot.version.stamp.hlc.as_u64();
            map.serialize_entry(
                name,
                &(&slot.version.value, stamp, node, slot.seq, slot.counter),
            )?;
        }
        map.end()
    }
}

/// The stored text of a state.
pub(crate) fn encode(state: &State) -> String {
    let mut nodes: Vec<NodeId> = Vec::new();
    for slot in state.values() {
        if !nodes.contains(&slot.version.stamp.node) {
            nodes.push(slot.version.stamp.node);
        }
    }
    // JSON values always serialise.
    serde_json::to_string(&Encoded { state, nodes }).unwrap_or_else(|_| EMPTY.to_owned())
}

fn node_at(nodes: &[NodeId], index: usize) -> Result<NodeId, StoreError> {
    nodes.get(index).copied().ok_or_else(|| corrupt("state"))
}

/// A state read back.
pub(crate) fn decode(text: &str) -> Result<State, StoreError> {
    let compact: Compact<Value> = serde_json::from_str(text).map_err(|_| corrupt("state"))?;
    let mut state = State::new();
    for (name, (value, hlc, node, seq, counter)) in compact.f {
        let stamp = Stamp::new(Hlc::from_u64(hlc), node_at(&compact.n, node)?);
        let version = Versioned::new(value, stamp);
        state.insert(
            name,
            Slot {
                version,
                seq,
                counter,
            },
        );
    }
    Ok(state)
}

/// A field as a pull sends it: its value's JSON text unparsed.
pub(crate) struct RawSlot {
    pub(crate) field: String,
    pub(crate) value: Box<RawValue>,
    pub(crate) stamp: Stamp,
    pub(crate) seq: i64,
    pub(crate) counter: u64,
}

/// A state read back for sending, its values left as JSON text.
pub(crate) fn decode_raw(text: &str) -> Result<Vec<RawSlot>, StoreError> {
    let compact: Compact<Box<RawValue>> =
        serde_json::from_str(text).map_err(|_| corrupt("state"))?;
    let mut out = Vec::with_capacity(compact.f.len());
    for (field, (value, hlc, node, seq, counter)) in compact.f {
        out.push(RawSlot {
            field,
            value,
            stamp: Stamp::new(Hlc::from_u64(hlc), node_at(&compact.n, node)?),
            seq,
            counter,
        });
    }
    Ok(out)
}

/// The values of a state with their stamps, as the merge reads them.
pub(crate) fn versions(state: &State) -> EntityState {
    state
        .iter()
        .map(|(name, slot)| (name.clone(), slot.version.clone()))
        .collect()
}

/// A record's row.
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    /// Its position (`entity.pos`, the order records were first written in): what its scope,
    /// summary and history are keyed by. 0 until its row is stored.
    pub(crate) pos: i64,
    /// Its kind.
    pub(crate) kind: String,
    /// Its home village.
    pub(crate) village: Option<String>,
    /// The sequence number of its last write or resend (where its feed entries stand).
    pub(crate) seq: i64,
    /// Its fields.
    pub(crate) state: State,
}

/// A record's row, if there is one.
pub(crate) fn load(conn: &Conn<'_>, entity: &str) -> Result<Option<Loaded>, StoreError> {
    let row: Option<(i64, String, Option<String>, i64, String)> = conn
        .prepare_cached("SELECT pos, kind, village, seq, state FROM entity WHERE id = ?1")?
        .query_row([entity], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    row.map(|(pos, kind, village, seq, state)| {
        Ok(Loaded {
            pos,
            kind,
            village,
            seq,
            state: decode(&state)?,
        })
    })
    .transpose()
}

/// Fields whose values name a record or a place: kept in `link` so that who points at a record
/// (and which house holds an address code) is found through its index.
pub(crate) fn linked(field: &str) -> bool {
    // Asked for every field written: the schema's list is worked out once.
    static REFERENCES: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(baylink_domain::schema::reference_fields);
    field == "address_code" || REFERENCES.contains(&field)
}

/// One field change of a history entry.
struct Changed {
    old: Option<Versioned>,
    value: Value,
    won: bool,
}

/// One accepted action as the history keeps it: the fields one stamp wrote on one record.
struct Action {
    entity: String,
    kind: String,
    stamp: Stamp,
    device: String,
    account: i64,
    at_ms: u64,
    fields: Vec<(String, Changed)>,
}

/// A record written in the current unit of work, not yet stored.
struct Dirty {
    loaded: Loaded,
    /// Whether its row exists already.
    stored: bool,
    /// Its fields as stored before this unit (for links).
    before: BTreeMap<String, Value>,
    /// Fields this unit wrote.
    written: Vec<String>,
}

/// The writes of one unit of work, gathered by record: each written record's row, feed entries
/// and links are stored once, and its history one row per action. It also remembers the rows
/// and scopes it has read or stored, as they now stand in the tables: a write names hundreds of
/// records, and they are read in one statement each ([`Pending::prefetch`]), not one a record
/// (on PostgreSQL each statement is a round trip).
#[derive(Default)]
pub(crate) struct Pending {
    records: HashMap<String, Dirty>,
    /// In the order first read or written.
    order: Vec<String>,
    actions: Vec<Action>,
    /// The records the last flush stored, as stored: what the rest of the write reads of them
    /// without reading and decoding their rows again. Held once: moved to `known` when read
    /// through this unit, or taken whole ([`Pending::take_flushed`]).
    flushed: HashMap<String, Loaded>,
    /// Rows as the tables hold them now (`None`: no such record), for records not in `records`.
    known: HashMap<String, Option<Loaded>>,
    /// Scopes as the tables hold them now, with the rows [`Pending::add_scope`] has yet to store.
    scopes: HashMap<String, BTreeSet<String>>,
    /// Scope rows to insert, `[entity, village]`, stored by [`Pending::store_scopes`].
    scope_rows: Vec<(String, String)>,
    /// Records this unit inserted.
    created: HashSet<String>,
}

// Lists of ids in one statement. On PostgreSQL each id is looked up by itself (a lateral
// subquery per element, `OFFSET 0` keeping the planner from making it a join): a list compared
// whole (`= ANY`, `IN`) or joined was planned as a scan of the table while its statistics still
// described it small, as under a district's first import, when the tables grow faster than
// autovacuum analyses them (3 ms a lookup of 35 ids among 6,000 rows, against 0.2 ms).

/// A list of ids as the JSON text `json_each` reads.
pub(crate) fn id_list<'i>(ids: impl IntoIterator<Item = &'i String>) -> String {
    serde_json::to_string(&ids.into_iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// The rows of the records among `ids` that exist, in one statement.
pub(crate) fn load_many(
    conn: &Conn<'_>,
    ids: &[&String],
) -> Result<HashMap<String, Loaded>, StoreError> {
    let mut found = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(found);
    }
    let rows: Vec<(String, i64, String, Option<String>, i64, String)> = conn
        .prepare_cached(conn.pick(
            "SELECT id, pos, kind, village, seq, state FROM entity
             WHERE id IN (SELECT value FROM json_each(?1))",
            // An index probe per id, whatever the table's statistics say (see `id_list`).
            "SELECT e.id, e.pos, e.kind, e.village, e.seq, e.state
             FROM json_array_elements_text(CAST(?1 AS json)) t
             CROSS JOIN LATERAL (SELECT * FROM entity WHERE id = t.value OFFSET 0) e",
        ))?
        .query_map([id_list(ids.iter().copied())], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (id, pos, kind, village, seq, state) in rows {
        let state = decode(&state)?;
        found.insert(
            id,
            Loaded {
                pos,
                kind,
                village,
                seq,
                state,
            },
        );
    }
    Ok(found)
}

impl Pending {
    /// The records the last flush stored, as stored (taken: the caller owns them now, and this
    /// unit reads their rows again should it need them).
    pub(crate) fn take_flushed(&mut self) -> HashMap<String, Loaded> {
        std::mem::take(&mut self.flushed)
    }

    /// Moves a record the last flush stored to the rows known, when it is there.
    fn recall(&mut self, entity: &str) {
        if let Some(loaded) = self.flushed.remove(entity) {
            self.known.insert(entity.to_owned(), Some(loaded));
        }
    }

    /// Reads the rows of those of `ids` this unit does not know yet, in one statement.
    pub(crate) fn prefetch<'i>(
        &mut self,
        conn: &Conn<'_>,
        ids: impl IntoIterator<Item = &'i String>,
    ) -> Result<(), StoreError> {
        let wanted: Vec<&String> = ids
            .into_iter()
            .filter(|id| {
                !self.records.contains_key(*id)
                    && !self.known.contains_key(*id)
                    && !self.flushed.contains_key(*id)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut found = load_many(conn, &wanted)?;
        for id in wanted {
            self.known.insert(id.clone(), found.remove(id));
        }
        Ok(())
    }

    /// Reads the scopes of those of `ids` this unit does not know yet, in one statement.
    pub(crate) fn prefetch_scopes<'i>(
        &mut self,
        conn: &Conn<'_>,
        ids: impl IntoIterator<Item = &'i String>,
    ) -> Result<(), StoreError> {
        let wanted: BTreeSet<&String> = ids
            .into_iter()
            .filter(|id| !self.scopes.contains_key(*id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, String)> = conn
            .prepare_cached(conn.pick(
                "SELECT e.id, s.village FROM entity e JOIN scope s ON s.pos = e.pos
                 WHERE e.id IN (SELECT value FROM json_each(?1))",
                "SELECT t.value, s.village FROM json_array_elements_text(CAST(?1 AS json)) t
                 CROSS JOIN LATERAL (SELECT pos FROM entity WHERE id = t.value OFFSET 0) e
                 CROSS JOIN LATERAL (SELECT village FROM scope WHERE pos = e.pos OFFSET 0) s",
            ))?
            .query_map([id_list(wanted.iter().copied())], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for id in wanted {
            self.scopes.insert(id.clone(), BTreeSet::new());
        }
        for (entity, village) in rows {
            self.scopes.entry(entity).or_default().insert(village);
        }
        Ok(())
    }

    /// A record's villages as stored (or about to be, by [`Pending::store_scopes`]).
    pub(crate) fn scope(
        &mut self,
        conn: &Conn<'_>,
        entity: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        if let Some(scope) = self.scopes.get(entity) {
            return Ok(scope.clone());
        }
        let scope = crate::store::scope::scope_of(conn, entity)?;
        self.scopes.insert(entity.to_owned(), scope.clone());
        Ok(scope)
    }

    /// Notes a village a record enters; stored by [`Pending::store_scopes`].
    pub(crate) fn add_scope(&mut self, entity: &str, village: &str) {
        self.scopes
            .entry(entity.to_owned())
            .or_default()
            .insert(village.to_owned());
        self.scope_rows
            .push((entity.to_owned(), village.to_owned()));
    }

    /// Notes a village a record left (its row already deleted, or not yet stored: then it is
    /// not).
    pub(crate) fn remove_scope(&mut self, entity: &str, village: &str) {
        if let Some(scope) = self.scopes.get_mut(entity) {
            scope.remove(village);
        }
        self.scope_rows.retain(|(e, v)| e != entity || v != village);
    }

    /// Stores the scope rows noted, at their records' positions (a record with no row has no
    /// scope): before anything reads `scope`.
    pub(crate) fn store_scopes(&mut self, conn: &Conn<'_>) -> Result<(), StoreError> {
        let rows = std::mem::take(&mut self.scope_rows);
        if rows.is_empty() {
            return Ok(());
        }
        let list = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into());
        conn.prepare_cached(conn.pick(
            "INSERT OR IGNORE INTO scope (pos, village)
             SELECT e.pos, j.value ->> 1 FROM json_each(?1) j JOIN entity e ON e.id = j.value ->> 0",
            // A lookup per row (see `id_list`).
            "INSERT OR IGNORE INTO scope (pos, village)
             SELECT e.pos, j.value ->> 1 FROM json_array_elements(CAST(?1 AS json)) j
             CROSS JOIN LATERAL (SELECT pos FROM entity WHERE id = j.value ->> 0 OFFSET 0) e",
        ))?
        .execute([list])?;
        Ok(())
    }

    /// A record as its row holds it now (read, and remembered, when this unit has not yet),
    /// for a record this unit holds no unstored writes of.
    pub(crate) fn stored(
        &mut self,
        conn: &Conn<'_>,
        entity: &str,
    ) -> Result<Option<&Loaded>, StoreError> {
        if self.records.contains_key(entity) {
            // Written and not flushed: the row is behind; not remembered.
            return Err(StoreError::Backend(format!(
                "the record {entity} is read as stored while its writes are pending"
            )));
        }
        self.recall(entity);
        if !self.known.contains_key(entity) {
            let row = load(conn, entity)?;
            self.known.insert(entity.to_owned(), row);
        }
        Ok(self.known.get(entity).and_then(Option::as_ref))
    }

    /// Notes a record's row as now stored (written outside the flush).
    pub(crate) fn restored(&mut self, entity: &str, loaded: Loaded) {
        self.flushed.remove(entity);
        self.known.insert(entity.to_owned(), Some(loaded));
    }

    /// Whether this unit inserted the record.
    pub(crate) fn created_here(&self, entity: &str) -> bool {
        self.created.contains(entity)
    }

    /// Makes `entity` a record of this unit, read from its row (or new, of `kind`).
    fn entry(
        &mut self,
        conn: &Conn<'_>,
        entity: &str,
        kind: &str,
    ) -> Result<&mut Dirty, StoreError> {
        if !self.records.contains_key(entity) {
            match self.take_known(conn, entity)? {
                Some(loaded) => self.keep(entity, loaded, true),
                None => self.create(entity, kind),
            }
        }
        self.records
            .get_mut(entity)
            .ok_or_else(|| StoreError::Backend("pending record".into()))
    }

    /// The row of a record not in `records`, moved out of `known` (read when not known).
    fn take_known(&mut self, conn: &Conn<'_>, entity: &str) -> Result<Option<Loaded>, StoreError> {
        self.recall(entity);
        match self.known.remove(entity) {
            Some(row) => {
                if row.is_none() {
                    // Still known absent, should nothing create it.
                    self.known.insert(entity.to_owned(), None);
                }
                Ok(row)
            }
            None => load(conn, entity),
        }
    }

    /// A field's current value, this unit's writes included (the record is read once).
    pub(crate) fn held(
        &mut self,
        conn: &Conn<'_>,
        entity: &str,
        field: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        if !self.records.contains_key(entity) {
            match self.take_known(conn, entity)? {
                Some(loaded) => self.keep(entity, loaded, true),
                None => {
                    self.known.insert(entity.to_owned(), None);
                }
            }
        }
        Ok(self
            .records
            .get(entity)
            .and_then(|d| d.loaded.state.get(field))
            .map(|s| s.version.clone()))
    }

    /// Notes a record this unit creates (known not to be stored): nothing is read for it.
    pub(crate) fn create(&mut self, entity: &str, kind: &str) {
        if self.records.contains_key(entity) {
            return;
        }
        let loaded = Loaded {
            pos: 0,
            kind: kind.to_owned(),
            village: None,
            seq: 0,
            state: State::new(),
        };
        self.keep(entity, loaded, false);
    }

    fn keep(&mut self, entity: &str, loaded: Loaded, stored: bool) {
        let before = loaded
            .state
            .iter()
            .filter(|(name, _)| linked(name))
            .map(|(name, slot)| (name.clone(), slot.version.value.clone()))
            .collect();
        self.known.remove(entity);
        self.flushed.remove(entity);
        self.order.push(entity.to_owned());
        self.records.insert(
            entity.to_owned(),
            Dirty {
                loaded,
                stored,
                before,
                written: Vec::new(),
            },
        );
    }

    /// Writes one field (the merge decided it wins), recording the action in the history.
    pub(crate) fn write(
        &mut self,
        conn: &Conn<'_>,
        entity: &str,
        kind: &str,
        field: &str,
        version: Versioned,
        counter: u64,
    ) -> Result<(), StoreError> {
        let dirty = self.entry(conn, entity, kind)?;
        if field == "village" {
            dirty.loaded.village = version.value.as_str().map(str::to_owned);
        }
        if !dirty.written.iter().any(|f| f == field) {
            dirty.written.push(field.to_owned());
        }
        dirty.loaded.state.insert(
            field.to_owned(),
            Slot {
                version,
                seq: 0,
                counter,
            },
        );
        Ok(())
    }

    /// Notes an accepted change in the history, won or lost: with the one before it when it
    /// shares its record, stamp and writer (one action).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn note(
        &mut self,
        entity: &str,
        kind: &str,
        field: &str,
        old: Option<Versioned>,
        incoming: &Versioned,
        won: bool,
        device: &str,
        account: i64,
        at_ms: u64,
    ) {
        let changed = Changed {
            old,
            value: incoming.value.clone(),
            won,
        };
        if let Some(last) = self.actions.last_mut()
            && last.entity == entity
            && last.stamp == incoming.stamp
            && last.device == device
            && last.account == account
            && !last.fields.iter().any(|(f, _)| f == field)
        {
            last.fields.push((field.to_owned(), changed));
            return;
        }
        self.actions.push(Action {
            entity: entity.to_owned(),
            kind: kind.to_owned(),
            stamp: incoming.stamp,
            device: device.to_owned(),
            account,
            at_ms,
            fields: vec![(field.to_owned(), changed)],
        });
    }

    /// Stores every written record (a new sequence number each, for the fields written, its
    /// feed entries moved to it), its links, and the history: what reads of the tables need
    /// first. New rows, links and history go in multi-row statements.
    pub(crate) fn flush(
        &mut self,
        conn: &Conn<'_>,
        mut next: impl FnMut() -> i64,
    ) -> Result<(), StoreError> {
        // What the last flush stored and nothing took is known as stored.
        for (entity, loaded) in std::mem::take(&mut self.flushed) {
            self.known.insert(entity, Some(loaded));
        }
        let fresh = self
            .records
            .values()
            .filter(|d| !d.stored && !d.written.is_empty())
            .count();
        let mut positions = new_positions(conn, fresh)?.into_iter();
        let mut new_rows: Vec<SqlValue> = Vec::new();
        let mut new_links: Vec<SqlValue> = Vec::new();
        for entity in std::mem::take(&mut self.order) {
            let Some(mut dirty) = self.records.remove(&entity) else {
                continue;
            };
            if dirty.written.is_empty() {
                // Read only: as stored.
                let row = dirty.stored.then_some(dirty.loaded);
                self.known.insert(entity, row);
                continue;
            }
            let old_seq = dirty.loaded.seq;
            let seq = next();
            for field in &dirty.written {
                if let Some(slot) = dirty.loaded.state.get_mut(field) {
                    slot.seq = seq;
                }
            }
            dirty.loaded.seq = seq;
            if !dirty.stored {
                dirty.loaded.pos = positions
                    .next()
                    .ok_or_else(|| StoreError::Backend("too few positions".into()))?;
            }
            let text = encode(&dirty.loaded.state);
            let loaded = &dirty.loaded;
            if dirty.stored {
                let updated = conn
                    .prepare_cached(
                        "UPDATE entity SET village = ?2, seq = ?3, state = ?4 WHERE pos = ?1",
                    )?
                    .execute(params![loaded.pos, loaded.village, loaded.seq, text])?;
                if updated != 1 {
                    return Err(StoreError::Backend(format!(
                        "the record {entity} is not at its position {}",
                        loaded.pos
                    )));
                }
                if loaded.seq != old_seq {
                    // Its entries in the feeds of its villages move to the new number: by each
                    // village's key where its villages are known (PostgreSQL planned the
                    // statement below as a scan of the feed while its statistics said small).
                    match self.scopes.get(&entity) {
                        Some(villages) => {
                            for village in villages {
                                conn.prepare_cached(
                                    "UPDATE feed SET seq = ?3 WHERE village = ?1 AND seq = ?2",
                                )?
                                .execute(params![village, old_seq, loaded.seq])?;
                            }
                        }
                        None => {
                            conn.prepare_cached(
                                "UPDATE feed SET seq = ?3 WHERE village IN (SELECT village FROM scope WHERE pos = ?1)
                                 AND seq = ?2",
                            )?
                            .execute(params![loaded.pos, old_seq, loaded.seq])?;
                        }
                    }
                }
            } else {
                new_rows.extend([
                    SqlValue::Integer(loaded.pos),
                    SqlValue::from(entity.as_str()),
                    SqlValue::from(loaded.kind.as_str()),
                    loaded
                        .village
                        .clone()
                        .map_or(SqlValue::Null, SqlValue::Text),
                    SqlValue::Integer(loaded.seq),
                    SqlValue::Text(text),
                ]);
                self.created.insert(entity.clone());
            }
            for field in dirty.written.iter().filter(|f| linked(f)) {
                let was = dirty.before.get(field).and_then(Value::as_str);
                let now = loaded
                    .state
                    .get(field)
                    .and_then(|s| s.version.value.as_str());
                if was == now {
                    continue;
                }
                if let Some(was) = was {
                    conn.prepare_cached(
                        "DELETE FROM link WHERE field = ?1 AND target = ?2 AND entity = ?3",
                    )?
                    .execute(params![field, was, entity])?;
                }
                if let Some(now) = now {
                    new_links.extend([
                        SqlValue::from(field.as_str()),
                        SqlValue::from(now),
                        SqlValue::from(entity.as_str()),
                    ]);
                }
            }
            self.known.remove(&entity);
            self.flushed.insert(entity, dirty.loaded);
        }
        self.records.clear();
        conn.execute_rows(
            "INSERT INTO entity (pos, id, kind, village, seq, state)",
            "",
            6,
            &new_rows,
        )?;
        // A record's scope is filed under its position: the new rows' first.
        self.store_scopes(conn)?;
        conn.execute_rows(
            "INSERT OR IGNORE INTO link (field, target, entity)",
            "",
            3,
            &new_links,
        )?;
        let mut history: Vec<SqlValue> = Vec::with_capacity(self.actions.len() * 8);
        for action in std::mem::take(&mut self.actions) {
            let pos = self.position(conn, &action.entity)?;
            let fields: serde_json::Map<String, Value> = action
                .fields
                .into_iter()
                .map(|(name, c)| {
                    let (old, old_stamp) = match c.old {
                        Some(v) => (v.value, Value::String(v.stamp.to_string())),
                        None => (Value::Null, Value::Null),
                    };
                    (
                        name,
                        Value::Array(vec![old, old_stamp, c.value, Value::Bool(c.won)]),
                    )
                })
                .collect();
            history.extend([
                SqlValue::Integer(pos),
                SqlValue::Text(action.entity),
                SqlValue::Text(action.kind),
                SqlValue::Text(action.stamp.to_string()),
                SqlValue::Text(action.device),
                SqlValue::Integer(action.account),
                SqlValue::Integer(action.at_ms as i64),
                SqlValue::Text(Value::Object(fields).to_string()),
            ]);
        }
        conn.execute_rows(
            "INSERT INTO history (pos, entity, kind, stamp, device, account, at_ms, changes)",
            "",
            8,
            &history,
        )?;
        Ok(())
    }

    /// A stored record's position: as this unit knows its row, or read.
    fn position(&mut self, conn: &Conn<'_>, entity: &str) -> Result<i64, StoreError> {
        if let Some(loaded) = self.flushed.get(entity) {
            return Ok(loaded.pos);
        }
        if let Some(Some(loaded)) = self.known.get(entity) {
            return Ok(loaded.pos);
        }
        let row = load(conn, entity)?;
        let pos = row.as_ref().map(|l| l.pos);
        self.known.insert(entity.to_owned(), row);
        pos.ok_or_else(|| StoreError::Backend(format!("no record {entity} to file history under")))
    }
}

/// The last position given (0 before any): every record's and every compacted record's is at
/// or before it.
pub(crate) fn last_position(conn: &Conn<'_>) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(conn.pick(
            "SELECT MAX(COALESCE((SELECT MAX(pos) FROM entity), 0),
                        COALESCE((SELECT MAX(pos) FROM compacted), 0))",
            "SELECT GREATEST((SELECT MAX(pos) FROM entity), (SELECT MAX(pos) FROM compacted), 0)",
        ))?
        .query_row((), |r| r.get(0))?)
}

/// Positions for `n` new records, past every record's and every compacted record's: a
/// position is never given twice, so history filed under it is one record's.
fn new_positions(conn: &Conn<'_>, n: usize) -> Result<Vec<i64>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(match conn.dialect() {
        // One writer: the numbers after the last are free.
        Dialect::Sqlite => {
            let last = last_position(conn)?;
            (1..=n as i64).map(|i| last + i).collect()
        }
        // The identity's sequence, which never hands a number out twice; and past every
        // record's and every compacted record's, should the sequence have been set back (the
        // data restored without it): then it is set past them first.
        Dialect::Postgres => {
            let take = || -> Result<Vec<(i64, i64)>, StoreError> {
                Ok(conn
                    .prepare_cached(
                        "SELECT nextval(pg_get_serial_sequence('entity', 'pos')),
                                (SELECT GREATEST((SELECT MAX(pos) FROM entity),
                                                 (SELECT MAX(pos) FROM compacted), 0))
                         FROM generate_series(1, ?1)",
                    )?
                    .query_map([n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?)
            };
            let mut taken = take()?;
            if let Some(floor) = taken.iter().filter(|(p, f)| p <= f).map(|(_, f)| *f).max() {
                // Never back: numbers another writer took stay taken (all writers hold the
                // writer lock besides, `pg::WRITER_LOCK`).
                conn.prepare_cached(
                    "SELECT setval(pg_get_serial_sequence('entity', 'pos'),
                                   GREATEST(?1, pg_sequence_last_value(
                                       CAST(pg_get_serial_sequence('entity', 'pos') AS regclass))))",
                )?
                .query_row([floor], |r| r.get::<_, i64>(0))?;
                taken = take()?;
            }
            taken.into_iter().map(|(p, _)| p).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_record_is_placed_past_every_record_and_every_record_compacted_away() {
        let db = crate::store::Db::open_in_memory().unwrap();
        db.call_blocking(|c| {
            assert_eq!(new_positions(c, 2)?, [1, 2]);
            // The last record compacted away stood past every live one: its history stays
            // filed under 9, which no new record may take.
            c.execute_batch(
                "INSERT INTO entity (pos, id, kind) VALUES (4, 'a', 'person');
                 INSERT INTO compacted (pos, id) VALUES (9, 'b'), (-3, 'c');",
            )?;
            assert_eq!(new_positions(c, 2)?, [10, 11]);
            c.execute_batch("DELETE FROM compacted")?;
            assert_eq!(new_positions(c, 1)?, [5]);
            assert!(new_positions(c, 0)?.is_empty());
            Ok(())
        })
        .unwrap();
    }
}
