//! Connections and rows: opening the database with its pragmas, the device row, and records as
//! stored (merged field state encoded compactly, summary columns, links). No business rules here.

use std::collections::BTreeMap;
use std::path::Path;

use baylink_domain::{EntityKind, FieldType, Summary, summarize_with};
use baylink_sync::{Clock, EntityState, Hlc, NodeId, Stamp, Versioned};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::schema;

/// SQLCipher: a raw 256-bit key (already stretched by argon2id), set before anything reads the
/// file.
fn unlock(conn: &Connection, key: &[u8; 32]) -> Result<()> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.pragma_update(None, "key", format!("x'{hex}'"))?;
    Ok(())
}

/// Copies the log back into the database on a thread of its own, with a connection of its own,
/// when nudged (after a pull's pages are written): the store's connection then seldom reaches
/// its own checkpoint, which waits for the disk to sync what it copies (a bootstrap stood still
/// a quarter of a second at each). The thread ends with the store.
pub(crate) struct Checkpointer {
    nudge: std::sync::mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread, on the database at `path` (opened and brought up to date already).
    /// `None` if it cannot: the store's own checkpoints copy everything then.
    pub(crate) fn start(path: &Path, key: Option<&[u8; 32]>) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        if let Some(key) = key {
            unlock(&conn, key).ok()?;
        }
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    // PASSIVE: never waits for the store's writes; what it cannot copy now, the
                    // next nudge (or the store's own checkpoint) copies.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer { nudge })
    }

    /// Asks for a checkpoint; one already asked for and not begun covers this one.
    pub(crate) fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }
}

/// Opens (creating if need be) the database at `path`, or in memory, and brings it up to date.
pub(crate) fn open(
    path: Option<&Path>,
    node: Option<NodeId>,
    key: Option<&[u8; 32]>,
) -> Result<Connection> {
    let mut conn = match path {
        Some(path) => Connection::open(path)?,
        None => Connection::open_in_memory()?,
    };
    if let Some(key) = key {
        unlock(&conn, key)?;
        // A wrong key shows at the first read: "file is not a database".
        let readable = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        });
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &readable
            && e.code == rusqlite::ErrorCode::NotADatabase
        {
            return Err(Error::WrongPassphrase);
        }
        readable?;
    }
    // WAL lets readers run beside the writer; NORMAL is durable at each checkpoint and never
    // corrupts, which is the usual trade on phones. An encrypted file opened without its
    // passphrase fails here, at the first read: told as the passphrase, not as storage.
    if let Err(e) = conn.pragma_update(None, "journal_mode", "WAL") {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.code == rusqlite::ErrorCode::NotADatabase
        {
            return Err(Error::WrongPassphrase);
        }
        return Err(e.into());
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // 8 MiB of page cache (SQLite's default is 2 MiB): a district's records and their indexes
    // stay warm, and large batches spill far less to the WAL.
    conn.pragma_update(None, "cache_size", -8192)?;
    // Checkpoint every 10,000 pages (40 MB of log) rather than 1,000: a bootstrap's many commits
    // then copy a page they all rewrote back once (its apply took about a sixth less).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A write transaction takes the write lock when it begins: one that read first and then
    // wrote would be refused at once ("database is locked", no waiting) had another connection
    // (an app's sync beside its screens) written in between.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    schema::migrate(&mut conn)?;
    // A bootstrap cut short by a crash left its search indexes to build.
    let tx = conn.unchecked_transaction()?;
    restore_indexes(&tx)?;
    tx.commit()?;
    conn.execute(
        "INSERT OR IGNORE INTO device (id, node) VALUES (1, ?1)",
        [node.unwrap_or_else(NodeId::random).to_string()],
    )?;
    Ok(conn)
}

