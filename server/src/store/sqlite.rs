//! [`Store`] for [`Db`], on either database: each use case on the writer or a reader, off the
//! async workers. On SQLite one writer serialises writes, which keeps contract item 2 (sequence
//! numbers visible in commit order) by construction; on PostgreSQL each writing transaction's
//! lock does (`store::pg`).

use crate::store::conn::Conn;
use baylink_domain::Date;
use baylink_domain::watch::Rule;
use baylink_sync::Change;
use baylink_sync::cursor::Position;
use baylink_sync::wire::ChangeResult;
use uuid::Uuid;

use crate::store::accounts::{self, Access, Account, NewAccount};
use crate::store::alerts::{self, Alert, AlertsShown, StoredRule};
use crate::store::audit::{self, Actor, AuditEntry};
use crate::store::caller::{Caller, Role};
use crate::store::contract::{Store, StoreFuture};
use crate::store::dashboard::{self, Overview};
use crate::store::devices::{self, Device};
use crate::store::duplicates::{self, MergeReport, Pairs};
use crate::store::error::StoreError;
use crate::store::logins;
use crate::store::places::{self, Imported, Station};
use crate::store::pull::{self, Page};
use crate::store::records::{self, Filter, RecordPage, RecordView, Reveal, Row};
use crate::store::review::{self, Conflict, Keep, Verdict};
use crate::store::sessions::{self, ConsoleSession};
use crate::store::signin::{self, DeviceSession, NewKey, Refreshed, SignInLookup, TokenHolder};
use crate::store::snapshot::{self, Snapshot};
use crate::store::token_keys::{self, TokenKey};
use crate::store::{Db, now_ms};

impl Db {
    /// A use case on the writer connection.
    fn writing<T, F>(&self, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.clone();
        Box::pin(async move { db.call(f).await })
    }

    /// A use case on a reader, in one snapshot.
    fn reading<T, F>(&self, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.clone();
        Box::pin(async move { db.read(f).await })
    }
}

impl Store for Db {
    fn push(
        &self,
        caller: Caller,
        changes: Vec<Change>,
        max_clock_ahead_ms: u64,
    ) -> StoreFuture<Vec<ChangeResult>> {
        let db = self.clone();
        Box::pin(async move { db.apply_push(caller, changes, max_clock_ahead_ms).await })
    }

    fn pull_page(
        &self,
        caller: Caller,
        from: Position,
        limit: u32,
        own_held_after: Option<u64>,
    ) -> StoreFuture<Page> {
        let db = self.clone();
        Box::pin(async move {
            // The page is read on a snapshot beside the writer; only the device's bookkeeping,
            // when there is any, waits for the writer.
            let (page, settle) = db
                .read(move |c| {
                    let ask = pull::Ask {
                        from,
                        limit,
                        own_held_after,
                    };
                    pull::read_page(c, &caller, ask, now_ms())
                })
                .await?;
            if settle.needed() {
                db.call(move |c| pull::settle(c, &settle)).await?;
            }
            Ok(page)
        })
    }

    fn current_seq(&self) -> StoreFuture<i64> {
        self.reading(crate::store::values::current_seq)
    }

    fn reserve_login(&self, keys: Vec<String>, now_ms: u64) -> StoreFuture<Result<i64, u64>> {
        self.writing(move |c| logins::reserve(c, &keys, now_ms))
    }

    fn end_login(&self, attempt: i64, failed: bool, now_ms: u64) -> StoreFuture<()> {
        self.writing(move |c| logins::end(c, attempt, failed, now_ms))
    }

    fn token_keys(&self) -> StoreFuture<Vec<TokenKey>> {
        self.reading(token_keys::list)
    }

    fn ensure_token_key(&self, first: TokenKey) -> StoreFuture<Vec<TokenKey>> {
        self.writing(move |c| token_keys::ensure(c, &first))
    }

    fn add_token_key(&self, actor: Actor, key: TokenKey) -> StoreFuture<()> {
        self.writing(move |c| token_keys::add(c, actor, &key))
    }

    fn retire_token_key(
        &self,
        actor: Actor,
        id: String,
        now_ms: u64,
        at_once: bool,
    ) -> StoreFuture<()> {
        self.writing(move |c| token_keys::retire(c, actor, &id, now_ms, at_once))
    }

    fn token_holder(&self, device: Uuid, account: i64) -> StoreFuture<TokenHolder> {
        self.reading(move |c| signin::token_holder(c, &device.to_string(), account))
    }

    fn sign_in_lookup(
        &self,
        username: String,
        device: Uuid,
        key: Option<String>,
    ) -> StoreFuture<SignInLookup> {
        self.reading(move |c| {
            signin::sign_in_lookup(c, &username, &device.to_string(), key.as_deref())
        })
    }

