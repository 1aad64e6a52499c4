//! mobile-core: Baylink's on-device engine. An embedded SQLite store holds the officer's records
//! as merged field states with an outbox of local changes; capture validates with the domain
//! crate, merging uses the replication core. This file is the facade that Android and iOS apps
//! call through UniFFI; Rust callers (the `baylink` field client) use [`Store`] directly.

// UniFFI's generated scaffolding is FFI glue and needs `unsafe`; this crate writes none itself.
#![allow(unsafe_code)]

mod db;
pub mod error;
mod key;
mod outbox;
mod schema;
mod store;
pub mod sync;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use baylink_domain::{EntityKind, FieldType, Writer};
use uuid::Uuid;

pub use error::{Error, FieldProblem, MobileError, Network, NetworkKind, Result};
pub use outbox::RefusedChange;
pub use store::{
    ApplyReport, Captured, Check, ConcurrentEdit, Deletion, Dismissal, Feedback, Link,
    NamedVillage, News, NewsKind, OnCommit, Record, RecordSummary, RefusedField, RefusedRecord,
    SessionInfo, Store,
};
pub use sync::{SyncNews, SyncReport};

uniffi::setup_scaffolding!();

/// What a capture did, as apps see it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct CaptureOutcome {
    /// The record's id.
    pub id: String,
    /// The record was known already: the capture updated it.
    pub existed: bool,
    /// The fields the capture changed.
    pub changed: Vec<String>,
}

/// The store as apps hold it: thread-safe, with errors apps can act on. The app's screens use
/// one connection to the file, a sync another ([`FieldStore::sync`]): reads never wait for a
/// sync's network exchange, and a capture waits at most for one page being written.
#[derive(uniffi::Object)]
pub struct FieldStore {
    /// The screens' connection: reads, captures, edits.
    store: Mutex<Store>,
    /// The file and its key, to open the sync's connection.
    path: PathBuf,
    key: Option<[u8; 32]>,
    /// The sync's connection, opened at the first sync and held for a whole one (syncs,
    /// sign-ins and sign-outs go one at a time).
    sync: Mutex<Option<Store>>,
    /// The thread running a sync, sign-in or sign-out on the sync's connection: the same
    /// thread asking for another (from a listener or progress callback) is refused, not left
    /// waiting for itself.
    sync_thread: Mutex<Option<std::thread::ThreadId>>,
    /// Set by [`FieldStore::cancel_sync`], read between a sync's requests.
    cancel: Arc<AtomicBool>,
    listeners: Arc<Listeners>,
}

/// What changed in the store: records written by a capture, an edit, a deletion, or a sync's
/// page (records pulled, dropped, or whose waiting changes the server settled).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct StoreChange {
    /// The kinds of the records changed (`person`, `house`, ...).
    pub kinds: Vec<String>,
    /// Their ids, at most [`CHANGE_IDS`]; `ids_complete` is false when there were more (a
    /// bootstrap's pages): refresh whatever shows these kinds.
    pub ids: Vec<String>,
    /// Whether `ids` names every record changed.
    pub ids_complete: bool,
    /// `local` for the app's own writes, `sync` for a sync's.
    pub source: String,
}

/// Most ids told in one [`StoreChange`].
pub const CHANGE_IDS: usize = 1_000;

/// Told of changes to the store, implemented by the app (a list screen refreshing). Called on
/// the thread that wrote (a sync's thread for what it brings), after the write committed: it may
/// read and write the store; a sync, sign-in or sign-out asked for from a sync's listener is
/// refused (`MobileError::Other`), as it would wait for itself.
#[uniffi::export(foreign)]
pub trait ChangeListener: Send + Sync {
    /// Records changed.
    fn changed(&self, change: StoreChange);
}

/// A registered listener under the number it was given.
type Registered = (u64, Arc<dyn ChangeListener>);

/// The app's listeners, and the last number given.
#[derive(Default)]
struct Listeners {
    registered: Mutex<(u64, Vec<Registered>)>,
}

impl Listeners {
    fn tell(&self, source: &str, changes: &BTreeMap<String, Vec<Uuid>>) {
        if changes.is_empty() {
            return;
        }
        // Called without the lock held: a listener may register or remove one.
        let listeners: Vec<Arc<dyn ChangeListener>> = relock(&self.registered)
            .1
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        if listeners.is_empty() {
            return;
        }
        let total: usize = changes.values().map(Vec::len).sum();
        let change = StoreChange {
            kinds: changes.keys().cloned().collect(),
            ids: changes
                .values()
                .flatten()
                .take(CHANGE_IDS)
                .map(Uuid::to_string)
                .collect(),
            ids_complete: total <= CHANGE_IDS,
            source: source.to_owned(),
        };
        for listener in listeners {
            listener.changed(change.clone());
        }
    }
}