/// SQLite's count of commits by other connections to this file (`PRAGMA data_version`).
pub(crate) fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Temporary triggers (this connection's only, nothing in the file) that note each record a
/// write touches, its row or its waiting changes, in `temp.changed`; rolled back with the write.
/// A record already noted is skipped by `WHERE NOT EXISTS`, never by a conflict: a trigger's
/// `OR IGNORE` gives way to the conflict policy of the statement that fired it, and a record's
/// upsert (`ON CONFLICT DO UPDATE`) would abort on a second note of the same record.
pub(crate) fn watch_changes(conn: &Connection) -> Result<()> {
    let note = |name: &str, event: &str, table: &str, row: &str, id: &str, kind: &str| {
        format!(
            "CREATE TEMP TRIGGER IF NOT EXISTS {name} AFTER {event} ON main.{table} BEGIN
                 INSERT INTO changed (id, kind) SELECT {row}.{id}, {row}.{kind}
                 WHERE NOT EXISTS (SELECT 1 FROM changed WHERE id = {row}.{id});
             END;"
        )
    };
    let mut sql = String::from(
        "CREATE TEMP TABLE IF NOT EXISTS changed (id TEXT PRIMARY KEY, kind TEXT NOT NULL) WITHOUT ROWID;",
    );
    sql += &note(
        "changed_record_new",
        "INSERT",
        "record",
        "new",
        "id",
        "kind",
    );
    sql += &note("changed_record", "UPDATE", "record", "new", "id", "kind");
    sql += &note(
        "changed_record_gone",
        "DELETE",
        "record",
        "old",
        "id",
        "kind",
    );
    sql += &note(
        "changed_outbox_new",
        "INSERT",
        "outbox",
        "new",
        "entity",
        "kind",
    );
    sql += &note(
        "changed_outbox",
        "UPDATE OF pending, refused",
        "outbox",
        "new",
        "entity",
        "kind",
    );
    sql += &note(
        "changed_outbox_gone",
        "DELETE",
        "outbox",
        "old",
        "entity",
        "kind",
    );
    conn.execute_batch(&sql)?;
    Ok(())
}

/// The records noted by [`watch_changes`] since the last call, by kind, and forgets them.
pub(crate) fn take_changes(conn: &Connection) -> Result<BTreeMap<String, Vec<Uuid>>> {
    let mut out: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    let rows: Vec<(String, String)> = conn
        .prepare_cached("SELECT kind, id FROM temp.changed ORDER BY kind, id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.is_empty() {
        return Ok(out);
    }
    conn.execute("DELETE FROM temp.changed", [])?;
    for (kind, id) in rows {
        let id = Uuid::parse_str(&id).map_err(|_| Error::Corrupt("record id".into()))?;
        out.entry(kind).or_default().push(id);
    }
    Ok(out)
}

/// This replica's identity and counters, as kept in the `device` row.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) node: NodeId,
    pub(crate) clock: Clock,
    pub(crate) next_counter: u64,
    pub(crate) user: String,
    /// Newest clock reading seen from other nodes.
    pub(crate) max_remote: Hlc,
}

pub(crate) fn load_device(conn: &Connection) -> Result<Device> {
    let (node, last, offset, next, user, max_remote): (String, i64, i64, i64, String, i64) = conn
        .query_row(
        "SELECT node, clock_last, clock_offset_ms, next_counter, user_name, max_remote_hlc
             FROM device WHERE id = 1",
        [],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )?;
    Ok(Device {
        node: node
            .parse()
            .map_err(|_| Error::Corrupt("device node id".into()))?,
        clock: Clock::new(Hlc::from_u64(last as u64), offset),
        next_counter: next as u64,
        user,
        max_remote: Hlc::from_u64(max_remote as u64),
    })
}

pub(crate) fn save_device(conn: &Connection, device: &Device) -> Result<()> {
    conn.prepare_cached(
        "UPDATE device SET clock_last = ?1, clock_offset_ms = ?2, next_counter = ?3, user_name = ?4,
             max_remote_hlc = ?5 WHERE id = 1",
    )?
    .execute(params![
        device.clock.last().as_u64() as i64,
        device.clock.offset_ms(),
        device.next_counter as i64,
        device.user,
        device.max_remote.as_u64() as i64
    ])?;
    Ok(())
}

/// The device's link to its server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) server: String,
    pub(crate) username: String,
    pub(crate) display_name: String,
    pub(crate) villages: Vec<String>,
    /// The villages' names by code, as the server last gave them.
    pub(crate) village_names: BTreeMap<String, String>,
    pub(crate) access_token: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) cursor: Option<String>,
    pub(crate) last_sync_ms: Option<u64>,
    /// The device key the server last gave this device (kept across sign-outs).
    pub(crate) device_key: Option<String>,
}

