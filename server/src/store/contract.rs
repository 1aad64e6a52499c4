//! The storage trait every backend implements, and the contract it keeps.
//!
//! Handlers, the console and the command line reach storage only through [`Store`]. Each method
//! is one use case named for the domain; it owns its unit of work (one transaction, or one
//! read snapshot) and chooses the writer or a reader itself. Parameters are typed, and every
//! method answers with a [`StoreError`], never an HTTP type.
//!
//! # The contract
//!
//! Every backend keeps these, and runs the conformance suite (`server/tests/conformance/`) that
//! pins them; what only a backend can stage (a write killed part way, the writer held while
//! pages are read) each backend shows in tests of its own (`server/tests/store_sqlite.rs`).
//!
//! 1. **A push is atomic and idempotent.** [`Store::push`] applies a batch in one transaction
//!    (which it may share with other pushes committed with it, as if each committed alone):
//!    after it returns every change is accepted (durable) or refused with a code, and a failure
//!    leaves nothing of it. A change already answered, by (device, counter), is answered as the
//!    first time and applied once.
//! 2. **Sequence numbers become visible in commit order.** A pull that has read every value
//!    numbered up to n has seen, and will see, nothing new numbered n or lower: a value
//!    committed late is never skipped, and none is sent twice unless its record was written
//!    again while the device paged (the record moved past the pages read, and comes again
//!    whole from where the pull started). (On SQLite the one writer connection gives this; a
//!    backend with several writers must give it another way.)
//! 3. **A page is read from one snapshot and writes nothing but its bookkeeping.**
//!    [`Store::pull_page`] reads one consistent state, on a reader where the backend has them;
//!    the device's villages, last sync and purge marks are written after, in a transaction of
//!    their own, and a lost answer is read again the same way.
//! 4. **What a write causes commits with it.** Scopes, feeds, summaries, history and watch-list
//!    alerts change in the transaction of the write that causes them.
//! 5. **Every console and administration decision is audited in its own transaction.** A
//!    review, a settled conflict, a merge, a dismissed pair, an acknowledged alert, a watch-list
//!    rule, an account created, given villages, disabled or enabled, a device revoked, places
//!    imported, a token key added or retired, a console or device sign-in: the decision and its
//!    audit entry commit together, or neither does. An audited read (an export, an ID number
//!    shown in full) is handed out only after its audit entry has committed. Administration is
//!    decided from what the store holds: an account acting must be an enabled administrator
//!    (the operator at the command line is).
//! 6. **Nothing one server node needs is kept in another's memory.** Login attempts and token
//!    keys are in the store, so any node answers any request: an attempt reserved on one node
//!    counts on every other ([`Store::reserve_login`] checks and reserves in one transaction),
//!    and a key added on one signs on every node once it has read the keys again.
//! 7. **Console reads never wait for a write.** Console pages, lists, exports, the token check
//!    and the health check read on readers beside the writer; an audited read waits for the
//!    writer only to append its audit entry.

use std::future::Future;
use std::pin::Pin;

use baylink_domain::Date;
use baylink_domain::watch::Rule;
use baylink_sync::Change;
use baylink_sync::cursor::Position;
use baylink_sync::wire::ChangeResult;
use uuid::Uuid;

pub use crate::store::accounts::{Access, NewAccount};
pub use crate::store::alerts::AlertsShown;
pub use crate::store::audit::{Actor, AuditFilter, AuditPage};
pub use crate::store::records::{RecordPage, Reveal};
pub use crate::store::review::{Keep, Verdict};
pub use crate::store::sessions::ConsoleSession;
pub use crate::store::signin::NewKey;
pub use crate::store::signin::{DeviceSession, Refreshed, SignInLookup, TokenHolder};
pub use crate::store::token_keys::TokenKey;

use crate::store::accounts::Account;
use crate::store::alerts::{Alert, StoredRule};
use crate::store::audit::AuditEntry;
use crate::store::caller::Caller;
use crate::store::dashboard::Overview;
use crate::store::devices::Device;
use crate::store::duplicates::{MergeReport, Pairs};
use crate::store::error::StoreError;
use crate::store::places::{Imported, Station};
use crate::store::pull::Page;
use crate::store::records::{Filter, RecordView, Row};
use crate::store::review::Conflict;
use crate::store::snapshot::Snapshot;