/// Notes the thread using the sync's connection for as long as it does.
struct Running<'a>(&'a Mutex<Option<std::thread::ThreadId>>);

impl<'a> Running<'a> {
    fn on(
        holder: &'a Mutex<Option<std::thread::ThreadId>>,
        thread: std::thread::ThreadId,
    ) -> Running<'a> {
        *relock(holder) = Some(thread);
        Running(holder)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *relock(self.0) = None;
    }
}

/// A mutex's guard; a panic while it was held leaves SQLite consistent (transactions roll back).
fn relock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sync's progress and cancellation, as the engine asks for them.
struct Watched<'a> {
    progress: Option<Arc<dyn SyncProgress>>,
    cancel: &'a AtomicBool,
}

impl sync::Progress for Watched<'_> {
    fn progress(&self, phase: &str, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p.progress(phase.to_owned(), done, total);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

fn parse_kind(kind: &str) -> Result<EntityKind, MobileError> {
    EntityKind::parse(kind).ok_or_else(|| {
        MobileError::from(Error::Invalid(baylink_domain::Error::UnknownKind(
            kind.to_owned(),
        )))
    })
}

fn parse_id(id: &str) -> Result<Uuid, MobileError> {
    Uuid::parse_str(id.trim()).map_err(|_| MobileError::NotFound)
}

fn to_input(fields: HashMap<String, String>) -> BTreeMap<String, String> {
    fields.into_iter().collect()
}

// UniFFI hands arguments over as owned values: borrowing them is not an option here.
#[allow(clippy::needless_pass_by_value)]
#[uniffi::export]
impl FieldStore {
    /// Opens or creates the store at a file path.
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<FieldStore>, MobileError> {
        FieldStore::in_file(PathBuf::from(path), None)
    }

    /// Opens (creating if need be) the store encrypted under the officer's passphrase; offline.
    #[uniffi::constructor]
    pub fn open_encrypted(
        path: String,
        passphrase: String,
    ) -> Result<Arc<FieldStore>, MobileError> {
        let path = PathBuf::from(path);
        let key = key::derive(&path, &passphrase)?;
        FieldStore::in_file(path, Some(key))
    }

    /// This device's node id.
    pub fn node_id(&self) -> String {
        let mut store = relock(&self.store);
        // Read again if a sign-in on the sync's connection handed the phone over; the row
        // read before is the answer if the file cannot be read.
        let _ = store.refresh();
        store.node_id().to_string()
    }

    /// Captures a record of a kind (`person`, `house`, ...) from form fields; returns its id.
    pub fn capture(
        &self,
        kind: String,
        fields: HashMap<String, String>,
    ) -> Result<String, MobileError> {
        let kind = parse_kind(&kind)?;
        self.write(|s| Ok(s.capture(kind, &to_input(fields))?.to_string()))
    }

    /// Captures a record, saying whether it was known already (the same ID number, plate or
    /// address) and which fields the capture changed.
    pub fn capture_detailed(
        &self,
        kind: String,
        fields: HashMap<String, String>,
    ) -> Result<CaptureOutcome, MobileError> {
        let kind = parse_kind(&kind)?;
        let captured = self.write(|s| s.capture_detailed(kind, &to_input(fields)))?;
        Ok(CaptureOutcome {
            id: captured.id.to_string(),
            existed: captured.existed,
            changed: captured.changed,
        })
    }

    /// Edits fields of a record; returns how many changed.
    pub fn edit(&self, id: String, fields: HashMap<String, String>) -> Result<u32, MobileError> {
        let id = parse_id(&id)?;
        self.write(|s| Ok(s.edit(id, &to_input(fields))? as u32))
    }

    /// Deletes a record.
    pub fn delete(&self, id: String) -> Result<(), MobileError> {
        let id = parse_id(&id)?;
        self.write(|s| s.delete(id).map(|_| ()))
    }

    /// One record with its fields and links, if the device has it.
    pub fn get(&self, id: String) -> Result<Option<Record>, MobileError> {
        let id = parse_id(&id)?;
        self.read(|s| s.get(id))
    }

    /// Records of a kind, optionally of one village, newest first.
    pub fn list(
        &self,
        kind: String,
        village: Option<String>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<RecordSummary>, MobileError> {
        let kind = parse_kind(&kind)?;
        self.read(|s| s.list(kind, village.as_deref(), limit, offset))
    }

    /// Records whose ID number, name, plate, address or phone starts with the text.
    pub fn search(&self, text: String, limit: u32) -> Result<Vec<RecordSummary>, MobileError> {
        self.read(|s| s.search(&text, limit))
    }

    /// Candidates for a reference field ([`FieldInfo::target_kind`]): records of `kind` whose
    /// ID number, name, plate, address or phone starts with the text, each with its label; the
    /// newest of the kind while nothing is typed.
    pub fn pick(
        &self,
        kind: String,
        text: String,
        limit: u32,
    ) -> Result<Vec<RecordSummary>, MobileError> {
        let kind = parse_kind(&kind)?;
        self.read(|s| s.pick(kind, &text, limit))
    }

    /// Checks a capture form without saving it: every problem it would be refused for, each
    /// naming its field, and the record it would update when its ID number, plate or address
    /// code is known already (show it: "this will update 王芳's record").
    pub fn validate(
        &self,
        kind: String,
        fields: HashMap<String, String>,
    ) -> Result<Validation, MobileError> {
        let kind = parse_kind(&kind)?;
        let check = self.read(|s| s.check_capture(kind, &to_input(fields)))?;
        Ok(Validation {
            problems: check.problems.iter().map(FieldProblem::from).collect(),
            existing: check.existing,
        })
    }

    /// How many local changes wait to be synced.
    pub fn pending_count(&self) -> Result<u64, MobileError> {
        self.read(Store::pending_count)
    }

    /// Changes the server refused, for the officer to correct.
    pub fn refused(&self) -> Result<Vec<RefusedChange>, MobileError> {
        self.read(Store::refused)
    }

    /// Records with refused changes, each with its label and the reasons.
    pub fn refused_records(&self) -> Result<Vec<RefusedRecord>, MobileError> {
        self.read(Store::refused_records)
    }

    /// Dismisses a record's refused changes (see [`Store::dismiss_refused`]).
    pub fn dismiss_refused(&self, id: String) -> Result<Dismissal, MobileError> {
        let id = parse_id(&id)?;
        self.write(|s| s.dismiss_refused(id))
    }

    /// How many records have local changes waiting to be synced.
    pub fn pending_records(&self) -> Result<u64, MobileError> {
        self.read(Store::pending_records)
    }

    /// Records the station returned, with the reviewer's comments.
    pub fn returned(&self) -> Result<Vec<Feedback>, MobileError> {
        self.read(Store::returned)
    }

    /// Signs in to a server (needs a connection once; afterwards the device works offline).
    /// Runs on the sync's connection: the screens keep reading meanwhile.
    pub fn login(
        &self,
        server: String,
        username: String,
        password: String,
        device_name: String,
    ) -> Result<(), MobileError> {
        self.on_sync_connection(None, |store, _| {
            sync::login(store, &server, &username, &password, &device_name)
        })
    }

    /// Trusts a CA (PEM) for the server instead of the bundled roots: a server on the police
    /// intranet signed by its own CA. `None` goes back to the bundled roots. Set it before
    /// `login`; it is kept in the store.
    pub fn set_server_ca(&self, pem: Option<String>) -> Result<(), MobileError> {
        self.on_sync_connection(None, |store, _| store.set_server_ca(pem.as_deref()))
    }

    /// Ends the session; local data stays.
    pub fn logout(&self) -> Result<(), MobileError> {
        self.on_sync_connection(None, |store, _| sync::logout(store))
    }

    /// The signed-in session, if any.
    pub fn session(&self) -> Result<Option<SessionInfo>, MobileError> {
        self.read(Store::session)
    }

    /// Pushes pending changes and pulls the villages' state, reporting progress. Blocks until
    /// done: call it from a background thread (a WorkManager worker, a Swift Task). The store
    /// stays usable meanwhile, from the progress callback too: the sync runs on a connection
    /// of its own and holds the write lock only while it writes a page. One sync at a time: a
    /// second call waits for the first.
    pub fn sync(&self, progress: Option<Arc<dyn SyncProgress>>) -> Result<SyncReport, MobileError> {
        self.on_sync_connection(progress, |store, watched| sync::sync(store, watched))
    }

    /// Asks the sync in progress to stop: it ends with `MobileError::Cancelled` after the
    /// request under way (at most its time limit), keeping every page already applied and
    /// every answer already settled; the next sync goes on from there.
    pub fn cancel_sync(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Registers a listener of changes; returns its number, for [`FieldStore::remove_listener`].
    pub fn add_listener(&self, listener: Arc<dyn ChangeListener>) -> u64 {
        let mut registered = relock(&self.listeners.registered);
        registered.0 += 1;
        let id = registered.0;
        registered.1.push((id, listener));
        id
    }

    /// Removes a listener; false if it was not registered.
    pub fn remove_listener(&self, id: u64) -> bool {
        let mut registered = relock(&self.listeners.registered);
        let before = registered.1.len();
        registered.1.retain(|(at, _)| *at != id);
        registered.1.len() != before
    }
}

/// Progress of a sync, implemented by the app (Kotlin, Swift, Python).
#[uniffi::export(foreign)]
pub trait SyncProgress: Send + Sync {
    /// `phase` is `push` or `pull`; `done` of `total` (0 when not known).
    fn progress(&self, phase: String, done: u64, total: u64);
}

impl FieldStore {
    fn in_file(path: PathBuf, key: Option<[u8; 32]>) -> Result<Arc<FieldStore>, MobileError> {
        let mut store = Store::open_keyed(&path, key.as_ref())?;
        store.watch_changes()?;
        Ok(Arc::new(FieldStore {
            store: Mutex::new(store),
            path,
            key,
            sync: Mutex::new(None),
            sync_thread: Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
            listeners: Arc::default(),
        }))
    }

    /// Runs a read on the screens' connection, its device row current, in one snapshot: a
    /// record and its links, or a list and the records it names, agree even while a sync writes.
    fn read<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T, MobileError> {
        let mut store = relock(&self.store);
        store.refresh()?;
        let store = &*store;
        Ok(store.snapshot(|_| f(store))?)
    }

    /// Runs a write on the screens' connection, then tells the listeners what it changed (the
    /// lock released: a listener may read the store).
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T, MobileError> {
        let (out, changes) = {
            let mut store = relock(&self.store);
            store.refresh()?;
            let out = f(&mut store);
            (out, store.take_changes())
        };
        self.listeners.tell("local", &changes?);
        Ok(out?)
    }

    /// Runs `f` on the sync's connection (opened the first time), one at a time, with the
    /// progress and cancellation the engine asks for.
    fn on_sync_connection<T>(
        &self,
        progress: Option<Arc<dyn SyncProgress>>,
        f: impl FnOnce(&mut Store, &Watched<'_>) -> Result<T>,
    ) -> Result<T, MobileError> {
        let me = std::thread::current().id();
        if *relock(&self.sync_thread) == Some(me) {
            return Err(MobileError::Other {
                detail: "sync, login, logout or set_server_ca called from a listener or progress \
                         callback of a sync: call it once the sync has returned"
                    .into(),
            });
        }
        let mut slot = relock(&self.sync);
        let _running = Running::on(&self.sync_thread, me);
        if slot.is_none() {
            let mut store = Store::open_keyed(&self.path, self.key.as_ref())?;
            let listeners = self.listeners.clone();
            store.on_commit(Box::new(move |changes| listeners.tell("sync", &changes)))?;
            *slot = Some(store);
        }
        let store = slot.as_mut().ok_or_else(|| MobileError::Other {
            detail: "the sync's connection did not open".into(),
        })?;
        store.refresh()?;
        self.cancel.store(false, Ordering::SeqCst);
        let watched = Watched {
            progress,
            cancel: &self.cancel,
        };
        Ok(f(store, &watched)?)
    }
}

/// What a capture form would do ([`FieldStore::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Validation {
    /// Every problem, each naming its field; empty when the capture would be saved.
    pub problems: Vec<FieldProblem>,
    /// The record the capture would update, when its natural key is known already.
    pub existing: Option<RecordSummary>,
}

/// A field as a form shows it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FieldInfo {
    /// Field name.
    pub name: String,
    /// Chinese label.
    pub label_zh: String,
    /// English label.
    pub label_en: String,
    /// The input it takes: `text`, `prose`, `choice`, `date`, `date_time`, `int`, `id_number`,
    /// `resident_id`, `plate`, `phone`, `reference`, `geo`, `village`, `address_code`,
    /// `text_list` or `bool`.
    pub input: String,
    /// For a reference, the kind of record it names (pick one with [`FieldStore::pick`]).
    pub target_kind: Option<String>,
    /// The most characters it takes, once normalised (full-width to half-width, spaces).
    pub max_length: Option<u32>,
    /// The least a number may be.
    pub min_value: Option<i64>,
    /// The most a number may be.
    pub max_value: Option<i64>,
    /// Whether the form must fill it.
    pub required: bool,
    /// Whether a form writes it: false for fields the system keeps (review status, creation)
    /// and for those only ever derived (a person's origin).
    pub editable: bool,
    /// Filled by the store from the fields in `derived_from`: a person's gender, birth date
    /// and origin from a resident ID number, a person's category from the document type, a
    /// plate's kind from the plate. An editable derived field is filled when left empty (an
    /// entry must agree with what derives it).
    pub derived: bool,
    /// The fields it is derived from.
    pub derived_from: Vec<String>,
    /// When set (`id_type=resident_id`), the field is derived only while that holds: show it
    /// read-only then, as [`decode_id_number`] gives it while the officer types, and as an
    /// input for other documents (passports, permits), where nothing derives it.
    pub derived_when: Option<String>,
    /// A hint to show under the field (the format expected), in Chinese; empty when none.
    pub hint_zh: String,
    /// The same hint in English.
    pub hint_en: String,
    /// Allowed codes with their Chinese labels, for choice fields.
    pub choices: Vec<Choice>,
}

/// What a resident ID number says as far as it is typed, for a form to show while the officer
/// types it ([`decode_id_number`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct IdNumberInfo {
    /// The number as it will be stored (half-width, upper-case X, no spaces).
    pub normalized: String,
    /// The six-digit region code, once typed and known.
    pub region_code: Option<String>,
    /// The region's name (`广东省惠州市惠阳区`).
    pub region_name: Option<String>,
    /// The birth date `YYYY-MM-DD`, from 14 characters on.
    pub birth_date: Option<String>,
    /// Whole years of age today (China time).
    pub age: Option<u32>,
    /// `male` or `female`, from 17 characters on.
    pub sex: Option<String>,
    /// All 18 characters are there and the check character matches.
    pub valid: bool,
    /// What is wrong so far (`characters`, `region`, `birth_date`, `checksum`, `length`, ...),
    /// with messages naming the field.
    pub problem: Option<FieldProblem>,
}

/// Decodes a resident ID number as far as it is typed: region, birth date, age, sex, and the
/// check character's verdict once complete. Offline; today's date is the phone's, in China.
#[allow(clippy::needless_pass_by_value)]
#[uniffi::export]
pub fn decode_id_number(text: String) -> IdNumberInfo {
    let now = baylink_sync::PhysicalClock::now_ms(&baylink_sync::SystemClock);
    let today =
        baylink_domain::Date::from_unix_ms(now as i64, baylink_domain::date::CHINA_OFFSET_MINUTES);
    let decoded = baylink_domain::id_number::decode(&text, today);
    IdNumberInfo {
        normalized: decoded.number,
        region_code: decoded.origin_code,
        region_name: decoded.origin_name,
        birth_date: decoded.birth_date.map(|d| d.to_string()),
        age: decoded.age,
        sex: decoded.gender.map(|g| g.code().to_owned()),
        valid: decoded.valid,
        problem: decoded
            .problem
            .map(|r| FieldProblem::from(&r.for_field("id_number", "证件号码", "ID number"))),
    }
}

/// One allowed value of a choice field.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Choice {
    /// Stored code.
    pub code: String,
    /// Chinese label.
    pub label_zh: String,
}