pub(crate) fn load_session(conn: &Connection) -> Result<Option<Session>> {
    let row = conn
        .query_row(
            "SELECT server, username, display_name, villages, access_token, refresh_token, cursor,
                 last_sync_ms, device_key, village_names
             FROM session WHERE id = 1",
            [],
            |r| {
                Ok(Session {
                    server: r.get(0)?,
                    username: r.get(1)?,
                    display_name: r.get(2)?,
                    villages: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    access_token: r.get(4)?,
                    refresh_token: r.get(5)?,
                    cursor: r.get(6)?,
                    last_sync_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    device_key: r.get(8)?,
                    village_names: serde_json::from_str(&r.get::<_, String>(9)?)
                        .unwrap_or_default(),
                })
            },
        )
        .optional()?;
    Ok(row)
}

pub(crate) fn save_session(conn: &Connection, s: &Session) -> Result<()> {
    conn.execute(
        "INSERT INTO session (id, server, username, display_name, villages, access_token, refresh_token,
             cursor, last_sync_ms, device_key, village_names)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET server = excluded.server, username = excluded.username,
             display_name = excluded.display_name, villages = excluded.villages,
             access_token = excluded.access_token, refresh_token = excluded.refresh_token,
             cursor = excluded.cursor, last_sync_ms = excluded.last_sync_ms,
             device_key = excluded.device_key, village_names = excluded.village_names",
        params![
            s.server,
            s.username,
            s.display_name,
            serde_json::to_string(&s.villages).unwrap_or_else(|_| "[]".into()),
            s.access_token,
            s.refresh_token,
            s.cursor,
            s.last_sync_ms.map(|v| v as i64),
            s.device_key,
            serde_json::to_string(&s.village_names).unwrap_or_else(|_| "{}".into())
        ],
    )?;
    Ok(())
}

/// Removes records and everything that points from them (links, pending changes); `pending`
/// says whether links wait in `link_pending` ([`links_pending`]).
pub(crate) fn delete_record(conn: &Connection, id: Uuid, pending: bool) -> Result<()> {
    remove_record(conn, id, pending)?;
    own_values_dropped(conn)
}

/// [`delete_record`] of a record none of whose values ever left this phone (a capture
/// withdrawn before any push offered it): the server holds nothing of it to send back.
pub(crate) fn remove_record(conn: &Connection, id: Uuid, pending: bool) -> Result<()> {
    forget_record(conn, id, pending)?;
    conn.prepare_cached("DELETE FROM outbox WHERE entity = ?1")?
        .execute([id.hyphenated().to_string()])?;
    Ok(())
}

/// Drops a record a pull says is no longer in this phone's villages. Its changes still in the
/// outbox stay, their values copied out of it: one waiting goes in the next push and the
/// server answers for it, and one refused stays where the officer sees it until dismissed.
/// (Dropping them too lost an edit made while the sync ran, and the refusal the sync's own
/// push had just been given.)
pub(crate) fn drop_purged(conn: &Connection, node: NodeId, id: Uuid, pending: bool) -> Result<()> {
    crate::outbox::detach(conn, node, id)?;
    forget_record(conn, id, pending)?;
    own_values_dropped(conn)
}

/// Removes a record and the links from it, leaving its outbox rows.
fn forget_record(conn: &Connection, id: Uuid, pending: bool) -> Result<()> {
    let id_text = id.hyphenated().to_string();
    // Its links are found from its reference fields: the table is keyed by what they name.
    if let Some(record) = load_record(conn, id)? {
        for (field, target) in references(&record) {
            unlink(conn, pending, &target, &id_text, field)?;
        }
    }
    conn.prepare_cached("DELETE FROM record WHERE id = ?1")?
        .execute([&id_text])?;
    Ok(())
}