    fn register_device(&self, device: Uuid, account: i64, name: String) -> StoreFuture<Device> {
        self.writing(move |c| {
            devices::register_device(c, &device.to_string(), account, &name, now_ms())
        })
    }

    fn open_device_session(
        &self,
        device: Uuid,
        account: Account,
        ttl_ms: u64,
        key: NewKey,
    ) -> StoreFuture<DeviceSession> {
        self.writing(move |c| {
            signin::open_device_session(c, &device.to_string(), &account, now_ms(), ttl_ms, key)
        })
    }

    fn spend_refresh_token(&self, token: String, device: String) -> StoreFuture<Refreshed> {
        self.writing(move |c| signin::spend_refresh_token(c, &token, &device, now_ms()))
    }

    fn end_device_session(&self, device: Uuid) -> StoreFuture<()> {
        self.writing(move |c| devices::end_session(c, &device.to_string()))
    }

    fn account_by_username(&self, username: String) -> StoreFuture<Option<Account>> {
        self.reading(move |c| accounts::account_by_username(c, &username))
    }

    fn console_session(&self, cookie: String) -> StoreFuture<Option<ConsoleSession>> {
        self.reading(move |c| sessions::console_session(c, &cookie, now_ms()))
    }

    fn open_console_session(&self, account: i64, ttl_ms: u64) -> StoreFuture<String> {
        self.writing(move |c| {
            let (cookie, _) = sessions::open_session(c, account, now_ms(), ttl_ms)?;
            Ok(cookie)
        })
    }

    fn close_console_session(&self, cookie: String) -> StoreFuture<()> {
        self.writing(move |c| sessions::close_session(c, &cookie))
    }

    fn overview(&self, villages: Vec<String>, since: Date) -> StoreFuture<Overview> {
        self.reading(move |c| dashboard::overview(c, &villages, since))
    }

    fn records(
        &self,
        villages: Vec<String>,
        filter: Filter,
        limit: u32,
        offset: u32,
    ) -> StoreFuture<Vec<Row>> {
        self.reading(move |c| {
            let mut rows = records::list(c, &villages, &filter, limit, offset)?;
            records::name_residences(c, &villages, &mut rows)?;
            Ok(rows)
        })
    }

    fn audit_access(&self, account: i64, action: String, detail: String) -> StoreFuture<()> {
        self.writing(move |c| {
            audit::audit(c, Some(account), &action, None, Some(&detail), now_ms())
        })
    }

    fn export(
        &self,
        account: i64,
        villages: Vec<String>,
        filter: Filter,
        format: String,
        limit: u32,
    ) -> StoreFuture<Vec<Row>> {
        let db = self.clone();
        Box::pin(async move {
            // Read beside the writer; handed out only once its audit entry has committed.
            // The words searched are the caller's: kept to a line, not 64 KiB a request.
            let detail = baylink_domain::cut_to(&format!("{filter:?} {format}"), 500);
            let rows = db
                .read(move |c| records::list(c, &villages, &filter, limit, 0))
                .await?;
            let detail = format!("{detail} rows={}", rows.len());
            db.call(move |c| {
                audit::audit(c, Some(account), "export", None, Some(&detail), now_ms())
            })
            .await?;
            Ok(rows)
        })
    }

    fn record_page(&self, caller: Caller, id: Uuid, reveal: Reveal) -> StoreFuture<RecordPage> {
        let db = self.clone();
        Box::pin(async move {
            let (id, account) = (id.to_string(), caller.account);
            let read = id.clone();
            let page = db
                .read(move |c| records::record_page(c, &caller, &read))
                .await?;
            // A number in full is handed out only once its audit entry has committed.
            if reveal == Reveal::Full {
                db.call(move |c| {
                    audit::audit(
                        c,
                        Some(account),
                        "reveal_id_number",
                        Some(&id),
                        None,
                        now_ms(),
                    )
                })
                .await?;
            }
            Ok(page)
        })
    }

    fn record(&self, id: Uuid) -> StoreFuture<Option<RecordView>> {
        self.reading(move |c| records::record(c, &id.to_string()))
    }

    fn stations(&self) -> StoreFuture<Vec<Station>> {
        self.reading(places::stations)
    }

    fn review(&self, reviewer: Caller, entity: Uuid, verdict: Verdict) -> StoreFuture<()> {
        self.writing(move |c| review::review(c, &reviewer, &entity, &verdict, now_ms()))
    }

    fn conflicts(&self, villages: Vec<String>, limit: u32) -> StoreFuture<Vec<Conflict>> {
        self.reading(move |c| review::conflicts(c, &villages, limit))
    }