/// The fields of a kind, in form order, so apps build their forms from the one data model.
#[allow(clippy::needless_pass_by_value)]
#[uniffi::export]
pub fn field_specs(kind: String) -> Result<Vec<FieldInfo>, MobileError> {
    let kind = parse_kind(&kind)?;
    Ok(kind
        .fields()
        .map(|spec| {
            let form = baylink_domain::form::form_of(kind, spec);
            FieldInfo {
                name: spec.name.into(),
                label_zh: spec.zh.into(),
                label_en: spec.en.into(),
                input: form.input.name().into(),
                target_kind: form.target.map(|k| k.as_str().to_owned()),
                max_length: form.max_chars.map(|n| n as u32),
                min_value: form.range.map(|(min, _)| min),
                max_value: form.range.map(|(_, max)| max),
                required: spec.required,
                editable: form.editable,
                derived: spec.writer == Writer::Derived,
                derived_when: form.derived_when.map(str::to_owned),
                derived_from: form.derived_from.iter().map(|f| (*f).to_owned()).collect(),
                hint_zh: form.hint.0.into(),
                hint_en: form.hint.1.into(),
                choices: match spec.ty {
                    FieldType::Choice(choices) => choices
                        .iter()
                        .map(|c| Choice {
                            code: c.code.into(),
                            label_zh: c.zh.into(),
                        })
                        .collect(),
                    _ => Vec::new(),
                },
            }
        })
        .collect())
}