/// Notes that values this device wrote are no longer all here (a record dropped, a refused
/// change taken back: a push still on its way may yet be accepted): pulls ask the server again
/// for every value it wrote so far.
pub(crate) fn own_values_dropped(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE device SET own_floor = MAX(own_floor, next_counter - 1) WHERE id = 1",
    )?
    .execute([])?;
    Ok(())
}

/// [`own_values_dropped`] within a write that has issued counters up to `last`, not yet stored.
pub(crate) fn own_values_dropped_upto(conn: &Connection, last: u64) -> Result<()> {
    own_values_dropped(conn)?;
    conn.prepare_cached("UPDATE device SET own_floor = MAX(own_floor, ?1) WHERE id = 1")?
        .execute([last as i64])?;
    Ok(())
}

/// Removes one link, from `link_pending` too while a bootstrap is under way.
fn unlink(conn: &Connection, pending: bool, target: &str, source: &str, field: &str) -> Result<()> {
    let key = params![target, source, field];
    conn.prepare_cached("DELETE FROM link WHERE target = ?1 AND source = ?2 AND field = ?3")?
        .execute(key)?;
    if pending {
        conn.prepare_cached(
            "DELETE FROM link_pending WHERE target = ?1 AND source = ?2 AND field = ?3",
        )?
        .execute(key)?;
    }
    Ok(())
}

/// What a record's reference fields name, by field.
fn references(record: &StoredRecord) -> Vec<(&'static str, String)> {
    let Some(kind) = EntityKind::parse(&record.kind) else {
        return Vec::new();
    };
    kind.fields()
        .filter(|spec| matches!(spec.ty, FieldType::Ref(_)))
        .filter_map(|spec| {
            let target = record.state.get(spec.name)?.value.as_str()?;
            Some((spec.name, target.to_owned()))
        })
        .collect()
}

/// An entity as the device holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) kind: String,
    pub(crate) state: EntityState,
}

/// The stored form of an entity state: each distinct stamp listed once (clock and node index),
/// each field `[value, stamp index]`. Every field of one action shares a stamp, so a record is
/// barely larger than its values.
#[derive(Deserialize)]
struct CompactState {
    n: Vec<NodeId>,
    s: Vec<(u64, usize)>,
    f: BTreeMap<String, (Value, usize)>,
}

/// A state written in the form [`CompactState`] reads, straight from the state (fields already
/// in name order), with each field's stamp index.
struct Encoded<'a> {
    state: &'a EntityState,
    nodes: Vec<NodeId>,
    stamps: Vec<(u64, usize)>,
    indexes: Vec<usize>,
}

/// The fields of an [`Encoded`] state.
struct EncodedFields<'a>(&'a Encoded<'a>);

impl Serialize for Encoded<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("CompactState", 3)?;
        out.serialize_field("n", &self.nodes)?;
        out.serialize_field("s", &self.stamps)?;
        out.serialize_field("f", &EncodedFields(self))?;
        out.end()
    }
}

impl Serialize for EncodedFields<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let fields = self.0.state.iter().zip(&self.0.indexes);
        serializer.collect_map(fields.map(|((name, v), index)| (name, (&v.value, index))))
    }
}

fn encode_state(state: &EntityState) -> String {
    let mut encoded = Encoded {
        state,
        nodes: Vec::new(),
        stamps: Vec::new(),
        indexes: Vec::with_capacity(state.len()),
    };
    for v in state.values() {
        let node = match encoded.nodes.iter().position(|n| *n == v.stamp.node) {
            Some(i) => i,
            None => {
                encoded.nodes.push(v.stamp.node);
                encoded.nodes.len() - 1
            }
        };
        let stamp = (v.stamp.hlc.as_u64(), node);
        let index = match encoded.stamps.iter().position(|s| *s == stamp) {
            Some(i) => i,
            None => {
                encoded.stamps.push(stamp);
                encoded.stamps.len() - 1
            }
        };
        encoded.indexes.push(index);
    }
    // States of JSON values always serialise.
    serde_json::to_string(&encoded).unwrap_or_default()
}

