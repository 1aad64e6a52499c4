//! The use cases of the device: capture, edit and delete (validate, write the merged state and
//! the outbox in one transaction), reading (list, search, one record with its links), and the
//! exchange with other replicas (outbox out, remote changes in, the server's answers).

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map};
use std::path::Path;
use std::sync::Arc;

use baylink_domain::date::{CHINA_OFFSET_MINUTES, datetime_from_unix_ms};
use baylink_domain::{
    Date, EntityKind, Fields, Input, KEY_FIELDS, natural_id, to_text, validate_capture,
    validate_edit,
};
use baylink_sync::merge::values;
use baylink_sync::wire::{ChangeResult, FieldValue, PullResponse, RecordValues, WatchHit};
use baylink_sync::{
    Change, ChangeId, EntityState, NodeId, PhysicalClock, Stamp, SystemClock, Versioned, plan_field,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{
    self, Device, SUMMARY_COLUMNS, StoredRecord, summary_from_row, summary_from_row_at,
};
use crate::error::{Error, Result};
use crate::outbox::{self, Entry, RefusedChange};

/// A record as lists show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct RecordSummary {
    /// Record id.
    pub id: String,
    /// Kind name.
    pub kind: String,
    /// Village code.
    pub village: Option<String>,
    /// One line to show.
    pub label: String,
    /// Review status code.
    pub review_status: Option<String>,
    /// Whether it is deleted.
    pub deleted: bool,
    /// When it last changed (milliseconds since the Unix epoch, by its writer's clock).
    pub updated_ms: u64,
}

/// A record with changes the server refused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct RefusedRecord {
    /// Record id.
    pub id: String,
    /// Kind name.
    pub kind: String,
    /// One line to show.
    pub label: String,
    /// Whether the server never took the record: dismissing removes it from this phone.
    pub never_taken: bool,
    /// The refused fields.
    pub fields: Vec<RefusedField>,
}

/// A refused field of a record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct RefusedField {
    /// Field name.
    pub field: String,
    /// Its Chinese label.
    pub label: String,
    /// Refusal code.
    pub code: String,
    /// The server's reason (Chinese, then English).
    pub message: String,
}

/// What dismissing a record's refusals did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Enum)]
pub enum Dismissal {
    /// The record left this phone: the server never took it, or it had left the officer's
    /// villages already (a pull dropped it, keeping its refusals until now).
    Removed,
    /// Refused fields went back to the values they replaced.
    Reverted {
        /// How many.
        fields: u32,
    },
}

/// A record pointing at another, or pointed at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct Link {
    /// The field that holds the reference.
    pub field: String,
    /// True when `record` points at this record; false when this record points at `record`.
    pub incoming: bool,
    /// The other record.
    pub record: RecordSummary,
}

/// One record with its fields (as form text) and its links.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct Record {
    /// Its summary.
    pub summary: RecordSummary,
    /// Field values as the text a form shows (and accepts back).
    pub fields: HashMap<String, String>,
    /// Records it points at and records that point at it.
    pub links: Vec<Link>,
}

/// The signed-in session as an app shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct SessionInfo {
    /// Server URL.
    pub server: String,
    /// Officer's username.
    pub username: String,
    /// Officer's name.
    pub display_name: String,
    /// Villages the officer works.
    pub villages: Vec<String>,
    /// The same villages with their names, for pickers and headings.
    pub named_villages: Vec<NamedVillage>,
    /// Whether the device holds a live session.
    pub signed_in: bool,
    /// When the last sync completed.
    pub last_sync_ms: Option<u64>,
}

/// A village with its name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct NamedVillage {
    /// The 12-digit code records carry.
    pub code: String,
    /// Its name as the server gave it at the last sign-in or refresh (`桥西社区居民委员会`);
    /// none for a village given since, until the next refresh, or from an older server.
    pub name: Option<String>,
}

/// A record the station returned, with the reviewer's comment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct Feedback {
    /// The record.
    pub record: RecordSummary,
    /// Why it was returned.
    pub comment: String,
}

/// A concurrent edit found while applying remote changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrentEdit {
    /// The entity.
    pub entity: Uuid,
    /// The field.
    pub field: String,
    /// The version that stands.
    pub kept: Versioned,
    /// The version that lost.
    pub lost: Versioned,
}

/// What applying a batch of remote changes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Changes that won and were written.
    pub applied: usize,
    /// Changes that lost to, or repeated, what the device held.
    pub unchanged: usize,
    /// Concurrent edits seen.
    pub concurrent: Vec<ConcurrentEdit>,
    /// What the officer would want told of records this device held before: reviews, merges,
    /// and their own values replaced.
    pub news: Vec<News>,
}

/// Something that happened elsewhere to a record this device held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct News {
    /// The record.
    pub entity: Uuid,
    /// Its kind.
    pub kind: String,
    /// What happened.
    pub what: NewsKind,
}

/// What happened to a record, as a sync report tells the officer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewsKind {
    /// The station approved it.
    Approved,
    /// The station returned it, with the reviewer's comment.
    Returned(Option<String>),
    /// A reviewer merged it into another record (a duplicate of it).
    MergedAway(Uuid),
    /// A value this device wrote was replaced by another device's or the station's: a later
    /// edit, or a concurrent one that won.
    Replaced {
        /// The field.
        field: String,
        /// The value this device had written.
        mine: Value,
        /// The value that stands now.
        theirs: Value,
    },
    /// The person matched the station's watch list: `id_number` or `region`.
    Watched(String),
}

/// Fields whose changes are not "a value this phone wrote was replaced": reviews and merges
/// are news of their own, and the server fills who captured a record and when (a capture made
/// before signing in says `local`).
const NOT_REPLACED_NEWS: [&str; 5] = [
    "review_status",
    "review_comment",
    "merged_into",
    "created_by",
    "created_at",
];

/// The device's store: one SQLite database.
pub struct Store {
    conn: Connection,
    device: Device,
    clock: Arc<dyn PhysicalClock>,
    /// Copies the log back beside this store's writes (a store in a file).
    checkpointer: Option<db::Checkpointer>,
    /// SQLite's `data_version` when `device` was read: another connection to the same file
    /// (an app's sync beside its screens) may have written the row since.
    seen_version: i64,
    /// Records changed by this connection's writes, gathered by temporary triggers once asked
    /// for ([`Store::watch_changes`]).
    watching: bool,
    /// Told of them after each write commits, if set ([`Store::on_commit`]).
    on_commit: Option<OnCommit>,
}

/// What a store tells of the records each committed write changed, by kind.
pub type OnCommit = Box<dyn Fn(BTreeMap<String, Vec<Uuid>>) + Send>;

