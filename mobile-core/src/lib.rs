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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use baylink_domain::{EntityKind, FieldType, Writer};
use uuid::Uuid;

pub use error::{Error, FieldProblem, MobileError, Result};
pub use outbox::RefusedChange;
pub use store::{
    ApplyReport, Captured, ConcurrentEdit, Deletion, Dismissal, Feedback, Link, Record,
    RecordSummary, RefusedField, RefusedRecord, SessionInfo, Store,
};
pub use sync::SyncReport;

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

/// The store as apps hold it: thread-safe, with errors apps can act on.
#[derive(uniffi::Object)]
pub struct FieldStore {
    store: Mutex<Store>,
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
        Ok(Arc::new(FieldStore {
            store: Mutex::new(Store::open(path)?),
        }))
    }

    /// Opens (creating if need be) the store encrypted under the officer's passphrase; offline.
    #[uniffi::constructor]
    pub fn open_encrypted(
        path: String,
        passphrase: String,
    ) -> Result<Arc<FieldStore>, MobileError> {
        Ok(Arc::new(FieldStore {
            store: Mutex::new(Store::open_encrypted(path, &passphrase)?),
        }))
    }

    /// This device's node id.
    pub fn node_id(&self) -> String {
        self.lock().node_id().to_string()
    }

    /// Captures a record of a kind (`person`, `house`, ...) from form fields; returns its id.
    pub fn capture(
        &self,
        kind: String,
        fields: HashMap<String, String>,
    ) -> Result<String, MobileError> {
        let kind = parse_kind(&kind)?;
        Ok(self.lock().capture(kind, &to_input(fields))?.to_string())
    }

    /// Captures a record, saying whether it was known already (the same ID number, plate or
    /// address) and which fields the capture changed.
    pub fn capture_detailed(
        &self,
        kind: String,
        fields: HashMap<String, String>,
    ) -> Result<CaptureOutcome, MobileError> {
        let kind = parse_kind(&kind)?;
        let captured = self.lock().capture_detailed(kind, &to_input(fields))?;
        Ok(CaptureOutcome {
            id: captured.id.to_string(),
            existed: captured.existed,
            changed: captured.changed,
        })
    }

    /// Edits fields of a record; returns how many changed.
    pub fn edit(&self, id: String, fields: HashMap<String, String>) -> Result<u32, MobileError> {
        let id = parse_id(&id)?;
        Ok(self.lock().edit(id, &to_input(fields))? as u32)
    }

    /// Deletes a record.
    pub fn delete(&self, id: String) -> Result<(), MobileError> {
        let id = parse_id(&id)?;
        self.lock().delete(id)?;
        Ok(())
    }

    /// One record with its fields and links, if the device has it.
    pub fn get(&self, id: String) -> Result<Option<Record>, MobileError> {
        let id = parse_id(&id)?;
        Ok(self.lock().get(id)?)
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
        Ok(self.lock().list(kind, village.as_deref(), limit, offset)?)
    }

    /// Records whose ID number, name, plate, address or phone starts with the text.
    pub fn search(&self, text: String, limit: u32) -> Result<Vec<RecordSummary>, MobileError> {
        Ok(self.lock().search(&text, limit)?)
    }

    /// How many local changes wait to be synced.
    pub fn pending_count(&self) -> Result<u64, MobileError> {
        Ok(self.lock().pending_count()?)
    }

    /// Changes the server refused, for the officer to correct.
    pub fn refused(&self) -> Result<Vec<RefusedChange>, MobileError> {
        Ok(self.lock().refused()?)
    }

    /// Records with refused changes, each with its label and the reasons.
    pub fn refused_records(&self) -> Result<Vec<RefusedRecord>, MobileError> {
        Ok(self.lock().refused_records()?)
    }

    /// Dismisses a record's refused changes (see [`Store::dismiss_refused`]).
    pub fn dismiss_refused(&self, id: String) -> Result<Dismissal, MobileError> {
        let id = parse_id(&id)?;
        Ok(self.lock().dismiss_refused(id)?)
    }

    /// How many records have local changes waiting to be synced.
    pub fn pending_records(&self) -> Result<u64, MobileError> {
        Ok(self.lock().pending_records()?)
    }

    /// Records the station returned, with the reviewer's comments.
    pub fn returned(&self) -> Result<Vec<Feedback>, MobileError> {
        Ok(self.lock().returned()?)
    }

    /// Signs in to a server (needs a connection once; afterwards the device works offline).
    pub fn login(
        &self,
        server: String,
        username: String,
        password: String,
        device_name: String,
    ) -> Result<(), MobileError> {
        Ok(sync::login(
            &mut self.lock(),
            &server,
            &username,
            &password,
            &device_name,
        )?)
    }

    /// Ends the session; local data stays.
    pub fn logout(&self) -> Result<(), MobileError> {
        Ok(sync::logout(&mut self.lock())?)
    }

    /// The signed-in session, if any.
    pub fn session(&self) -> Result<Option<SessionInfo>, MobileError> {
        Ok(self.lock().session()?)
    }

    /// Pushes pending changes and pulls the villages' state, reporting progress. Call it from
    /// a background thread.
    pub fn sync(&self, progress: Option<Arc<dyn SyncProgress>>) -> Result<SyncReport, MobileError> {
        let report = |phase: &str, done: u64, total: u64| {
            if let Some(p) = &progress {
                p.progress(phase.to_owned(), done, total);
            }
        };
        Ok(sync::sync(&mut self.lock(), &report)?)
    }
}

/// Progress of a sync, implemented by the app (Kotlin, Swift, Python).
#[uniffi::export(foreign)]
pub trait SyncProgress: Send + Sync {
    /// `phase` is `push` or `pull`; `done` of `total` (0 when not known).
    fn progress(&self, phase: String, done: u64, total: u64);
}

impl FieldStore {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    /// Whether the form must fill it.
    pub required: bool,
    /// False for fields the system keeps (review status, creation).
    pub editable: bool,
    /// Allowed codes with their Chinese labels, for choice fields.
    pub choices: Vec<Choice>,
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
        .map(|spec| FieldInfo {
            name: spec.name.into(),
            label_zh: spec.zh.into(),
            label_en: spec.en.into(),
            required: spec.required,
            editable: spec.writer != Writer::System,
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
        })
        .collect())
}