fn decode_state(text: &str) -> Result<EntityState> {
    let compact: CompactState =
        serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("record state: {e}")))?;
    let corrupt = || Error::Corrupt("record state: dangling index".into());
    compact
        .f
        .into_iter()
        .map(|(name, (value, index))| {
            let &(hlc, node) = compact.s.get(index).ok_or_else(corrupt)?;
            let node = *compact.n.get(node).ok_or_else(corrupt)?;
            Ok((
                name,
                Versioned::new(value, Stamp::new(Hlc::from_u64(hlc), node)),
            ))
        })
        .collect()
}

/// An action of this device's as its record holds it: the record, its kind, the action's
/// clock reading and the fields that still carry its stamp.
pub(crate) type OwnAction = (Uuid, String, Hlc, Vec<String>);

/// This device's own actions whose values stand in its records and that wait in no outbox
/// row: each record's fields grouped by the stamp of this device's node that wrote them, the
/// record's earliest first (its creation, when it was this device's), records in the order
/// they were stored.
pub(crate) fn own_standing_actions(conn: &Connection, node: NodeId) -> Result<Vec<OwnAction>> {
    let queued: std::collections::HashSet<(String, i64)> = conn
        .prepare("SELECT entity, hlc FROM outbox")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare("SELECT id, kind, state FROM record ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut actions = Vec::new();
    for row in rows {
        let (id, kind, state) = row?;
        let entity = Uuid::parse_str(&id).map_err(|_| Error::Corrupt("record id".into()))?;
        // Fields in field order within each stamp, as an outbox row that lists none reads them.
        let mut fields: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (field, version) in decode_state(&state)? {
            if version.stamp.node == node {
                fields
                    .entry(version.stamp.hlc.as_u64())
                    .or_default()
                    .push(field);
            }
        }
        for (hlc, fields) in fields {
            if !queued.contains(&(id.clone(), hlc as i64)) {
                actions.push((entity, kind.clone(), Hlc::from_u64(hlc), fields));
            }
        }
    }
    Ok(actions)
}

/// Notes a record a phone starting over kept for its waiting changes, until a pull brings it.
pub(crate) fn mark_unconfirmed(conn: &Connection, entity: &str) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO unconfirmed (entity) VALUES (?1)",
        [entity],
    )?;
    Ok(())
}

/// Whether any record kept when starting over waits for a pull to bring it.
pub(crate) fn has_unconfirmed(conn: &Connection) -> Result<bool> {
    Ok(
        conn.query_row("SELECT EXISTS (SELECT 1 FROM unconfirmed)", [], |r| {
            r.get(0)
        })?,
    )
}

/// A pull brought this record: it is the officer's still.
pub(crate) fn confirm(conn: &Connection, entity: Uuid) -> Result<()> {
    conn.prepare_cached("DELETE FROM unconfirmed WHERE entity = ?1")?
        .execute([entity.hyphenated().to_string()])?;
    Ok(())
}