impl Store {
    /// Opens or creates the store in a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::in_file(path.as_ref(), None, None)
    }

    /// Opens or creates the store in a file encrypted (SQLCipher) under a key derived from the
    /// officer's passphrase; works offline. A wrong passphrase is [`Error::WrongPassphrase`].
    pub fn open_encrypted(path: impl AsRef<Path>, passphrase: &str) -> Result<Store> {
        let key = crate::key::derive(path.as_ref(), passphrase)?;
        Store::in_file(path.as_ref(), None, Some(&key))
    }

    /// Opens or creates the store in a file; a new one takes `node` as its node id
    /// (simulations, which must replay exactly).
    pub fn open_as(path: impl AsRef<Path>, node: NodeId) -> Result<Store> {
        Store::in_file(path.as_ref(), Some(node), None)
    }

    /// A store in memory (tests, benchmarks).
    pub fn open_in_memory() -> Result<Store> {
        Store::from_connection(db::open(None, None, None)?, None)
    }

    /// Opens the store in a file under a key already derived (a second connection to it).
    pub(crate) fn open_keyed(path: &Path, key: Option<&[u8; 32]>) -> Result<Store> {
        Store::in_file(path, None, key)
    }

    fn in_file(path: &Path, node: Option<NodeId>, key: Option<&[u8; 32]>) -> Result<Store> {
        let conn = db::open(Some(path), node, key)?;
        Store::from_connection(conn, db::Checkpointer::start(path, key))
    }

    fn from_connection(conn: Connection, checkpointer: Option<db::Checkpointer>) -> Result<Store> {
        let device = db::load_device(&conn)?;
        let seen_version = db::data_version(&conn)?;
        Ok(Store {
            conn,
            device,
            clock: Arc::new(SystemClock),
            checkpointer,
            seen_version,
            watching: false,
            on_commit: None,
        })
    }

    /// Runs reads in one snapshot of the file (a deferred transaction, which takes no lock and
    /// sees no write committed after its first read), so that what they read agrees: another
    /// connection may write between two statements.
    pub(crate) fn snapshot<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Deferred)?;
        let out = f(&tx);
        // Only read: ending it either way is the same.
        drop(tx);
        out
    }

    /// Reads the device row again if another connection to the file wrote since it was read:
    /// what this store says of its identity, author and clock is then current.
    pub fn refresh(&mut self) -> Result<()> {
        let version = db::data_version(&self.conn)?;
        if version != self.seen_version {
            self.device = db::load_device(&self.conn)?;
            self.seen_version = version;
        }
        Ok(())
    }

    /// From now on, notes which records this connection's writes change (temporary triggers,
    /// this connection's only), for [`Store::take_changes`].
    pub fn watch_changes(&mut self) -> Result<()> {
        if !self.watching {
            db::watch_changes(&self.conn)?;
            self.watching = true;
        }
        Ok(())
    }

    /// Tells `notify` of the records each committed write of this store changes, on the thread
    /// that wrote, right after the commit.
    pub fn on_commit(&mut self, notify: OnCommit) -> Result<()> {
        self.watch_changes()?;
        self.on_commit = Some(notify);
        Ok(())
    }

    /// Tells [`Store::on_commit`]'s callback what the write just committed changed.
    fn committed(&mut self) {
        if let Some(notify) = &self.on_commit
            && let Ok(changes) = db::take_changes(&self.conn)
            && !changes.is_empty()
        {
            notify(changes);
        }
    }

    /// The records changed by this connection's committed writes since the last call, by kind
    /// (empty unless [`Store::watch_changes`] was called).
    pub fn take_changes(&mut self) -> Result<BTreeMap<String, Vec<Uuid>>> {
        if !self.watching {
            return Ok(BTreeMap::new());
        }
        db::take_changes(&self.conn)
    }

    /// Uses another physical clock (tests and simulations).
    pub fn with_clock(mut self, clock: Arc<dyn PhysicalClock>) -> Store {
        self.clock = clock;
        self
    }

    /// This device's node id.
    pub fn node_id(&self) -> NodeId {
        self.device.node
    }

    /// The officer recorded as author of captures.
    pub fn user(&self) -> &str {
        &self.device.user
    }

    /// Sets the officer recorded as author of captures.
    pub fn set_user(&mut self, user: &str) -> Result<()> {
        self.write(|_, device, _| {
            device.user = user.to_owned();
            Ok(())
        })
    }

    fn now_ms(&self) -> u64 {
        self.device.clock.corrected(self.clock.now_ms())
    }

    /// Today's date in China, by the corrected clock.
    pub fn today(&self) -> Date {
        Date::from_unix_ms(self.now_ms() as i64, CHINA_OFFSET_MINUTES)
    }

    /// Runs `f` in one transaction with a working copy of the device row, saved with it.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Device, u64) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now_ms();
        // IMMEDIATE (db::open): the row is read under the write lock, so a write on another
        // connection (a sync beside the app's screens) cannot come between its read and this.
        let tx = self.conn.transaction()?;
        let mut device = db::load_device(&tx)?;
        let out = f(&tx, &mut device, now)?;
        db::save_device(&tx, &device)?;
        tx.commit()?;
        self.device = device;
        self.seen_version = db::data_version(&self.conn)?;
        self.committed();
        Ok(out)
    }

    /// Captures a new record of a kind from form input; returns its id. A record with the same
    /// natural key (ID number, plate, address code) is the same record: the capture updates it.
    pub fn capture(&mut self, kind: EntityKind, input: &Input) -> Result<Uuid> {
        self.capture_detailed(kind, input).map(|c| c.id)
    }

    /// Captures a record and says whether it was known already (its natural key: a person's ID
    /// number, a plate, an address), and which fields the capture changed: an officer who
    /// registers a plate that exists is told the vehicle was updated, not created.
    pub fn capture_detailed(&mut self, kind: EntityKind, input: &Input) -> Result<Captured> {
        let today = self.today();
        let villages = self.session_villages()?;
        self.write(|tx, device, now| {
            let captured = capture_record(tx, device, now, today, kind, input)?;
            if let Some(villages) = &villages {
                outside(tx, captured.id, villages)?;
            }
            Ok(captured)
        })
    }

    /// [`Store::capture_detailed`], refused with nothing saved when it would change a record
    /// registered before (its natural key known already): a slip in re-registering someone known
    /// (a name mistyped) would overwrite good values. The same values again, or a deleted record
    /// captured anew, go through; an update on purpose is [`Store::capture_detailed`].
    pub fn capture_new(&mut self, kind: EntityKind, input: &Input) -> Result<Captured> {
        let today = self.today();
        let villages = self.session_villages()?;
        self.write(|tx, device, now| {
            let captured = capture_record(tx, device, now, today, kind, input)?;
            let revived = captured.changed.iter().any(|f| f == "deleted");
            if captured.existed && !captured.changed.is_empty() && !revived {
                let labels: Vec<&str> = captured
                    .changed
                    .iter()
                    .map(|f| kind.field(f).map_or(f.as_str(), |spec| spec.zh))
                    .collect();
                return Err(Error::Invalid(baylink_domain::Error::Invalid(vec![
                    baylink_domain::FieldError {
                        field: "registered".into(),
                        code: "registered".into(),
                        message_zh: format!(
                            "已登记过（记录 {}），本次会改动：{}；要更新请有意为之（现场客户端加 --update），只改个别字段用 edit",
                            captured.id,
                            labels.join("、")
                        ),
                        message_en: format!(
                            "registered before (record {}): this would change {}; update it on purpose (the field client: --update), or edit single fields",
                            captured.id,
                            captured.changed.join(", ")
                        ),
                    },
                ])));
            }
            if let Some(villages) = &villages {
                outside(tx, captured.id, villages)?;
            }
            Ok(captured)
        })
    }

    /// What capturing this form would do, saving nothing and taking no lock: every problem the
    /// capture would refuse it for (each field's, a village not the officer's, a reference to
    /// no record here, a number another record holds), and the record it would update when
    /// its natural key (ID number, plate, address code) is known already.
    pub fn check_capture(&self, kind: EntityKind, input: &Input) -> Result<Check> {
        let mut check = Check::default();
        let fields = match validate_capture(kind, input, self.today()) {
            Ok(fields) => fields,
            Err(e) => {
                check.problems = problems_of(e.into())?;
                return Ok(check);
            }
        };
        let villages = self.session_villages()?;
        let mut outcomes = vec![refuse_dangling(&self.conn, kind, &fields)];
        if let (Some(villages), Some(village)) = (&villages, fields.get("village")) {
            outcomes.push(refuse_village(village, villages));
        }
        let id = natural_id(kind, &fields);
        if let Some(id) = id
            && let Some(held) = db::load_record(&self.conn, id)?
            && held.kind == kind.as_str()
            && baylink_domain::natural_key(kind, &values(&held.state))
                == baylink_domain::natural_key(kind, &fields)
        {
            check.existing = self.summary(id)?;
        }
        if let Some(other) = key_holder(&self.conn, kind, id.unwrap_or(Uuid::nil()), &fields)? {
            outcomes.push(Err(key_held(&self.conn, kind, other)?));
        }
        for outcome in outcomes {
            if let Err(e) = outcome {
                check.problems.extend(problems_of(e)?);
            }
        }
        Ok(check)
    }

    /// The villages of the officer who signed in here (none left, when all were taken away):
    /// a capture or edit that puts a record elsewhere is refused here, as the server would.
    /// `None` before any sign-in.
    fn session_villages(&self) -> Result<Option<Vec<String>>> {
        Ok(self
            .raw_session()?
            .filter(|s| !s.username.is_empty())
            .map(|s| s.villages))
    }

    /// Captures many records in one transaction, all or none (imports, benchmarks).
    pub fn capture_many(&mut self, kind: EntityKind, inputs: &[Input]) -> Result<Vec<Uuid>> {
        let today = self.today();
        self.write(|tx, device, now| {
            inputs
                .iter()
                .map(|input| capture_in(tx, device, now, today, kind, input))
                .collect()
        })
    }

    /// Edits fields of a record (of the record it was merged into, if a reviewer merged it);
    /// returns how many fields changed (0 writes nothing).
    pub fn edit(&mut self, id: Uuid, input: &Input) -> Result<usize> {
        let today = self.today();
        let villages = self.session_villages()?;
        self.write(|tx, device, now| {
            let id = resolve(tx, id)?;
            let old = db::load_record(tx, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
            let kind = EntityKind::parse(&old.kind)
                .ok_or_else(|| baylink_domain::Error::UnknownKind(old.kind.clone()))?;
            let current = values(&old.state);
            if current.get("deleted") == Some(&Value::Bool(true)) {
                return Err(Error::field(
                    "deleted",
                    "deleted",
                    "此记录已删除，不能修改；需要时请重新采集",
                    "this record is deleted and cannot be edited; capture it again if needed",
                ));
            }
            let mut changes = validate_edit(kind, &current, input, today)?;
            if let (Some(villages), Some(village)) = (&villages, changes.get("village")) {
                refuse_village(village, villages)?;
            }
            refuse_dangling(tx, kind, &changes)?;
            refuse_key_collision(tx, device.node, kind, id, &current, &changes)?;
            let n = changes.len();
            // A corrected record goes back to the station for review.
            let reviewed = current
                .get("review_status")
                .and_then(Value::as_str)
                .is_some_and(|s| s != "pending");
            if n > 0 && reviewed {
                changes.insert("review_status".into(), Value::String("pending".into()));
            }
            if n > 0 {
                with_refused(tx, device.node, id, &old, &mut changes)?;
            }
            write_local(tx, device, now, id, &old.kind, Some(&old), &changes)?;
            Ok(n)
        })
    }

    /// Deletes a record (a tombstone that replicates like any field), or the record it was
    /// merged into; a capture no one has seen yet is withdrawn instead.
    pub fn delete(&mut self, id: Uuid) -> Result<Deletion> {
        self.write(|tx, device, now| {
            let id = resolve(tx, id)?;
            let old = db::load_record(tx, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
            // A capture the server has not taken is withdrawn, not deleted: nothing of it
            // reaches the server (a mistyped ID number deleted and captured again leaves no
            // deleted record behind).
            if withdrawable(tx, device.node, id, &old)? {
                db::remove_record(tx, id, false)?;
                return Ok(Deletion::Withdrawn);
            }
            let changes = Fields::from([("deleted".to_owned(), Value::Bool(true))]);
            write_local(tx, device, now, id, &old.kind, Some(&old), &changes)?;
            Ok(Deletion::Deleted)
        })
    }

    /// One record with its fields and links; for a duplicate a reviewer merged, the record it
    /// was merged into (whose id the answer carries).
    pub fn get(&self, id: Uuid) -> Result<Option<Record>> {
        let id = resolve(&self.conn, id)?;
        let Some(stored) = db::load_record(&self.conn, id)? else {
            return Ok(None);
        };
        let id_text = id.hyphenated().to_string();
        let summary = self.summaries("WHERE id = ?1", params![id_text])?.pop();
        let Some(summary) = summary else {
            return Ok(None);
        };
        let fields = stored
            .state
            .iter()
            .map(|(k, v)| (k.clone(), to_text(&v.value)))
            .collect();
        let mut links = Vec::new();
        for (field, version) in &stored.state {
            let target = version.value.as_str().and_then(|s| Uuid::parse_str(s).ok());
            let is_ref = EntityKind::parse(&stored.kind)
                .and_then(|k| k.field(field))
                .is_some_and(|s| matches!(s.ty, baylink_domain::FieldType::Ref(_)));
            if let (true, Some(target)) = (is_ref, target) {
                let target_text = target.hyphenated().to_string();
                for record in self.summaries("WHERE id = ?1", params![target_text])? {
                    links.push(Link {
                        field: field.clone(),
                        incoming: false,
                        record,
                    });
                }
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.field, r.id, r.kind, r.village, r.label, r.review_status, r.deleted, r.updated_hlc
             FROM (SELECT target, source, field FROM link
                   UNION ALL SELECT target, source, field FROM link_pending) l
             JOIN record r ON r.id = l.source WHERE l.target = ?1 AND r.deleted = 0
             ORDER BY r.kind, r.updated_hlc DESC LIMIT 500",
        )?;
        let incoming = stmt.query_map([&id_text], |row| {
            let field: String = row.get(0)?;
            let record = summary_from_row_at(row, 1)?;
            Ok(Link {
                field,
                incoming: true,
                record,
            })
        })?;
        for link in incoming {
            links.push(link?);
        }
        Ok(Some(Record {
            summary,
            fields,
            links,
        }))
    }

    fn summaries(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<RecordSummary>> {
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM record {filter}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, summary_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One record's summary (its label, kind, village), if the device holds it.
    pub fn summary(&self, id: Uuid) -> Result<Option<RecordSummary>> {
        Ok(self
            .summaries("WHERE id = ?1", [id.hyphenated().to_string()])?
            .pop())
    }

    /// Records of a kind, optionally in one village, newest first; deleted ones left out.
    pub fn list(
        &self,
        kind: EntityKind,
        village: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<RecordSummary>> {
        match village {
            Some(village) => self.summaries(
                LIST_IN_VILLAGE,
                params![kind.as_str(), village, limit, offset],
            ),
            None => self.summaries(LIST_ALL, params![kind.as_str(), limit, offset]),
        }
    }

    /// Finds records by the start of an ID number, name, plate, address or phone. Each key is
    /// an indexed range scan, so a keystroke costs a few index probes, never a table scan.
    pub fn search(&self, text: &str, limit: u32) -> Result<Vec<RecordSummary>> {
        self.find(text, None, limit)
    }

    /// Candidates for a reference field: records of `kind` found as [`Store::search`] finds
    /// them, or the newest of the kind when nothing is typed yet.
    pub fn pick(&self, kind: EntityKind, text: &str, limit: u32) -> Result<Vec<RecordSummary>> {
        if text.trim().is_empty() {
            return self.list(kind, None, limit, 0);
        }
        self.find(text, Some(kind), limit)
    }

    fn find(&self, text: &str, kind: Option<EntityKind>, limit: u32) -> Result<Vec<RecordSummary>> {
        let probes = baylink_domain::search::prefixes(text);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        // Any kind when NULL, so that one statement serves both.
        let kind = kind.map(EntityKind::as_str);
        for (column, prefix) in probes {
            let upper = format!("{prefix}\u{10FFFF}");
            let args = params![prefix, upper, limit, kind];
            for summary in self.summaries(&prefix_filter(column), args)? {
                if out.len() < limit as usize && seen.insert(summary.id.clone()) {
                    out.push(summary);
                }
            }
        }
        Ok(out)
    }

    /// How many local changes wait to be pushed.
    pub fn pending_count(&self) -> Result<u64> {
        outbox::pending_count(&self.conn)
    }

    /// How many records have changes waiting to be pushed.
    pub fn pending_records(&self) -> Result<u64> {
        outbox::pending_records(&self.conn)
    }

    /// Local changes waiting to be pushed, oldest first, whole actions only: up to `limit`, or
    /// one action when it alone has more.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Change>> {
        self.outbox_after(0, limit, usize::MAX)
    }

    /// [`Store::outbox`] of the actions after change counter `after` (0: from the first; the
    /// next batch while the one up to `after` is on its way), at most about `max_bytes` of JSON
    /// (whole actions; the first one whatever its size): what one push may carry below the
    /// server's limit on a body.
    pub fn outbox_after(&self, after: u64, limit: usize, max_bytes: usize) -> Result<Vec<Change>> {
        // The waiting actions and the records they read their values from, in one snapshot:
        // the screens' connection may edit a record between two reads.
        let changes =
            self.snapshot(|conn| outbox::pending(conn, self.device.node, after, limit, max_bytes))?;
        // Handed out, they may reach someone whatever becomes of the answer: a record among
        // them is deleted from now on, not withdrawn.
        if let Some(newest) = changes.iter().map(|c| c.id.counter).max() {
            outbox::offered(&self.conn, newest)?;
        }
        Ok(changes)
    }

    /// Takes in the server's answers to a push: accepted changes leave the outbox, refused ones
    /// stay marked for the officer. Returns (accepted, refused).
    pub fn settle(&mut self, results: &[ChangeResult]) -> Result<(usize, usize)> {
        let tx = self.conn.transaction()?;
        let counts = outbox::settle(&tx, self.device.node, results)?;
        // A record the server deleted and compacted away since: nothing of it is left there to
        // change or to send back, so the phone drops it, waiting changes and all. Not one this
        // phone captured and never had taken: that stays, refused, for the officer to see.
        let gone: BTreeSet<String> = outbox::refused(&tx, self.device.node)?
            .into_iter()
            .filter(|r| r.code == baylink_sync::wire::refusal::GONE)
            .map(|r| r.entity)
            .collect();
        if !gone.is_empty() {
            let pending = db::links_pending(&tx)?;
            for entity in gone {
                let id =
                    Uuid::parse_str(&entity).map_err(|_| Error::Corrupt("record id".into()))?;
                if outbox::creation_waits(&tx, self.device.node, id)? {
                    continue;
                }
                outbox::drop_entity(&tx, id)?;
                db::delete_record(&tx, id, pending)?;
            }
        }
        tx.commit()?;
        self.committed();
        Ok(counts)
    }

    /// Changes the server refused, for the officer to correct.
    pub fn refused(&self) -> Result<Vec<RefusedChange>> {
        outbox::refused(&self.conn, self.device.node)
    }

    /// Records with changes the server refused, oldest first, each with its label and each
    /// refused field's label and reason: what the officer corrects (an edit sends the record
    /// again whole) or dismisses ([`Store::dismiss_refused`]).
    pub fn refused_records(&self) -> Result<Vec<RefusedRecord>> {
        let mut out: Vec<RefusedRecord> = Vec::new();
        for change in self.refused()? {
            let id = Uuid::parse_str(&change.entity)
                .map_err(|_| Error::Corrupt("outbox entity".into()))?;
            let at = match out.iter().position(|r| r.id == change.entity) {
                Some(at) => at,
                None => {
                    let summary = self
                        .summaries("WHERE id = ?1", params![change.entity])?
                        .pop();
                    let refused = outbox::refused_of(&self.conn, self.device.node, id)?;
                    let record = db::load_record(&self.conn, id)?;
                    out.push(RefusedRecord {
                        id: change.entity.clone(),
                        kind: change.kind.clone(),
                        // A record dropped (it left the officer's villages) keeps its
                        // refusals until they are seen, but no longer its summary.
                        label: summary.map(|s| s.label).unwrap_or_else(|| {
                            "已不在本机，只能放弃 / no longer on this phone: dismiss only"
                                .to_owned()
                        }),
                        never_taken: never_taken(&refused, record.as_ref(), self.device.node),
                        fields: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            let label = EntityKind::parse(&change.kind)
                .and_then(|k| k.field(&change.field))
                .map_or_else(|| change.field.clone(), |f| f.zh.to_owned());
            out[at].fields.push(RefusedField {
                field: change.field,
                label,
                code: change.code,
                message: change.message,
            });
        }
        Ok(out)
    }

    /// Dismisses a record's refused changes: a record the server never took leaves this phone
    /// (with anything else waiting for it); otherwise each refused field goes back to the value
    /// it replaced, as the server holds it, unless a newer value came since.
    pub fn dismiss_refused(&mut self, id: Uuid) -> Result<Dismissal> {
        self.write(|tx, device, _| {
            let refused = outbox::refused_of(tx, device.node, id)?;
            if refused.is_empty() {
                return Err(Error::NotFound(format!("{id}: no refused change")));
            }
            let old = db::load_record(tx, id)?;
            // A record dropped from this phone (it left the officer's villages) keeps its
            // refused changes only until they are seen: dismissed, they go; a change still
            // waiting to be pushed stays, for the server to answer.
            if old.is_none() {
                outbox::drop_refused(tx, device.node, id, None)?;
                return Ok(Dismissal::Removed);
            }
            if never_taken(&refused, old.as_ref(), device.node) {
                outbox::drop_entity(tx, id)?;
                db::delete_record(tx, id, db::links_pending(tx)?)?;
                return Ok(Dismissal::Removed);
            }
            let mut record = old.clone().ok_or_else(|| Error::NotFound(id.to_string()))?;
            let mut reverted = 0;
            for (stamp, entry) in refused {
                // Only a value the record still holds from the refused change goes back.
                if record.state.get(&entry.field).map(|v| v.stamp) != Some(stamp) {
                    continue;
                }
                match (entry.old_stamp.or(entry.base), entry.old) {
                    (Some(stamp), Some(value)) => {
                        record
                            .state
                            .insert(entry.field, Versioned::new(value, stamp));
                    }
                    _ => {
                        record.state.remove(&entry.field);
                    }
                }
                reverted += 1;
            }
            db::save_record(tx, id, &record, old.as_ref(), None)?;
            outbox::drop_refused(tx, device.node, id, None)?;
            db::own_values_dropped(tx)?;
            Ok(Dismissal::Reverted { fields: reverted })
        })
    }

    /// Merges changes made elsewhere, in one transaction. Every change counts once however
    /// often it arrives; the order does not matter.
    pub fn apply_remote(&mut self, changes: &[Change]) -> Result<ApplyReport> {
        self.write(|tx, device, _| {
            let mut merge = Merge::new(db::links_pending(tx)?, false);
            for change in changes {
                merge.change(tx, device, change.clone())?;
            }
            merge.finish(tx, device)
        })
    }

    /// Applies consecutive pages of a pull that started at the cursor `from`, as
    /// [`Store::apply_pulls`] does, unless the device's cursor has moved on since `from`: then the
    /// pages are a late duplicate of an answer already applied, and are dropped whole. Applied,
    /// an old page's cursor would take the device back to what it held then (a village since
    /// taken away would no longer be named, and never purged), and its purges could drop a
    /// record sent again since.
    pub fn apply_pulls_from(
        &mut self,
        pages: Vec<PullResponse>,
        from: Option<&str>,
        received_at_ms: u64,
    ) -> Result<ApplyReport> {
        let current = db::load_session(&self.conn)?.and_then(|s| s.cursor);
        if current.as_deref() != from {
            return Ok(ApplyReport::default());
        }
        self.apply_pulls(pages, received_at_ms)
    }

    /// Applies one page of a pull in one transaction: merges the values, drops the purged
    /// records, learns the clock offset and remembers where the pull ended.
    pub fn apply_pull(&mut self, page: &PullResponse, received_at_ms: u64) -> Result<ApplyReport> {
        self.apply_pulls(vec![page.clone()], received_at_ms)
    }

    /// Applies consecutive pages of a pull in order, in one transaction: a bootstrap's pages
    /// rewrite the same index pages, and each commit writes them again (fewer commits wrote less
    /// than half as much). The cursor kept is the last page's. A device that holds no record
    /// and is sent a page with more to come (a bootstrap) builds its search indexes once the
    /// pull is complete rather than record by record.
    pub fn apply_pulls(
        &mut self,
        pages: Vec<PullResponse>,
        received_at_ms: u64,
    ) -> Result<ApplyReport> {
        let report = self.write_pulls(pages, received_at_ms);
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.nudge();
        }
        report
    }

    fn write_pulls(
        &mut self,
        mut pages: Vec<PullResponse>,
        received_at_ms: u64,
    ) -> Result<ApplyReport> {
        self.write(|tx, device, _| {
            if pages.first().is_some_and(|p| p.more) && !db::holds_records(tx)? {
                db::defer_indexes(tx)?;
            }
            let mut report = ApplyReport::default();
            let last = pages
                .last()
                .map(|p| (p.next_cursor.0.clone(), p.more, p.villages.clone()));
            let hits: Vec<WatchHit> = pages
                .iter_mut()
                .flat_map(|p| std::mem::take(&mut p.watch_hits))
                .collect();
            // Read once for the batch, not once for each record.
            let bootstrap = db::links_pending(tx)?;
            // After starting over: each record kept for its waiting changes that the server
            // brings again is the officer's still.
            if db::has_unconfirmed(tx)? {
                for page in &pages {
                    let brought = page
                        .values
                        .iter()
                        .map(|v| v.entity)
                        .chain(page.records.iter().map(|r| r.entity));
                    for entity in brought {
                        db::confirm(tx, entity)?;
                    }
                }
            }
            for mut page in pages {
                device
                    .clock
                    .learn_offset(page.server_time_ms, received_at_ms);
                let purged = std::mem::take(&mut page.purged);
                // The page's values are moved into the records, not copied.
                let mut merge = Merge::new(bootstrap, bootstrap);
                for v in std::mem::take(&mut page.values) {
                    merge.change(tx, device, remote_change(v))?;
                }
                for record in page.records {
                    merge.record(tx, device, record)?;
                }
                let merged = merge.finish(tx, device)?;
                // What a pull brings is the server's state: nothing to report as concurrent.
                report.applied += merged.applied;
                report.unchanged += merged.unchanged;
                report.news.extend(merged.news);
                for id in purged {
                    db::drop_purged(tx, device.node, id, bootstrap)?;
                }
            }
            for (entity, kind, rule) in db::newly_told_hits(tx, &hits)? {
                report.news.push(News {
                    entity,
                    kind,
                    what: NewsKind::Watched(rule),
                });
            }
            if let Some((cursor, more, villages)) = last {
                let mut session = db::load_session(tx)?.unwrap_or_default();
                session.cursor = Some(cursor);
                // The officer's villages as the server holds them now, none left included (a
                // server before this answer sends none: the sign-in's stay).
                if let Some(villages) = villages {
                    session.villages = villages;
                }
                db::save_session(tx, &session)?;
                if !more {
                    db::restore_indexes(tx)?;
                    // The pull from the start is complete: a kept record it did not bring is
                    // no longer the officer's, its drop compacted away on the server.
                    for entity in db::take_unconfirmed(tx)? {
                        db::drop_purged(tx, device.node, entity, bootstrap)?;
                    }
                }
            }
            Ok(report)
        })
    }

    /// Gives changes the server refused as stamped too far ahead new stamps from the corrected
    /// clock (keeping their order and values), so they can be pushed again. Returns how many.
    pub fn restamp(&mut self, counters: &[u64], server_time_ms: u64) -> Result<usize> {
        self.write(|tx, device, now| {
            device.clock.learn_offset(server_time_ms, now);
            device.clock.rebase(device.max_remote);
            let taken = outbox::take(tx, device.node, counters)?;
            let n = taken.len();
            // Stamps of this device's changes the server has not accepted: those being restamped
            // and those still waiting. Any other value a change replaced was accepted, so the
            // new stamp must come after it, or the restamped edit would lose to what it edited.
            let mut unaccepted: std::collections::HashSet<u64> = outbox::pending_stamps(tx)?;
            unaccepted.extend(taken.iter().map(|t| t.stamp.hlc.as_u64()));
            for base in taken.iter().filter_map(|t| t.base) {
                if base.node != device.node || !unaccepted.contains(&base.hlc.as_u64()) {
                    device.clock.observe(base.hlc);
                }
            }
            let mut actions: Vec<Vec<outbox::Taken>> = Vec::new();
            for t in taken {
                match actions.last_mut() {
                    Some(last) if last[0].stamp == t.stamp && last[0].entity == t.entity => {
                        last.push(t)
                    }
                    _ => actions.push(vec![t]),
                }
            }
            // Restamped actions' old stamps and their new ones: a change whose base (or whose
            // kept old value's stamp) names a restamped action names its new stamp instead.
            let mut renamed: HashMap<Stamp, Stamp> = HashMap::new();
            let mut entities = std::collections::BTreeSet::new();
            for action in actions {
                let entity = action[0].entity;
                entities.insert(entity);
                let kind = action[0].kind.clone();
                let old = db::load_record(tx, entity)?;
                let mut record = old.clone().unwrap_or_else(|| StoredRecord {
                    kind: kind.clone(),
                    state: EntityState::new(),
                });
                // The clock went back (to what the server said): not a reading it gave an
                // action restamped here either (bases are renamed from those).
                let hlc = fresh_reading(tx, device, now, Some(&record), &unaccepted)?;
                unaccepted.insert(hlc.as_u64());
                let stamp = Stamp::new(hlc, device.node);
                renamed.insert(action[0].stamp, stamp);
                let mut entries = Vec::with_capacity(action.len());
                for t in action {
                    let counter = device.next_counter;
                    device.next_counter += 1;
                    let still_held = record.state.get(&t.field).map(|v| v.stamp) == Some(t.stamp);
                    let moved = |s: Option<Stamp>| s.map(|s| renamed.get(&s).copied().unwrap_or(s));
                    let lazy = Entry {
                        old: t.old,
                        old_stamp: moved(t.old_stamp),
                        ..Entry::lazy(counter, t.field.clone(), moved(t.base))
                    };
                    if still_held {
                        record.state.insert(t.field, Versioned::new(t.value, stamp));
                        entries.push(lazy);
                    } else {
                        entries.push(Entry {
                            value: Some(t.value),
                            ..lazy
                        });
                    }
                }
                if old.is_some() {
                    db::save_record(tx, entity, &record, old.as_ref(), None)?;
                } else {
                    // Its record left this phone (a purge): the server may take the new
                    // stamp, and this phone holds nothing of it to count as its own.
                    db::own_values_dropped_upto(tx, device.next_counter - 1)?;
                }
                outbox::append(tx, entity, &kind, stamp.hlc, &entries)?;
            }
            for entity in entities {
                outbox::rename_stamps(tx, device.node, entity, &renamed)?;
            }
            Ok(n)
        })
    }

    /// The signed-in session, if any.
    pub fn session(&self) -> Result<Option<SessionInfo>> {
        Ok(db::load_session(&self.conn)?.map(|s| SessionInfo {
            named_villages: s
                .villages
                .iter()
                .map(|code| NamedVillage {
                    code: code.clone(),
                    name: s.village_names.get(code).cloned(),
                })
                .collect(),
            server: s.server,
            username: s.username,
            display_name: s.display_name,
            villages: s.villages,
            signed_in: s.refresh_token.is_some(),
            last_sync_ms: s.last_sync_ms,
        }))
    }

    /// The change counter above which this device holds every value it wrote: what a pull
    /// need not send back ([`baylink_sync::wire::PullRequest::own_held_after`]).
    pub fn own_held_after(&self) -> Result<u64> {
        let floor: i64 =
            self.conn
                .query_row("SELECT own_floor FROM device WHERE id = 1", [], |r| {
                    r.get(0)
                })?;
        Ok(floor as u64)
    }

    pub(crate) fn raw_session(&self) -> Result<Option<db::Session>> {
        db::load_session(&self.conn)
    }

    pub(crate) fn save_raw_session(&mut self, session: &db::Session) -> Result<()> {
        db::save_session(&self.conn, session)
    }

    /// Forgets where the pull stands, which the server took for none of its own: the next pull
    /// starts from the beginning, and once one is complete this device's own values go again
    /// ([`Store::resend_own_if_due`]).
    pub(crate) fn forget_cursor(&mut self) -> Result<()> {
        self.write(|tx, _, _| {
            if let Some(mut session) = db::load_session(tx)? {
                session.cursor = None;
                db::save_session(tx, &session)?;
            }
            db::set_resend_due(tx, true)
        })
    }

    /// Starts over as a new device would, the server having compacted away what this one
    /// missed while unseen (deletions, drops): forgets the cursor and drops every record with
    /// nothing waiting in the outbox (what waits stays, to be pushed); the next pull brings
    /// back what the server holds. Returns how many records were dropped.
    pub(crate) fn start_over(&mut self) -> Result<u64> {
        self.write(|tx, device, _| {
            if let Some(mut session) = db::load_session(tx)? {
                session.cursor = None;
                db::save_session(tx, &session)?;
            }
            let pending = db::links_pending(tx)?;
            let ids: Vec<(String, bool)> = tx
                .prepare(
                    "SELECT id, EXISTS (SELECT 1 FROM outbox o WHERE o.entity = r.id) FROM record r",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut dropped = 0;
            for (text, waits) in &ids {
                let id = Uuid::parse_str(text).map_err(|_| Error::Corrupt("record id".into()))?;
                if !waits {
                    db::delete_record(tx, id, pending)?;
                    dropped += 1;
                } else if !outbox::creation_waits(tx, device.node, id)? {
                    // The server had it: the pull from the start says whether it still is
                    // the officer's (it brings it) or went (it does not, and nothing says so).
                    db::mark_unconfirmed(tx, text)?;
                }
            }
            // Every value goes again, this phone's own too: none is held as far as the server
            // may know.
            db::own_values_dropped(tx)?;
            Ok(dropped)
        })
    }

    /// After a complete pull from the start that the server asked for (it took the cursor for
    /// none of its own): queues every value of this device's own that stands in its records and
    /// waits in no outbox row to be pushed again, each action with its own stamp and new change
    /// counters; returns how many values. A server put back from a backup has lost what it
    /// accepted after the backup, and the phone counted those as sent: this sends them again.
    /// What the server holds already it keeps, unchanged. Nothing when no such pull was asked.
    pub(crate) fn resend_own_if_due(&mut self) -> Result<u64> {
        self.write(|tx, device, _| {
            if !db::resend_due(tx)? {
                return Ok(0);
            }
            let mut resent = 0;
            for (entity, kind, hlc, fields) in db::own_standing_actions(tx, device.node)? {
                // The record holds each value under the action's stamp: lazy entries with
                // consecutive counters, and the row lists none (its changes are the record's
                // fields with that stamp).
                let entries: Vec<Entry> = fields
                    .into_iter()
                    .map(|field| {
                        device.next_counter += 1;
                        Entry::lazy(device.next_counter - 1, field, None)
                    })
                    .collect();
                outbox::append(tx, entity, &kind, hlc, &entries)?;
                resent += entries.len() as u64;
            }
            db::set_resend_due(tx, false)?;
            Ok(resent)
        })
    }

    /// Records the start of a session after a login: tokens, villages, and the officer as the
    /// author of captures.
    pub(crate) fn begin_session(
        &mut self,
        session: &db::Session,
        server_time_ms: u64,
        received_at_ms: u64,
    ) -> Result<()> {
        let user = session.username.clone();
        self.write(|tx, device, _| {
            device.clock.learn_offset(server_time_ms, received_at_ms);
            device.user = user;
            let cursor = db::load_session(tx)?
                .filter(|old| old.server == session.server)
                .and_then(|old| old.cursor);
            db::save_session(
                tx,
                &db::Session {
                    cursor,
                    ..session.clone()
                },
            )
        })
    }

    /// The outbox rows of a record as stored (simulation traces).
    #[doc(hidden)]
    pub fn outbox_rows_for_tests(&self, entity: Uuid) -> Vec<(i64, i64, Option<String>)> {
        let Ok(mut stmt) = self
            .conn
            .prepare("SELECT first_counter, hlc, changes FROM outbox WHERE entity = ?1")
        else {
            return Vec::new();
        };
        stmt.query_map([entity.hyphenated().to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map(|rows| rows.filter_map(std::result::Result::ok).collect())
        .unwrap_or_default()
    }

    /// The access token (tests that speak to the server directly).
    #[doc(hidden)]
    pub fn access_token_for_tests(&self) -> Option<String> {
        db::load_session(&self.conn)
            .ok()
            .flatten()
            .and_then(|s| s.access_token)
    }

    /// The refresh token (tests of token theft).
    #[doc(hidden)]
    pub fn refresh_token_for_tests(&self) -> Option<String> {
        db::load_session(&self.conn)
            .ok()
            .flatten()
            .and_then(|s| s.refresh_token)
    }

    /// Forgets the learned clock offset (tests of a phone whose clock goes wrong after a sync).
    #[doc(hidden)]
    pub fn reset_clock_offset_for_tests(&mut self) {
        let _ = self.write(|_, device, _| {
            device.clock = baylink_sync::Clock::new(device.clock.last(), 0);
            Ok(())
        });
    }

    /// Trusts `pem`, a CA certificate, for the server instead of the bundled roots (a server on
    /// the police intranet, signed by its own CA); `None` goes back to the bundled roots. Kept
    /// in the store, so every sync and sign-in uses it. A text holding no certificate is
    /// refused, naming the field `server_ca`.
    pub fn set_server_ca(&mut self, pem: Option<&str>) -> Result<()> {
        if let Some(pem) = pem {
            crate::sync::client::parse_ca(pem)?;
        }
        self.conn
            .execute("UPDATE device SET server_ca = ?1 WHERE id = 1", [pem])?;
        Ok(())
    }

    /// The CA trusted for the server, if one was set ([`Store::set_server_ca`]).
    pub fn server_ca(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT server_ca FROM device WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Points the session at another address of its server (moved, or restarted elsewhere).
    pub fn set_server_url(&mut self, url: &str) -> Result<()> {
        let mut session = db::load_session(&self.conn)?.ok_or(Error::NotSignedIn)?;
        session.server = url.to_owned();
        db::save_session(&self.conn, &session)
    }

    /// Erases everything on the device (a revoked, lost phone) and takes a new identity.
    pub fn wipe(&mut self) -> Result<()> {
        self.wipe_as(NodeId::random())
    }

    /// Wipes the store, as [`Store::wipe`], and takes `node` as the new device identity (one a
    /// new officer has just signed in with).
    pub(crate) fn wipe_as(&mut self, node: NodeId) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM record; DELETE FROM link; DELETE FROM link_pending; DELETE FROM outbox;
             DELETE FROM session;",
        )?;
        tx.execute(
            "UPDATE device SET node = ?1, clock_last = 0, clock_offset_ms = 0, next_counter = 1, own_floor = 0,
                 user_name = 'local', max_remote_hlc = 0 WHERE id = 1",
            [node.to_string()],
        )?;
        tx.commit()?;
        self.device = db::load_device(&self.conn)?;
        self.committed();
        Ok(())
    }

    /// Records the station returned to the officer, with the reviewer's comment.
    pub fn returned(&self) -> Result<Vec<Feedback>> {
        let mut out = Vec::new();
        for record in self.summaries("WHERE review_status = 'returned' AND deleted = 0", [])? {
            let id = Uuid::parse_str(&record.id).map_err(|_| Error::Corrupt("record id".into()))?;
            let comment = db::load_record(&self.conn, id)?
                .and_then(|r| {
                    r.state
                        .get("review_comment")
                        .and_then(|v| v.value.as_str().map(str::to_owned))
                })
                .unwrap_or_default();
            out.push(Feedback { record, comment });
        }
        Ok(out)
    }

    /// Builds the search indexes a bootstrap left to build (a pull that stopped part way).
    pub(crate) fn restore_indexes(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        db::restore_indexes(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Notes the end of a successful sync.
    pub(crate) fn finish_sync(&mut self, at_ms: u64) -> Result<()> {
        let mut session = db::load_session(&self.conn)?.unwrap_or_default();
        session.last_sync_ms = Some(at_ms);
        db::save_session(&self.conn, &session)
    }

    /// Every record's kind and merged state with stamps (for comparing replicas field by field).
    pub fn states(&self) -> Result<BTreeMap<Uuid, (String, EntityState)>> {
        Ok(db::load_all(&self.conn)?
            .into_iter()
            .map(|(id, r)| (id, (r.kind, r.state)))
            .collect())
    }
}

/// A kind's records in one village, newest first: an index range, already in order.
const LIST_IN_VILLAGE: &str =
    "WHERE kind = ?1 AND village = ?2 AND deleted = 0 ORDER BY updated_hlc DESC LIMIT ?3 OFFSET ?4";
/// A kind's records in every village, newest first.
const LIST_ALL: &str =
    "WHERE kind = ?1 AND deleted = 0 ORDER BY updated_hlc DESC LIMIT ?2 OFFSET ?3";

/// Records whose `column` starts with ?1 (?2 is ?1 followed by the highest code point).
fn prefix_filter(column: &str) -> String {
    format!(
        "WHERE {column} >= ?1 AND {column} < ?2 AND deleted = 0 AND (?4 IS NULL OR kind = ?4)
         ORDER BY {column} LIMIT ?3"
    )
}

/// A value of a pull as a change made elsewhere.
fn remote_change(v: FieldValue) -> Change {
    Change {
        id: ChangeId {
            device: v.stamp.node,
            counter: 0,
        },
        kind: v.kind,
        entity: v.entity,
        field: v.field,
        value: v.value,
        stamp: v.stamp,
        base: None,
    }
}

/// Changes made elsewhere merged into the records they touch, each record read once and written
/// once ([`Merge::finish`]).
struct Merge {
    report: ApplyReport,
    /// Each touched record as stored (`None`: not stored, or not looked up) and as merged so far.
    touched: BTreeMap<Uuid, (Option<StoredRecord>, StoredRecord)>,
    /// Links wait in `link_pending`: a bootstrap is under way ([`db::links_pending`]).
    pending: bool,
    /// Records are taken for new without looking them up (a bootstrap's nearly all are, and a
    /// lookup per record, in the order the server sends them, cost a tenth of a bootstrap's
    /// apply); one held after all is merged when its insert finds it ([`Merge::finish`]).
    take_new: bool,
    /// Whether any change waits refused, once looked up: after starting over a pull brings
    /// back every value of this device's own, and each need not look.
    refused: Option<bool>,
}

impl Merge {
    /// A merge; `pending`: whether links wait ([`db::links_pending`]).
    fn new(pending: bool, take_new: bool) -> Merge {
        Merge {
            report: ApplyReport::default(),
            touched: BTreeMap::new(),
            pending,
            take_new,
            refused: None,
        }
    }

    /// A pulled value: one of this device's own clears a refusal of the change that wrote it
    /// ([`outbox::accepted_after_all`]).
    fn pulled(
        &mut self,
        tx: &Transaction<'_>,
        device: &Device,
        entity: Uuid,
        field: &str,
        stamp: Stamp,
    ) -> Result<()> {
        if stamp.node != device.node {
            return Ok(());
        }
        let refused = match self.refused {
            Some(refused) => refused,
            None => *self.refused.insert(outbox::any_refused(tx)?),
        };
        if refused {
            outbox::accepted_after_all(tx, device.node, entity, stamp.hlc, field)?;
        }
        Ok(())
    }

    /// Takes in the stamp of a value from another replica.
    fn observe(device: &mut Device, stamp: Stamp) {
        device.clock.observe(stamp.hlc);
        if stamp.node != device.node {
            device.max_remote = device.max_remote.max(stamp.hlc);
        }
    }

    /// A record as stored; `None` without a lookup when records are taken for new.
    fn stored(tx: &Transaction<'_>, take_new: bool, entity: Uuid) -> Result<Option<StoredRecord>> {
        if take_new {
            return Ok(None);
        }
        db::load_record(tx, entity)
    }

    /// Merges one change.
    fn change(&mut self, tx: &Transaction<'_>, device: &mut Device, change: Change) -> Result<()> {
        Merge::observe(device, change.stamp);
        self.pulled(tx, device, change.entity, &change.field, change.stamp)?;
        let (_, record) = match self.touched.entry(change.entity) {
            btree_map::Entry::Occupied(e) => e.into_mut(),
            btree_map::Entry::Vacant(e) => {
                let old = Merge::stored(tx, self.take_new, change.entity)?;
                let new = old.clone().unwrap_or_else(|| StoredRecord {
                    kind: change.kind.clone(),
                    state: EntityState::new(),
                });
                e.insert((old, new))
            }
        };
        let incoming = Versioned::new(change.value, change.stamp);
        let held = record.state.get(&change.field);
        let plan = plan_field(held, &incoming, change.base);
        if let (true, Some(held)) = (plan.concurrent, held) {
            let (kept, lost) = if plan.apply {
                (incoming.clone(), held.clone())
            } else {
                (held.clone(), incoming.clone())
            };
            self.report.concurrent.push(ConcurrentEdit {
                entity: change.entity,
                field: change.field.clone(),
                kept,
                lost,
            });
        }
        if plan.apply {
            if let Some(held) = held.filter(|h| h.stamp.node == device.node) {
                outbox::materialize(
                    tx,
                    device.node,
                    change.entity,
                    held.stamp.hlc,
                    &change.field,
                    &held.value,
                )?;
                if incoming.stamp.node != device.node
                    && held.value != incoming.value
                    && !NOT_REPLACED_NEWS.contains(&change.field.as_str())
                {
                    self.report.news.push(News {
                        entity: change.entity,
                        kind: record.kind.clone(),
                        what: NewsKind::Replaced {
                            field: change.field.clone(),
                            mine: held.value.clone(),
                            theirs: incoming.value.clone(),
                        },
                    });
                }
            }
            record.state.insert(change.field, incoming);
            self.report.applied += 1;
        } else {
            if let Some(held) = held.filter(|h| h.stamp.node == device.node) {
                outbox::note_lost(
                    tx,
                    device.node,
                    change.entity,
                    held.stamp.hlc,
                    &change.field,
                    &incoming,
                )?;
            }
            self.report.unchanged += 1;
        }
        Ok(())
    }

    /// Merges a record's values from a pull page. A record the device neither holds nor has
    /// merged yet takes them whole, as merging them one by one would: each applies (nothing is
    /// held), none is concurrent, and no local value is overwritten; a bootstrap's records all
    /// come so. Any other record takes them one by one.
    fn record(
        &mut self,
        tx: &Transaction<'_>,
        device: &mut Device,
        mut record: RecordValues,
    ) -> Result<()> {
        let entity = record.entity;
        if !self.touched.contains_key(&entity) {
            let Some(old) = Merge::stored(tx, self.take_new, entity)? else {
                let fields = std::mem::take(&mut record.fields);
                let state: EntityState = fields
                    .into_iter()
                    .map(|(field, value)| {
                        let stamp = record.stamp_of(&field);
                        Merge::observe(device, stamp);
                        (field, Versioned::new(value, stamp))
                    })
                    .collect();
                for (field, v) in &state {
                    self.pulled(tx, device, entity, field, v.stamp)?;
                }
                self.report.applied += state.len();
                let kind = record.kind;
                self.touched
                    .insert(entity, (None, StoredRecord { kind, state }));
                return Ok(());
            };
            self.touched.insert(entity, (Some(old.clone()), old));
        }
        for v in record.into_values() {
            self.change(tx, device, remote_change(v))?;
        }
        Ok(())
    }

    /// Writes every record that changed; returns what was merged. A record taken for new that
    /// the device held after all (a bootstrap looks nothing up) is merged again, looked up this
    /// time ([`Merge::change`]).
    fn finish(mut self, tx: &Transaction<'_>, device: &mut Device) -> Result<ApplyReport> {
        let pending = Some(self.pending);
        for (id, (old, new)) in std::mem::take(&mut self.touched) {
            if let Some(old) = &old {
                self.report.news.extend(reviewed(id, old, &new));
            }
            if old.as_ref() == Some(&new)
                || db::save_record(tx, id, &new, old.as_ref(), pending)?
                || old.is_some()
            {
                continue;
            }
            // Its values were counted as applied when it was taken: counted again as merged.
            self.report.applied -= new.state.len();
            let mut again = Merge::new(self.pending, false);
            for (field, v) in new.state {
                again.change(
                    tx,
                    device,
                    remote_change(FieldValue {
                        kind: new.kind.clone(),
                        entity: id,
                        field,
                        value: v.value,
                        stamp: v.stamp,
                        extra: BTreeMap::new(),
                    }),
                )?;
            }
            let merged = again.finish(tx, device)?;
            self.report.applied += merged.applied;
            self.report.unchanged += merged.unchanged;
            self.report.news.extend(merged.news);
        }
        Ok(self.report)
    }
}

/// What a record's review and merge fields say happened to it between `old` and `new`.
fn reviewed(id: Uuid, old: &StoredRecord, new: &StoredRecord) -> Option<News> {
    let text = |r: &StoredRecord, field: &str| {
        r.state
            .get(field)
            .and_then(|v| v.value.as_str().map(str::to_owned))
    };
    let what = if text(new, "merged_into") != text(old, "merged_into") {
        let into = text(new, "merged_into").and_then(|t| Uuid::parse_str(&t).ok())?;
        NewsKind::MergedAway(into)
    } else if text(new, "review_status") != text(old, "review_status") {
        match text(new, "review_status").as_deref() {
            Some("approved") => NewsKind::Approved,
            Some("returned") => NewsKind::Returned(text(new, "review_comment")),
            _ => return None,
        }
    } else {
        return None;
    };
    Some(News {
        entity: id,
        kind: new.kind.clone(),
        what,
    })
}

/// Where a record now lives: itself, or the record a reviewer merged it into when this device
/// holds that one (followed through merges of merges, a few hops at most).
fn resolve(conn: &Connection, id: Uuid) -> Result<Uuid> {
    let mut at = id;
    for _ in 0..8 {
        let next = db::load_record(conn, at)?
            .and_then(|r| r.state.get("merged_into").cloned())
            .and_then(|v| v.value.as_str().and_then(|s| Uuid::parse_str(s).ok()));
        match next {
            // A target this device does not hold (yet) leaves the record where it is.
            Some(next) if next != at && db::load_record(conn, next)?.is_some() => at = next,
            _ => break,
        }
    }
    Ok(at)
}

/// Refuses a captured record whose village is not one of the officer's (the transaction, and
/// the capture with it, is rolled back).
fn outside(tx: &Transaction<'_>, id: Uuid, villages: &[String]) -> Result<()> {
    let record = db::load_record(tx, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
    match record.state.get("village") {
        Some(v) => refuse_village(&v.value, villages),
        None => Ok(()),
    }
}

/// An error naming the village field when `village` is not one of `villages`.
/// A reference (a residence's person and house, a vehicle's owner, …) must name a record this
/// phone holds, of the field's kind and not deleted, as the server checks too: a residence of
/// nobody, or of a house, would reach the server only to be refused.
fn refuse_dangling(tx: &Connection, kind: EntityKind, fields: &Fields) -> Result<()> {
    let mut errors = Vec::new();
    for (name, value) in fields {
        let Some(spec) = kind.field(name) else {
            continue;
        };
        let baylink_domain::FieldType::Ref(target) = spec.ty else {
            continue;
        };
        let Some(named) = value.as_str().and_then(|v| Uuid::parse_str(v).ok()) else {
            continue;
        };
        let held = db::load_record(tx, named)?;
        let problem = match &held {
            None => Some((
                "no_such_record",
                "本机没有此记录",
                "names no record on this device",
            )),
            Some(r) if r.kind != target.as_str() => Some((
                "wrong_kind",
                "所指记录类型不对",
                "names a record of another kind",
            )),
            Some(r)
                if r.state
                    .get("deleted")
                    .is_some_and(|v| v.value == Value::Bool(true)) =>
            {
                Some(("deleted", "所指记录已删除", "names a deleted record"))
            }
            _ => None,
        };
        if let Some((code, zh, en)) = problem {
            errors.push(baylink_domain::FieldError {
                field: spec.name.into(),
                code: code.into(),
                message_zh: format!("{}：{zh}（应为{}）", spec.zh, target.label_zh()),
                message_en: format!("{}: {en} (a {} is expected)", spec.en, target.as_str()),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(baylink_domain::Error::Invalid(errors).into())
    }
}

/// An edit that would give a record another record's natural key (a person's ID number, a
/// plate, an address code) is refused, naming the other record, as the server would refuse it:
/// two records would be one person, vehicle or house (a reviewer merges true duplicates).
fn refuse_key_collision(
    tx: &Transaction<'_>,
    node: NodeId,
    kind: EntityKind,
    id: Uuid,
    current: &Fields,
    changes: &Fields,
) -> Result<()> {
    let mut after = current.clone();
    after.extend(changes.clone());
    let Some(natural) = natural_id(kind, &after).filter(|n| *n != id) else {
        return Ok(());
    };
    if natural_id(kind, current) == Some(natural) {
        return Ok(());
    }
    // The key field the edit changes, to name in the message.
    let spec = changes
        .keys()
        .filter_map(|f| kind.field(f))
        .find(|f| after.get(f.name) != current.get(f.name) && KEY_FIELDS.contains(&f.name))
        .or_else(|| kind.field("id_number"));
    let (field, zh, en) = spec.map_or(("id_number", "证件号码", "ID number"), |f| {
        (f.name, f.zh, f.en)
    });
    // A record's id is the one its key gave at capture: the server takes a new record only
    // with it, so a record not taken yet keeps its key (captured again, it gets the new one).
    if natural_id(kind, current) == Some(id) && outbox::creation_waits(tx, node, id)? {
        return Err(Error::field(
            field,
            "not_synced",
            format!("{zh}：此记录尚未同步，不能改{zh}；请删除此记录，按正确的{zh}重新采集"),
            format!(
                "{en}: this record has not synced yet, so its {en} cannot change: delete it and capture it again with the right one"
            ),
        ));
    }
    let Some(other) = key_holder(tx, kind, id, &after)? else {
        return Ok(());
    };
    Err(duplicate(tx, kind, field, zh, en, other)?)
}

/// The error naming the other record that holds a key, by its label and id.
/// A capture refused because `other` holds its natural key (ID number, plate, address code),
/// named on the key's field.
fn key_held(conn: &Connection, kind: EntityKind, other: Uuid) -> Result<Error> {
    let name = match kind {
        EntityKind::Vehicle => "plate",
        EntityKind::House => "address_code",
        _ => "id_number",
    };
    let (zh, en) = kind
        .field(name)
        .map_or(("证件号码", "ID number"), |f| (f.zh, f.en));
    duplicate(conn, kind, name, zh, en, other)
}

fn duplicate(
    tx: &Connection,
    kind: EntityKind,
    field: &str,
    zh: &str,
    en: &str,
    other: Uuid,
) -> Result<Error> {
    let label: Option<String> = tx
        .prepare_cached("SELECT label FROM record WHERE id = ?1")?
        .query_row([other.hyphenated().to_string()], |r| r.get(0))
        .optional()?;
    let named = match label.filter(|l| !l.is_empty()) {
        Some(label) => format!("{label}，{other}"),
        None => other.to_string(),
    };
    Ok(Error::field(
        field,
        "duplicate",
        format!(
            "{zh}：与另一条记录（{named}）相同。请核对；若是同一{}，请审核人员合并两条记录",
            kind.label_zh()
        ),
        format!(
            "{en}: another record ({named}) has it. Check it; if both are the same, a reviewer merges them"
        ),
    ))
}

/// Another live record (not deleted, not merged away) than `id` with the natural key `after`
/// gives: the one the key's id names, or one edited onto that key since its capture.
fn key_holder(tx: &Connection, kind: EntityKind, id: Uuid, after: &Fields) -> Result<Option<Uuid>> {
    let Some(key) = baylink_domain::natural_key(kind, after) else {
        return Ok(None);
    };
    let live = |record: &StoredRecord| {
        if record.kind != kind.as_str() {
            return false;
        }
        let state = values(&record.state);
        let gone = |field: &str| {
            state
                .get(field)
                .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        };
        !gone("deleted")
            && !gone("merged_into")
            && baylink_domain::natural_key(kind, &state).as_ref() == Some(&key)
    };
    let mut candidates: Vec<Uuid> = natural_id(kind, after).into_iter().collect();
    let column = match kind {
        EntityKind::Person => Some(("id_number", after.get("id_number"))),
        EntityKind::Vehicle => Some(("plate", after.get("plate"))),
        _ => None,
    };
    if let Some((column, Some(Value::String(text)))) = column {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT id FROM record WHERE {column} = ?1 AND kind = ?2 AND deleted = 0 LIMIT 8"
        ))?;
        let ids = stmt.query_map(params![text, kind.as_str()], |r| r.get::<_, String>(0))?;
        for other in ids {
            if let Ok(other) = Uuid::parse_str(&other?) {
                candidates.push(other);
            }
        }
    }
    for other in candidates.into_iter().filter(|o| *o != id) {
        if db::load_record(tx, other)?.is_some_and(|r| live(&r)) {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

fn refuse_village(village: &Value, villages: &[String]) -> Result<()> {
    let Some(code) = village.as_str() else {
        return Ok(());
    };
    if villages.iter().any(|v| v == code) {
        return Ok(());
    }
    if villages.is_empty() {
        return Err(Error::field(
            "village",
            "not_yours",
            format!("所属村（社区）：{code} 不是您的辖区（您目前没有辖区）"),
            format!("village: {code} is not yours (you hold no village now)"),
        ));
    }
    Err(Error::field(
        "village",
        "not_yours",
        format!(
            "所属村（社区）：{code} 不是您的辖区（您的辖区：{}）",
            villages.join("、")
        ),
        format!(
            "village: {code} is not one of your villages ({})",
            villages.join(", ")
        ),
    ))
}

fn capture_in(
    tx: &Transaction<'_>,
    device: &mut Device,
    now: u64,
    today: Date,
    kind: EntityKind,
    input: &Input,
) -> Result<Uuid> {
    capture_record(tx, device, now, today, kind, input).map(|c| c.id)
}

/// What a capture would do ([`Store::check_capture`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Every problem it would be refused for; none when it would be saved.
    pub problems: Vec<baylink_domain::FieldError>,
    /// The record it would update (its ID number, plate or address code is known already).
    pub existing: Option<RecordSummary>,
}

/// The field problems an error stands for; any other error is passed on.
fn problems_of(error: Error) -> Result<Vec<baylink_domain::FieldError>> {
    match error {
        Error::Invalid(baylink_domain::Error::Invalid(errors)) => Ok(errors),
        other => Err(other),
    }
}

/// What a deletion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Marked deleted: the deletion syncs like any change.
    Deleted,
    /// A capture no one had seen: gone from this phone, nothing of it reaches the server.
    Withdrawn,
}

/// What a capture did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The record's id.
    pub id: Uuid,
    /// The record was known already (its natural key: a person's ID number, a plate, an
    /// address): the capture updated it.
    pub existed: bool,
    /// The fields it changed (of a record known already: those that differed).
    pub changed: Vec<String>,
}

fn capture_record(
    tx: &Transaction<'_>,
    device: &mut Device,
    now: u64,
    today: Date,
    kind: EntityKind,
    input: &Input,
) -> Result<Captured> {
    let mut fields = validate_capture(kind, input, today)?;
    refuse_dangling(tx, kind, &fields)?;
    let mut id = natural_id(kind, &fields).unwrap_or_else(Uuid::now_v7);
    // The key's id held by a record with another key (edited off it since its capture, or a
    // motorcycle captured before plate kinds counted) is not this record: it takes a fresh id,
    // as the server allows then, rather than overwrite that one. Not when the other key is this
    // phone's own edit still waiting (or refused): the server holds this key there yet.
    if let Some(holder) = db::load_record(tx, id)? {
        let key = baylink_domain::natural_key(kind, &values(&holder.state));
        if (holder.kind != kind.as_str() || key != baylink_domain::natural_key(kind, &fields))
            && !outbox::changes_any(tx, device.node, id, &KEY_FIELDS)?
        {
            id = Uuid::now_v7();
        }
    }
    // A key another record was edited onto since its capture: captured again, it would be a
    // second record of the same person, vehicle or house, which the server refuses.
    if let Some(other) = key_holder(tx, kind, id, &fields)? {
        return Err(key_held(tx, kind, other)?);
    }
    // Most captures are of new records: try that first, which spares a lookup.
    let at = datetime_from_unix_ms(device.clock.corrected(now) as i64, CHINA_OFFSET_MINUTES);
    let system = [
        ("created_by", Value::String(device.user.clone())),
        ("created_at", Value::String(at)),
        ("review_status", Value::String("pending".into())),
    ];
    for (name, value) in system {
        fields.insert(name.to_owned(), value);
    }
    if write_local(tx, device, now, id, kind.as_str(), None, &fields)? {
        let changed = fields.keys().cloned().collect();
        return Ok(Captured {
            id,
            existed: false,
            changed,
        });
    }
    // Known already (captured by another officer, or earlier): only what differs is written,
    // and the record keeps its creation and review fields.
    let old = db::load_record(tx, id)?.ok_or_else(|| Error::Corrupt("record vanished".into()))?;
    let current = values(&old.state);
    fields.retain(|name, value| {
        !matches!(name.as_str(), "created_by" | "created_at" | "review_status")
            && current.get(name) != Some(value)
    });
    if current.get("deleted") == Some(&Value::Bool(true)) {
        fields.insert("deleted".into(), Value::Bool(false));
    }
    let changed: Vec<String> = fields.keys().cloned().collect();
    if !fields.is_empty() {
        with_refused(tx, device.node, id, &old, &mut fields)?;
    }
    write_local(tx, device, now, id, kind.as_str(), Some(&old), &fields)?;
    Ok(Captured {
        id,
        existed: true,
        changed,
    })
}

/// Whether the server refused a record's creation (a capture writes `created_by` with no base,
/// and a new record is taken or refused whole) and nothing of it came from elsewhere since (a
/// pull bringing the same person, captured by another officer): the server never took it.
fn never_taken(refused: &[(Stamp, Entry)], record: Option<&StoredRecord>, node: NodeId) -> bool {
    // A pulled `created_by` that lost to ours still says the server holds the record.
    refused
        .iter()
        .any(|(_, e)| e.field == "created_by" && e.base.is_none() && e.old_stamp.is_none())
        && record.is_none_or(|r| r.state.values().all(|v| v.stamp.node == node))
}

/// Whether a record is this phone's capture that no one else has seen: every value its own,
/// its creation still waiting in the outbox and never handed out to be sent, and no other
/// record naming it (a bootstrap under way may not have listed those yet).
fn withdrawable(
    tx: &Transaction<'_>,
    node: NodeId,
    id: Uuid,
    record: &StoredRecord,
) -> Result<bool> {
    if db::links_pending(tx)? || record.state.values().any(|v| v.stamp.node != node) {
        return Ok(false);
    }
    let named: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM link WHERE target = ?1)")?
        .query_row([id.hyphenated().to_string()], |r| r.get(0))?;
    Ok(!named && outbox::creation_unseen(tx, node, id)?)
}

/// Adds to a correction every field of the record the server refused, as the record holds it
/// now: corrected, the record goes again whole (a new record is taken only whole, and a
/// refusal of one field often follows from another's, as a village not the officer's).
fn with_refused(
    tx: &Transaction<'_>,
    node: NodeId,
    id: Uuid,
    old: &StoredRecord,
    changes: &mut Fields,
) -> Result<()> {
    for (stamp, entry) in outbox::refused_of(tx, node, id)? {
        // Only a value the refused change wrote: one pulled since is another's, not to be
        // written again over what the server may hold newer.
        if let Some(held) = old.state.get(&entry.field).filter(|h| h.stamp == stamp) {
            changes
                .entry(entry.field)
                .or_insert_with(|| held.value.clone());
        }
    }
    Ok(())
}

/// The clock's next reading for a new action of this device. After a restamp set the clock
/// back it climbs again through readings it gave actions still waiting: never one of those, one
/// `avoid` names, nor one the record holds. Two actions of one stamp would read as one (a row's
/// implied changes, the server's history), their counters overlapping.
fn fresh_reading(
    tx: &Transaction<'_>,
    device: &mut Device,
    now: u64,
    record: Option<&StoredRecord>,
    avoid: &std::collections::HashSet<u64>,
) -> Result<baylink_sync::Hlc> {
    loop {
        let hlc = device.clock.tick(now);
        let held = record.is_some_and(|r| {
            r.state
                .values()
                .any(|v| v.stamp.node == device.node && v.stamp.hlc == hlc)
        });
        if !held && !avoid.contains(&hlc.as_u64()) && !outbox::stamp_waiting(tx, hlc)? {
            return Ok(hlc);
        }
    }
}

/// Writes a local action: one stamp for all its fields, merged state, links and outbox.
/// With `old == None` the record must be new: returns false, writing nothing, if it exists.
fn write_local(
    tx: &Transaction<'_>,
    device: &mut Device,
    now: u64,
    id: Uuid,
    kind: &str,
    old: Option<&StoredRecord>,
    changes: &Fields,
) -> Result<bool> {
    if changes.is_empty() {
        return Ok(true);
    }
    let hlc = fresh_reading(tx, device, now, old, &std::collections::HashSet::new())?;
    let stamp = Stamp::new(hlc, device.node);
    let mut record = old.cloned().unwrap_or_else(|| StoredRecord {
        kind: kind.to_owned(),
        state: EntityState::new(),
    });
    let mut counter = device.next_counter;
    let mut entries = Vec::with_capacity(changes.len());
    // A refused change never happened on the server: a change over its value replaces, as far
    // as the server knows, what the refused one replaced.
    let refused = if old.is_some() {
        outbox::refused_of(tx, device.node, id)?
    } else {
        Vec::new()
    };
    for (field, value) in changes {
        let held = record.state.get(field);
        if let Some(held) = held.filter(|h| h.stamp.node == device.node) {
            // An earlier change of ours may still need this value: copy it out first.
            outbox::materialize(tx, device.node, id, held.stamp.hlc, field, &held.value)?;
        }
        let superseded = held.and_then(|h| {
            refused
                .iter()
                .find(|(stamp, e)| *stamp == h.stamp && e.field == *field)
        });
        entries.push(match superseded {
            Some((_, e)) => Entry {
                old: e.old.clone(),
                old_stamp: e.old_stamp,
                ..Entry::lazy(counter, field.clone(), e.base)
            },
            None => Entry {
                old: held.map(|v| v.value.clone()),
                ..Entry::lazy(counter, field.clone(), held.map(|v| v.stamp))
            },
        });
        counter += 1;
        record
            .state
            .insert(field.clone(), Versioned::new(value.clone(), stamp));
    }
    if !db::save_record(tx, id, &record, old, None)? {
        return Ok(false);
    }
    device.next_counter = counter;
    if old.is_some() {
        let fields: Vec<&str> = entries.iter().map(|e| e.field.as_str()).collect();
        outbox::drop_refused(tx, device.node, id, Some(&fields))?;
    }
    outbox::append(tx, id, kind, hlc, &entries)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_cursor_the_server_took_for_none_of_its_own_own_standing_values_go_again_once() {
        let input = |pairs: &[(&str, &str)]| -> Input {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut store = Store::open_in_memory().unwrap();
        let mine = store
            .capture(
                EntityKind::Person,
                &input(&[
                    ("village", "441303006001"),
                    ("id_number", "11010519491231002X"),
                    ("name", "王芳"),
                ]),
            )
            .unwrap();
        // The server accepted it: the outbox is empty. Another device's record came down.
        let accepted: Vec<ChangeResult> = store
            .outbox(1_000)
            .unwrap()
            .iter()
            .map(|c| ChangeResult::accepted(c.id.counter))
            .collect();
        let written = accepted.len();
        let newest = accepted.iter().map(|r| r.counter).max().unwrap();
        store.settle(&accepted).unwrap();
        store.apply_pull(&page(1, false), 0).unwrap();
        // An edit waits unsent.
        store.edit(mine, &input(&[("occupation", "渔民")])).unwrap();
        let waiting = store.pending_count().unwrap();
        assert_eq!(store.resend_own_if_due().unwrap(), 0, "not asked for");
        store.forget_cursor().unwrap();
        let resent = store.resend_own_if_due().unwrap();
        // Every value of the capture still standing (the edit waits in its own row already),
        // none of the other device's record, each with its own stamp and a new counter.
        let changes = store.outbox(1_000).unwrap();
        assert_eq!(store.pending_count().unwrap(), waiting + resent);
        assert!(resent > 0 && resent as usize <= written);
        assert!(changes.iter().all(|c| c.entity == mine));
        assert!(changes.iter().all(|c| c.stamp.node == store.node_id()));
        assert!(changes.iter().all(|c| c.id.counter > newest));
        let held = store.states().unwrap();
        for change in &changes {
            let (_, state) = &held[&change.entity];
            assert_eq!(state[&change.field].stamp, change.stamp);
            assert_eq!(state[&change.field].value, change.value);
        }
        // Once: nothing more, and a second forgotten cursor queues nothing waiting already.
        assert_eq!(store.resend_own_if_due().unwrap(), 0);
        store.forget_cursor().unwrap();
        assert_eq!(store.resend_own_if_due().unwrap(), 0);
    }

    fn plan(store: &Store, filter: &str) -> String {
        let sql = format!("EXPLAIN QUERY PLAN SELECT {SUMMARY_COLUMNS} FROM record {filter}");
        let mut stmt = store.conn.prepare(&sql).unwrap();
        let n = stmt.parameter_count();
        let args: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn a_dropped_record_drops_its_links_and_only_its_own() {
        let links = |store: &Store| -> Vec<(String, String)> {
            let mut stmt = store
                .conn
                .prepare("SELECT target, source FROM link ORDER BY source")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        let mut store = Store::open_in_memory().unwrap();
        for page in [
            page(1, false),
            vehicle_page(10, 1, false),
            vehicle_page(11, 1, false),
        ] {
            store.apply_pull(&page, 0).unwrap();
        }
        assert_eq!(links(&store).len(), 2);
        // Vehicle 10 leaves the officer's villages.
        let mut drop = page(12, false);
        drop.purged = vec![Uuid::from_u128(10)];
        store.apply_pull(&drop, 0).unwrap();
        let (one, eleven) = (Uuid::from_u128(1), Uuid::from_u128(11));
        assert_eq!(links(&store), [(one.to_string(), eleven.to_string())]);
        // Its plan looks each link up by its key, not through every link.
        let plan: String = store
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN DELETE FROM link WHERE target = 'a' AND source = 'b' AND field = 'c'",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("PRIMARY KEY"), "{plan}");
    }

    #[test]
    fn searches_and_village_lists_read_indexes_not_the_table() {
        let store = Store::open_in_memory().unwrap();
        for column in ["id_number", "name", "plate", "address", "phone"] {
            let plan = plan(&store, &prefix_filter(column));
            assert!(
                plan.contains(&format!("USING INDEX record_{column}")),
                "{column}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{column}: {plan}");
        }
        let plan = plan(&store, LIST_IN_VILLAGE);
        assert!(plan.contains("USING INDEX record_kind_village"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// A pull page bringing one person named 张三`n`.
    fn page(n: u128, more: bool) -> PullResponse {
        let stamp = baylink_sync::Stamp::new(
            baylink_sync::Hlc::new(1_700_000_000_000, 0),
            baylink_sync::NodeId(Uuid::from_u128(99)),
        );
        let value = |field: &str, value: Value| baylink_sync::wire::FieldValue {
            kind: "person".into(),
            entity: Uuid::from_u128(n),
            field: field.into(),
            value,
            stamp,
            extra: BTreeMap::new(),
        };
        PullResponse {
            server_time_ms: 1_700_000_000_000,
            values: vec![
                value("village", Value::from("441303006001")),
                value("name", Value::from(format!("张三{n}"))),
            ],
            records: Vec::new(),
            purged: Vec::new(),
            next_cursor: baylink_sync::wire::Cursor(format!("s{n}")),
            more,
            villages: None,
            watch_hits: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// A pull page bringing vehicle `n`, owned by person `owner`.
    fn vehicle_page(n: u128, owner: u128, more: bool) -> PullResponse {
        let mut page = page(n, more);
        for value in &mut page.values {
            value.kind = "vehicle".into();
            if value.field == "name" {
                value.field = "owner".into();
                value.value = Value::from(Uuid::from_u128(owner).to_string());
            }
        }
        page
    }

    #[test]
    fn a_bootstraps_links_are_found_while_it_runs_and_kept_in_order_once_it_is_complete() {
        let owners = |store: &Store, person: u128| -> Vec<String> {
            let record = store.get(Uuid::from_u128(person)).unwrap().unwrap();
            let mut ids: Vec<String> = record
                .links
                .iter()
                .filter(|l| l.incoming && l.field == "owner")
                .map(|l| l.record.id.clone())
                .collect();
            ids.sort();
            ids
        };
        let rows = |store: &Store, table: &str| -> i64 {
            store
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        let mut store = Store::open_in_memory().unwrap();
        store.apply_pull(&page(1, true), 0).unwrap();
        store.apply_pull(&page(2, true), 0).unwrap();
        store.apply_pull(&vehicle_page(10, 1, true), 0).unwrap();
        store.apply_pull(&vehicle_page(11, 1, true), 0).unwrap();
        // Waiting beside the table while the pull runs, and found all the same.
        assert_eq!((rows(&store, "link"), rows(&store, "link_pending")), (0, 2));
        let ten = Uuid::from_u128(10).to_string();
        let eleven = Uuid::from_u128(11).to_string();
        assert_eq!(owners(&store, 1), [ten.clone(), eleven.clone()]);
        // Vehicle 11 changes hands before the pull is complete: its old link goes.
        let mut sold = vehicle_page(11, 2, false);
        for value in &mut sold.values {
            value.stamp.hlc = baylink_sync::Hlc::new(1_700_000_000_001, 0);
        }
        store.apply_pull(&sold, 0).unwrap();
        assert_eq!((rows(&store, "link"), rows(&store, "link_pending")), (2, 0));
        assert_eq!(owners(&store, 1), [ten]);
        assert_eq!(owners(&store, 2), [eleven]);
    }

    #[test]
    fn a_bootstrap_builds_the_search_indexes_once_its_pull_is_complete() {
        let by_index = |store: &Store| plan(store, &prefix_filter("name")).contains("USING INDEX");
        let found = |store: &Store| store.search("张三", 10).unwrap().len();
        // A store that holds nothing, sent a page with more to come: no index meanwhile, and
        // searches still find what arrived.
        let mut store = Store::open_in_memory().unwrap();
        store.apply_pull(&page(1, true), 0).unwrap();
        assert!(!by_index(&store));
        assert_eq!(found(&store), 1);
        store.apply_pull(&page(2, true), 0).unwrap();
        assert!(!by_index(&store));
        // The last page builds them.
        store.apply_pull(&page(3, false), 0).unwrap();
        assert!(by_index(&store));
        assert_eq!(found(&store), 3);
        let plan = plan(&store, LIST_IN_VILLAGE);
        assert!(plan.contains("USING INDEX record_kind_village"), "{plan}");
        // A store that holds records keeps its indexes through a pull of many pages.
        store.apply_pull(&page(4, true), 0).unwrap();
        assert!(by_index(&store));
        // A bootstrap cut short: the store builds them when it is next opened.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.db");
        let mut store = Store::open(&path).unwrap();
        store.apply_pull(&page(1, true), 0).unwrap();
        assert!(!by_index(&store));
        drop(store);
        let store = Store::open(&path).unwrap();
        assert!(by_index(&store));
        assert_eq!(found(&store), 1);
    }
}