/// What a store method returns: a future owning everything it needs.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The storage of a Baylink server: every use case, each its own unit of work. See the module
/// documentation for the contract every implementation keeps.
pub trait Store: Send + Sync + 'static {
    // Sync.

    /// Merges a device's push (contract 1, 2, 4): each change accepted or refused with a code.
    fn push(
        &self,
        caller: Caller,
        changes: Vec<Change>,
        max_clock_ahead_ms: u64,
    ) -> StoreFuture<Vec<ChangeResult>>;

    /// One page of a pull from `from`: whole records, at most `limit` values unless one record
    /// alone has more; without the caller's own accepted values of change counters above
    /// `own_held_after` that nothing newer replaced (contract 2, 3).
    fn pull_page(
        &self,
        caller: Caller,
        from: Position,
        limit: u32,
        own_held_after: Option<u64>,
    ) -> StoreFuture<Page>;

    /// The last sequence number issued, read on a reader (health check).
    fn current_seq(&self) -> StoreFuture<i64>;

    // Device sign-in.

    /// The device and account an access token names.
    fn token_holder(&self, device: Uuid, account: i64) -> StoreFuture<TokenHolder>;

    /// The account of a sign-in name, and what the device key presented proves.
    fn sign_in_lookup(
        &self,
        username: String,
        device: Uuid,
        key: Option<String>,
    ) -> StoreFuture<SignInLookup>;

    /// Registers a device to an account (or renames it); refused when another account's.
    fn register_device(&self, device: Uuid, account: i64, name: String) -> StoreFuture<Device>;

    /// Opens a device session: a refresh token, the device key as `key` says.
    fn open_device_session(
        &self,
        device: Uuid,
        account: Account,
        ttl_ms: u64,
        key: NewKey,
    ) -> StoreFuture<DeviceSession>;

    /// Spends a refresh token (a reused one ends the device's session).
    fn spend_refresh_token(&self, token: String, device: String) -> StoreFuture<Refreshed>;

    /// Ends a device's session: its refresh tokens spent, its access tokens void.
    fn end_device_session(&self, device: Uuid) -> StoreFuture<()>;

    // State the server's nodes share.

    /// Reserves a login attempt under every throttle key: its id, or the seconds to wait
    /// (`store::logins` has the rule).
    fn reserve_login(&self, keys: Vec<String>, now_ms: u64) -> StoreFuture<Result<i64, u64>>;

    /// Ends a login attempt: a success takes its reservation back, a failure counts from now.
    fn end_login(&self, attempt: i64, failed: bool, now_ms: u64) -> StoreFuture<()>;

    /// Every token key, oldest first.
    fn token_keys(&self) -> StoreFuture<Vec<TokenKey>>;

    /// Adds `first` when no token key is in use; answers every key.
    fn ensure_token_key(&self, first: TokenKey) -> StoreFuture<Vec<TokenKey>>;

    /// Adds a token key, which signs from now on (audited).
    fn add_token_key(&self, actor: Actor, key: TokenKey) -> StoreFuture<()>;

    /// Retires a token key that no longer signs (audited); `at_once` even before the key that
    /// signs has settled on every node.
    fn retire_token_key(
        &self,
        actor: Actor,
        id: String,
        now_ms: u64,
        at_once: bool,
    ) -> StoreFuture<()>;

    // Console sign-in.

    /// The account of a sign-in name.
    fn account_by_username(&self, username: String) -> StoreFuture<Option<Account>>;

    /// The console session of a cookie, when it is current and its account may use the console.
    fn console_session(&self, cookie: String) -> StoreFuture<Option<ConsoleSession>>;

    /// Opens a console session (audited); answers its cookie.
    fn open_console_session(&self, account: i64, ttl_ms: u64) -> StoreFuture<String>;

    /// Closes a console session.
    fn close_console_session(&self, cookie: String) -> StoreFuture<()>;

    // Console: reading.

    /// The dashboard's figures for these villages since a day.
    fn overview(&self, villages: Vec<String>, since: Date) -> StoreFuture<Overview>;

    /// Records in these villages matching a filter, a page of them.
    fn records(
        &self,
        villages: Vec<String>,
        filter: Filter,
        limit: u32,
        offset: u32,
    ) -> StoreFuture<Vec<Row>>;

    /// Writes an access that reveals something to the audit log (a search reaching past what
    /// the console's masks show), before what it reveals is handed out.
    fn audit_access(&self, account: i64, action: String, detail: String) -> StoreFuture<()>;

    /// Records for an export (audited with its filter, file format and size).
    fn export(
        &self,
        account: i64,
        villages: Vec<String>,
        filter: Filter,
        format: String,
        limit: u32,
    ) -> StoreFuture<Vec<Row>>;

    /// A record the caller may see, with its links; a full reveal is audited.
    fn record_page(&self, caller: Caller, id: Uuid, reveal: Reveal) -> StoreFuture<RecordPage>;

    /// A record by id, whatever its village (the operator's command line).
    fn record(&self, id: Uuid) -> StoreFuture<Option<RecordView>>;

    /// Stations and their villages.
    fn stations(&self) -> StoreFuture<Vec<Station>>;

    // Review.

    /// Approves or returns a record (contract 5).
    fn review(&self, reviewer: Caller, entity: Uuid, verdict: Verdict) -> StoreFuture<()>;

    /// Open conflicts in these villages.
    fn conflicts(&self, villages: Vec<String>, limit: u32) -> StoreFuture<Vec<Conflict>>;

    /// Settles a conflict with the value chosen (contract 5).
    fn settle_conflict(&self, reviewer: Caller, id: i64, keep: Keep) -> StoreFuture<()>;

    /// Candidate duplicate persons in these villages.
    fn duplicate_pairs(&self, villages: Vec<String>, limit: usize) -> StoreFuture<Pairs>;

    /// Merges a duplicate into the record kept (contract 5).
    fn merge_records(&self, reviewer: Caller, from: Uuid, into: Uuid) -> StoreFuture<MergeReport>;

    /// Records that two persons are different people (contract 5).
    fn dismiss_pair(&self, reviewer: Caller, a: Uuid, b: Uuid) -> StoreFuture<()>;

    // Watch list.

    /// Alerts in these villages.
    fn alerts(
        &self,
        villages: Vec<String>,
        shown: AlertsShown,
        limit: u32,
    ) -> StoreFuture<Vec<Alert>>;

    /// Acknowledges an alert (contract 5).
    fn acknowledge_alert(&self, reviewer: Caller, id: i64) -> StoreFuture<()>;

    /// The watch-list rules.
    fn watch_rules(&self) -> StoreFuture<Vec<StoredRule>>;

    /// Adds a rule and raises its alerts on records already held (contract 5); answers the
    /// rule's id and the alerts raised.
    fn add_watch_rule(&self, admin: i64, rule: Rule, note: String) -> StoreFuture<(i64, usize)>;

    /// Removes a rule (contract 5).
    fn remove_watch_rule(&self, admin: i64, id: i64) -> StoreFuture<()>;

    // Administration.

    /// Every account, with the villages of officers.
    fn accounts(&self) -> StoreFuture<Vec<(Account, Vec<String>)>>;

    /// Creates an account (contract 5); answers its id.
    fn create_account(&self, actor: Actor, account: NewAccount) -> StoreFuture<i64>;

    /// Gives an officer these villages, and only these (contract 5).
    fn assign_villages(
        &self,
        actor: Actor,
        username: String,
        villages: Vec<String>,
    ) -> StoreFuture<()>;

    /// Enables or disables an account (contract 5).
    fn set_access(&self, actor: Actor, username: String, access: Access) -> StoreFuture<()>;

    /// Compacts what every device seen within `idle_ms` has applied (purge notes, tombstones);
    /// audited as `actor`'s.
    fn compact(
        &self,
        actor: Actor,
        idle_ms: u64,
    ) -> StoreFuture<crate::store::retention::Compacted>;

    /// Gives an account a new password hash and ends every session it holds (contract 5).
    fn set_password(
        &self,
        actor: Actor,
        username: String,
        password_hash: String,
    ) -> StoreFuture<()>;

    /// Every device, with its account's username.
    fn devices(&self) -> StoreFuture<Vec<(Device, String)>>;

    /// Revokes a device (contract 5): its tokens stop working, its data must be wiped.
    fn revoke_device(&self, actor: Actor, device: Uuid) -> StoreFuture<()>;

    /// The newest audit entries.
    fn audit_log(&self, limit: u32) -> StoreFuture<Vec<AuditEntry>>;

    /// A page of the audit log, newest first, as `filter` narrows it; and the actions it holds.
    fn audit_page(&self, filter: AuditFilter, limit: u32) -> StoreFuture<(AuditPage, Vec<String>)>;

    /// Loads stations and villages from a division-code list, all or nothing (contract 5).
    fn import_places(&self, actor: Actor, list: String) -> StoreFuture<Imported>;

    // Checks.

    /// Everything the server holds about records, read in one snapshot, backend-neutral: for
    /// tests and consistency checks (it reads the whole database).
    fn snapshot(&self) -> StoreFuture<Snapshot>;
}