/// The records kept when starting over that no pull brought, forgotten as such.
pub(crate) fn take_unconfirmed(conn: &Connection) -> Result<Vec<Uuid>> {
    let ids: Vec<String> = conn
        .prepare("SELECT entity FROM unconfirmed")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    conn.execute("DELETE FROM unconfirmed", [])?;
    Ok(ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

/// Marks (or clears) that this device's own values are to be sent again once a pull from the
/// start is complete.
pub(crate) fn set_resend_due(conn: &Connection, due: bool) -> Result<()> {
    conn.execute("UPDATE device SET resend_due = ?1 WHERE id = 1", [due])?;
    Ok(())
}

/// Whether this device's own values are to be sent again.
pub(crate) fn resend_due(conn: &Connection) -> Result<bool> {
    Ok(
        conn.query_row("SELECT resend_due FROM device WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}

/// Of these watch-list hits, those on records the device holds that were not told before,
/// with the record's kind, noted as told now.
pub(crate) fn newly_told_hits(
    conn: &Connection,
    hits: &[baylink_sync::wire::WatchHit],
) -> Result<Vec<(Uuid, String, String)>> {
    let mut told = Vec::new();
    for hit in hits {
        let id = hit.entity.hyphenated().to_string();
        let kind: Option<String> = conn
            .prepare_cached("SELECT kind FROM record WHERE id = ?1")?
            .query_row([&id], |r| r.get(0))
            .optional()?;
        let Some(kind) = kind else { continue };
        let new = conn
            .prepare_cached("INSERT OR IGNORE INTO watch_hit_told (id, entity) VALUES (?1, ?2)")?
            .execute(params![hit.id, id])?;
        if new > 0 {
            told.push((hit.entity, kind, hit.rule.clone()));
        }
    }
    Ok(told)
}

/// Whether the device holds any record.
pub(crate) fn holds_records(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM record)", [], |r| r.get(0))?)
}

/// The `deferred_index` entry of the links a bootstrap appends to `link_pending`, with the
/// statements that move them into `link`.
const PENDING_LINKS: &str = "link";
const MOVE_PENDING_LINKS: &str = "INSERT OR IGNORE INTO link (target, source, field)
         SELECT target, source, field FROM link_pending ORDER BY target, source, field;
     DELETE FROM link_pending;";

/// The one search index a bootstrap keeps: it holds the few records returned to the officer,
/// so keeping it up to date costs next to nothing, and building it again a scan of every record.
const KEPT_INDEX: &str = "record_returned";

/// Drops the record table's search indexes, noting how to build them again
/// ([`restore_indexes`]); the unique index on `id`, which merging reads, stays. Links are
/// appended to `link_pending` until then.
pub(crate) fn defer_indexes(conn: &Connection) -> Result<()> {
    let indexes: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM sqlite_schema
             WHERE type = 'index' AND tbl_name = 'record' AND sql IS NOT NULL AND name <> ?1",
        )?
        .query_map([KEPT_INDEX], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, _) in &indexes {
        conn.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
    }
    let pending = (PENDING_LINKS.to_owned(), MOVE_PENDING_LINKS.to_owned());
    for (name, sql) in indexes.iter().chain([&pending]) {
        conn.execute(
            "INSERT OR REPLACE INTO deferred_index (name, sql) VALUES (?1, ?2)",
            params![name, sql],
        )?;
    }
    Ok(())
}

/// Whether links go to `link_pending` for now (a bootstrap is under way).
pub(crate) fn links_pending(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM deferred_index WHERE name = ?1)")?
        .query_row([PENDING_LINKS], |r| r.get(0))?)
}

/// Builds the search indexes [`defer_indexes`] dropped, and moves the pending links, if any.
pub(crate) fn restore_indexes(conn: &Connection) -> Result<()> {
    let deferred: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM deferred_index ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, sql) in deferred {
        conn.execute_batch(&sql)?;
        conn.execute("DELETE FROM deferred_index WHERE name = ?1", [name])?;
    }
    Ok(())
}