    fn settle_conflict(&self, reviewer: Caller, id: i64, keep: Keep) -> StoreFuture<()> {
        self.writing(move |c| review::settle_conflict(c, &reviewer, id, keep, now_ms()))
    }

    fn duplicate_pairs(&self, villages: Vec<String>, limit: usize) -> StoreFuture<Pairs> {
        self.reading(move |c| duplicates::candidates(c, &villages, limit))
    }

    fn merge_records(&self, reviewer: Caller, from: Uuid, into: Uuid) -> StoreFuture<MergeReport> {
        self.writing(move |c| {
            duplicates::merge(c, &reviewer, &from.to_string(), &into.to_string(), now_ms())
        })
    }

    fn dismiss_pair(&self, reviewer: Caller, a: Uuid, b: Uuid) -> StoreFuture<()> {
        self.writing(move |c| {
            duplicates::dismiss(c, &reviewer, &a.to_string(), &b.to_string(), now_ms())
        })
    }

    fn alerts(
        &self,
        villages: Vec<String>,
        shown: AlertsShown,
        limit: u32,
    ) -> StoreFuture<Vec<Alert>> {
        self.reading(move |c| alerts::list(c, &villages, shown, limit))
    }

    fn acknowledge_alert(&self, reviewer: Caller, id: i64) -> StoreFuture<()> {
        self.writing(move |c| alerts::acknowledge(c, &reviewer, id, now_ms()))
    }

    fn watch_rules(&self) -> StoreFuture<Vec<StoredRule>> {
        self.reading(alerts::rules)
    }

    fn add_watch_rule(&self, admin: i64, rule: Rule, note: String) -> StoreFuture<(i64, usize)> {
        self.writing(move |c| alerts::add_rule(c, admin, &rule, &note, now_ms()))
    }

    fn remove_watch_rule(&self, admin: i64, id: i64) -> StoreFuture<()> {
        self.writing(move |c| alerts::remove_rule(c, admin, id, now_ms()))
    }

    fn accounts(&self) -> StoreFuture<Vec<(Account, Vec<String>)>> {
        self.reading(|c| {
            let mut out = Vec::new();
            for account in accounts::accounts(c)? {
                let villages = if account.role == Role::Officer {
                    accounts::villages_of(c, &account)?
                } else {
                    Vec::new()
                };
                out.push((account, villages));
            }
            Ok(out)
        })
    }

    fn create_account(&self, actor: Actor, account: NewAccount) -> StoreFuture<i64> {
        self.writing(move |c| accounts::create_account(c, actor, &account, now_ms()))
    }

    fn assign_villages(
        &self,
        actor: Actor,
        username: String,
        villages: Vec<String>,
    ) -> StoreFuture<()> {
        self.writing(move |c| accounts::assign_villages(c, actor, &username, &villages, now_ms()))
    }

    fn set_access(&self, actor: Actor, username: String, access: Access) -> StoreFuture<()> {
        self.writing(move |c| accounts::set_access(c, actor, &username, access, now_ms()))
    }

    fn compact(
        &self,
        actor: Actor,
        idle_ms: u64,
    ) -> StoreFuture<crate::store::retention::Compacted> {
        self.writing(move |c| crate::store::retention::compact(c, actor, idle_ms, now_ms()))
    }

    fn set_password(
        &self,
        actor: Actor,
        username: String,
        password_hash: String,
    ) -> StoreFuture<()> {
        self.writing(move |c| accounts::set_password(c, actor, &username, &password_hash, now_ms()))
    }

    fn devices(&self) -> StoreFuture<Vec<(Device, String)>> {
        self.reading(devices::devices)
    }

    fn revoke_device(&self, actor: Actor, device: Uuid) -> StoreFuture<()> {
        self.writing(move |c| devices::revoke_device(c, actor, &device.to_string(), now_ms()))
    }

    fn audit_page(
        &self,
        filter: audit::AuditFilter,
        limit: u32,
    ) -> StoreFuture<(audit::AuditPage, Vec<String>)> {
        self.reading(move |c| {
            Ok((
                audit::audit_page(c, &filter, limit)?,
                audit::audit_actions(c)?,
            ))
        })
    }

    fn audit_log(&self, limit: u32) -> StoreFuture<Vec<AuditEntry>> {
        self.reading(move |c| audit::audit_log(c, limit))
    }

    fn import_places(&self, actor: Actor, list: String) -> StoreFuture<Imported> {
        self.writing(move |c| places::import(c, actor, &list, now_ms()))
    }

    fn snapshot(&self) -> StoreFuture<Snapshot> {
        self.reading(snapshot::read)
    }
}