pub(crate) fn load_record(conn: &Connection, id: Uuid) -> Result<Option<StoredRecord>> {
    let mut stmt = conn.prepare_cached("SELECT kind, state FROM record WHERE id = ?1")?;
    let row = stmt
        .query_row([id.hyphenated().to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    row.map(|(kind, state)| {
        Ok(StoredRecord {
            kind,
            state: decode_state(&state)?,
        })
    })
    .transpose()
}

/// Every record with its state, by id (for comparisons in tests and diagnostics).
pub(crate) fn load_all(conn: &Connection) -> Result<BTreeMap<Uuid, StoredRecord>> {
    let mut stmt = conn.prepare("SELECT id, kind, state FROM record ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (id, kind, state) = row?;
        let id = Uuid::parse_str(&id).map_err(|_| Error::Corrupt("record id".into()))?;
        out.insert(
            id,
            StoredRecord {
                kind,
                state: decode_state(&state)?,
            },
        );
    }
    Ok(out)
}

/// Writes a record's new state with its summary columns, and keeps its links in step with its
/// reference fields. `old` is the state it replaces; with `None` the record must be new, and
/// nothing is written (false) if it exists after all. `pending` is [`links_pending`] when the
/// caller knows it (read here when links change otherwise).
pub(crate) fn save_record(
    conn: &Connection,
    id: Uuid,
    record: &StoredRecord,
    old: Option<&StoredRecord>,
    pending: Option<bool>,
) -> Result<bool> {
    let kind = EntityKind::parse(&record.kind);
    let get = |name: &str| record.state.get(name).map(|v| &v.value);
    let summary = match kind {
        Some(kind) => summarize_with(kind, get),
        None => Summary {
            village: get("village").and_then(Value::as_str).map(str::to_owned),
            ..Summary::default()
        },
    };
    let updated = record
        .state
        .values()
        .map(|v| v.stamp.hlc)
        .max()
        .unwrap_or(Hlc::ZERO);
    let id_text = id.hyphenated().to_string();
    let written = conn
        .prepare_cached(
            "INSERT INTO record (id, kind, village, label, id_number, name, plate, address, phone,
                             review_status, deleted, updated_hlc, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, village = excluded.village,
             label = excluded.label, id_number = excluded.id_number, name = excluded.name,
             plate = excluded.plate, address = excluded.address, phone = excluded.phone,
             review_status = excluded.review_status, deleted = excluded.deleted,
             updated_hlc = excluded.updated_hlc, state = excluded.state
         WHERE ?14",
        )?
        .execute(params![
            id_text,
            record.kind,
            summary.village,
            summary.label,
            summary.id_number,
            summary.name,
            summary.plate,
            summary.address,
            summary.phone,
            summary.review_status,
            summary.deleted,
            updated.as_u64() as i64,
            encode_state(&record.state),
            old.is_some(),
        ])?;
    if written == 0 {
        return Ok(false);
    }
    let before = old.map(references).unwrap_or_default();
    let after = references(record);
    if before != after {
        let pending = match pending {
            Some(pending) => pending,
            None => links_pending(conn)?,
        };
        for (field, target) in before.iter().filter(|link| !after.contains(link)) {
            unlink(conn, pending, target, &id_text, field)?;
        }
        for (field, target) in after.iter().filter(|link| !before.contains(link)) {
            let key = params![target, id_text, field];
            if pending {
                conn.prepare_cached(
                    "INSERT INTO link_pending (target, source, field) VALUES (?1, ?2, ?3)",
                )?
                .execute(key)?;
            } else {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO link (target, source, field) VALUES (?1, ?2, ?3)",
                )?
                .execute(key)?;
            }
        }
    }
    Ok(true)
}

/// Columns of a summary row, in the order `summary_from_row` reads them.
pub(crate) const SUMMARY_COLUMNS: &str =
    "id, kind, village, label, review_status, deleted, updated_hlc";

/// A summary row read with `SUMMARY_COLUMNS`.
pub(crate) fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<crate::RecordSummary> {
    summary_from_row_at(row, 0)
}

/// A summary read from `SUMMARY_COLUMNS` starting at column `at`.
pub(crate) fn summary_from_row_at(
    row: &Row<'_>,
    at: usize,
) -> rusqlite::Result<crate::RecordSummary> {
    Ok(crate::RecordSummary {
        id: row.get(at)?,
        kind: row.get(at + 1)?,
        village: row.get(at + 2)?,
        label: row.get(at + 3)?,
        review_status: row.get(at + 4)?,
        deleted: row.get(at + 5)?,
        updated_ms: Hlc::from_u64(row.get::<_, i64>(at + 6)? as u64).millis(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_encoding_round_trips_and_interns_nodes() {
        let (a, b) = (NodeId(Uuid::from_u128(1)), NodeId(Uuid::from_u128(2)));
        let mut state = EntityState::new();
        state.insert(
            "name".into(),
            Versioned::new(json!("王芳"), Stamp::new(Hlc::new(5, 1), a)),
        );
        state.insert(
            "phone".into(),
            Versioned::new(json!(null), Stamp::new(Hlc::new(5, 1), a)),
        );
        state.insert(
            "geo".into(),
            Versioned::new(json!({"lat": 22.7}), Stamp::new(Hlc::new(9, 0), b)),
        );
        let text = encode_state(&state);
        assert_eq!(
            text.matches("00000000-0000-0000-0000-000000000001").count(),
            1
        );
        assert_eq!(decode_state(&text).unwrap(), state);
        assert_eq!(text.matches("\"s\":[[").count(), 1);
        assert!(decode_state("{\"n\":[],\"s\":[[5,0]],\"f\":{\"x\":[1,0]}}").is_err());
    }
}
