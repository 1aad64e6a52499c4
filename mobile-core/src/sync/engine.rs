//! The sync engine: push the outbox in batches (restamping what the server found stamped ahead),
//! then pull pages until the device is up to date. Every step is applied in its own transaction,
//! so a cut connection or a crash resumes where it stopped, with nothing lost or applied twice.
//! The server is reached through a [`Transport`]: HTTP in the app, an in-process server with
//! injected faults in the simulation tests. A request that fails on the way (no signal, a cut
//! connection, a 5xx) is retried a few times with growing pauses before the sync gives up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use baylink_sync::wire::{
    BAD_CURSOR, CURSOR_EXPIRED, ChangeStatus, FIRST_PUSH_CHANGES, PullResponse, PushResponse,
    refusal,
};
use baylink_sync::{Change, NodeId};
use uuid::Uuid;

use crate::db;
use crate::error::{Error, NetworkKind, Result};
use crate::store::Store;
use baylink_sync::auth::{Session, unauthorized};

use crate::sync::client::Client;

/// Changes per push, at most, once the server has said it takes as many (whole actions, so
/// about 1,300 new persons; until then [`FIRST_PUSH_CHANGES`], which every server takes). Each
/// push is applied in one transaction on the server (shared with other devices' pushes waiting
/// beside it), whose commit rewrites every index page its new records touch: fewer, larger
/// pushes write less.
pub const PUSH_BATCH: usize = 20_000;
/// JSON per push, about, at first (counted in the older protocol's larger form): three
/// quarters of the server's default limit on a body (8 MiB), so that a day of long notes goes
/// in several pushes rather than one the server refuses.
pub const PUSH_BYTES: usize = 6 * 1024 * 1024;
/// The least a push is cut to when the server finds one too large (one action goes whatever
/// its size).
const LEAST_PUSH_BYTES: usize = 16 * 1024;
/// Values per pull page: the most the server sends.
const PULL_PAGE: u32 = 5_000;
/// Pages fetched ahead of the one being applied, at most.
const PAGES_AHEAD: usize = 8;
/// Pages asked for in one request while fetching ahead: the server reads each while the
/// device reads the one before (one request a page would leave each side waiting for the other).
const PAGES_ASKED: u32 = 16;
/// Values applied in one transaction, at most: pages already fetched are applied together.
const APPLY_VALUES: usize = 50_000;
/// Request timeout.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per request before a sync gives up (the next sync resumes where it stopped).
const ATTEMPTS: u32 = 4;
/// Pause before the first retry; each further retry waits about twice as long (between half
/// and one and a half times, at random, so that phones cut off together do not come back
/// together).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest `Retry-After` a sync waits out; a server asking for longer ends the sync (the
/// next one tries again).
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest pause between two looks at whether the sync was cancelled, while it waits to
/// retry.
const WAIT_STEP: Duration = Duration::from_millis(200);

/// The server as the engine sees it: push a batch, pull a page.
pub trait Transport {
    /// Pushes a batch of this device's changes and returns the server's answer.
    fn push(&mut self, store: &mut Store, changes: &[Change]) -> Result<PushResponse>;
    /// Pulls the page of values after `cursor`.
    fn pull(
        &mut self,
        store: &mut Store,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<PullResponse>;
    /// Starts fetching pages from `cursor` on while the device applies the current one, if
    /// this transport can and is not already doing so: each page's cursor leads to the next,
    /// until one that is the last or drops records. A `pull` of a fetched page's cursor then
    /// takes its answer. Does nothing by default.
    fn prefetch(&mut self, store: &Store, cursor: String, limit: u32) {
        let _ = (store, cursor, limit);
    }
    /// Starts pushing `changes` in the background, if this transport can, while the device
    /// settles the answer to the batch before: a `push` of the same changes then takes its
    /// answer. Never more than one push on its way. Does nothing by default.
    fn push_ahead(&mut self, store: &Store, changes: &[Change]) {
        let _ = (store, changes);
    }
    /// Makes `changes`, the batch after the push on its way, ready to go (encoded meanwhile),
    /// if this transport can: [`Transport::send_ready`] sends it once that push is answered.
    /// A batch made ready before and not sent is dropped. Does nothing by default.
    fn ready_next(&mut self, store: &Store, changes: &[Change]) {
        let _ = (store, changes);
    }
    /// Sends the batch made ready, if it is `changes` as they are now and no push is on its
    /// way, with the session's token as it is now: a `push` of the same changes then takes its
    /// answer. Whether it went. Never by default.
    fn send_ready(&mut self, store: &Store, changes: &[Change]) -> bool {
        let _ = (store, changes);
        false
    }
    /// Drops the batch made ready, unsent. Does nothing by default.
    fn drop_ready(&mut self) {}
    /// The most changes one push carries: the server's limit by default (a simulated link
    /// takes fewer, so that an upload goes in several pushes).
    fn push_limit(&self) -> usize {
        PUSH_BATCH
    }
    /// The page at `cursor` if it was already fetched, without waiting. None by default.
    fn fetched(&mut self, cursor: &str) -> Option<PullResponse> {
        let _ = cursor;
        None
    }
    /// The device's clock now (when an answer arrived), in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    /// Waits before a retry.
    fn pause(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Pages fetched in the background, each with the cursor it was asked for, in order.
type Ahead = std::sync::mpsc::Receiver<(String, Result<PullResponse>)>;

/// A push on its way in the background: the counters of its changes, and its answer to come.
type Pushing = (Vec<u64>, std::sync::mpsc::Receiver<Result<PushResponse>>);

/// A push made ready while the one before is on its way: its changes as they were read, the
/// signal that sends it with the token of that moment (dropped, it never goes), and its answer
/// to come.
type Ready = (
    Vec<Change>,
    std::sync::mpsc::SyncSender<String>,
    std::sync::mpsc::Receiver<Result<PushResponse>>,
);

/// The server over HTTP, with the session's tokens (refreshed once when expired) and a time
/// limit per request, after which a stalled request counts as failed (and is retried). One
/// client for the whole sync: its connections kept alive, and what the server said it reads
/// (push bodies in zstd) remembered. While the device applies pages, the next ones are already
/// on their way.
pub struct Http {
    timeout: Duration,
    ahead: Option<Ahead>,
    pushing: Option<Pushing>,
    ready: Option<Ready>,
    /// The client, with the server it talks to.
    client: Option<(String, Arc<Client>)>,
}

impl Default for Http {
    fn default() -> Http {
        Http::with_timeout(TIMEOUT)
    }
}

impl Http {
    /// HTTP with another time limit per request.
    pub fn with_timeout(timeout: Duration) -> Http {
        Http {
            timeout,
            ahead: None,
            pushing: None,
            ready: None,
            client: None,
        }
    }

    /// The client for the session's server, made once per sync (again if the server moved).
    fn client(&mut self, store: &Store) -> Result<&Arc<Client>> {
        let server = store.raw_session()?.ok_or(Error::NotSignedIn)?.server;
        if self.client.as_ref().is_none_or(|(at, _)| *at != server) {
            let ca = store.server_ca()?;
            let client = Arc::new(Client::with_ca(&server, self.timeout, ca.as_deref())?);
            self.client = Some((server, client));
        }
        match &self.client {
            Some((_, client)) => Ok(client),
            None => Err(Error::NotSignedIn),
        }
    }

    /// The next fetched page if it is the one at `cursor`. Any other answer (a failure, an
    /// expired token included, or another cursor) stops the fetching: the ordinary path
    /// retries it.
    fn take(&mut self, cursor: &str, wait: bool) -> Option<PullResponse> {
        let ahead = self.ahead.as_ref()?;
        let next = if wait {
            ahead.recv().ok()
        } else {
            match ahead.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                other => other.ok(),
            }
        };
        match next {
            Some((at, Ok(page))) if at == cursor => Some(page),
            _ => {
                self.ahead = None;
                None
            }
        }
    }
}

impl Drop for Http {
    /// A push sent ahead is waited for (at most the time limit of a request) even when the sync
    /// ends early (an error settling the answer before it): the next sync's pushes never run
    /// beside it.
    fn drop(&mut self) {
        if let Some((_, answer)) = self.pushing.take() {
            let _ = answer.recv();
        }
    }
}

impl Transport for Http {
    fn push(&mut self, store: &mut Store, changes: &[Change]) -> Result<PushResponse> {
        // The push begun ahead, if it is this one and was answered; any other answer (a
        // failure, an expired token) and the changes go again the ordinary way: a push is
        // idempotent. Waited for in every case, so that two pushes are never on their way.
        if let Some((counters, answer)) = self.pushing.take() {
            let answer = answer.recv().ok();
            let same = counters
                .iter()
                .copied()
                .eq(changes.iter().map(|c| c.id.counter));
            if let (true, Some(Ok(answer))) = (same, answer) {
                return Ok(answer);
            }
        }
        let device = store.node_id();
        let client = self.client(store)?;
        authed(store, client, &|client, token| {
            client.push(token, device, changes.to_vec())
        })
    }

    fn pull(
        &mut self,
        store: &mut Store,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<PullResponse> {
        if let Some(page) = cursor.as_deref().and_then(|c| self.take(c, true)) {
            return Ok(page);
        }
        let own = Some(store.own_held_after()?);
        let client = self.client(store)?;
        authed(store, client, &|client, token| {
            client.pull(token, cursor.clone(), limit, own)
        })
    }

    fn push_ahead(&mut self, store: &Store, changes: &[Change]) {
        if self.pushing.is_some() {
            return;
        }
        let Ok(Some(token)) = store.raw_session().map(|s| s.and_then(|s| s.access_token)) else {
            return;
        };
        let Ok(client) = self.client(store).cloned() else {
            return;
        };
        let device = store.node_id();
        let counters = changes.iter().map(|c| c.id.counter).collect();
        let changes = changes.to_vec();
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let pushing = std::thread::Builder::new()
            .name("push-ahead".into())
            .spawn(move || {
                let _ = answer.send(client.push(&token, device, changes));
            });
        if pushing.is_ok() {
            self.pushing = Some((counters, answered));
        }
    }

    fn ready_next(&mut self, store: &Store, changes: &[Change]) {
        self.ready = None;
        let Ok(client) = self.client(store).cloned() else {
            return;
        };
        let device = store.node_id();
        let made = changes.to_vec();
        let changes = changes.to_vec();
        let (go, gate) = std::sync::mpsc::sync_channel::<String>(1);
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let ready = std::thread::Builder::new()
            .name("push-ready".into())
            .spawn(move || {
                let body = client.encode_push(device, changes);
                // Dropped unsent when the push before it was not all accepted.
                if let Ok(token) = gate.recv() {
                    let _ = answer.send(body.and_then(|body| client.send_push(&token, &body)));
                }
            });
        if ready.is_ok() {
            self.ready = Some((made, go, answered));
        }
    }

    fn send_ready(&mut self, store: &Store, changes: &[Change]) -> bool {
        let Some((made, go, answered)) = self.ready.take() else {
            return false;
        };
        // The token of now: the push before may have refreshed it.
        let Ok(Some(token)) = store.raw_session().map(|s| s.and_then(|s| s.access_token)) else {
            return false;
        };
        if made != changes || self.pushing.is_some() || go.send(token).is_err() {
            return false;
        }
        self.pushing = Some((made.iter().map(|c| c.id.counter).collect(), answered));
        true
    }

    fn drop_ready(&mut self) {
        self.ready = None;
    }

    fn prefetch(&mut self, store: &Store, cursor: String, limit: u32) {
        if self.ahead.is_some() {
            return;
        }
        let Ok(Some(session)) = store.raw_session() else {
            return;
        };
        let Some(token) = session.access_token else {
            return;
        };
        let Ok(own) = store.own_held_after() else {
            return;
        };
        // The sync's one client: its connections and what the server said it reads.
        let Ok(client) = self.client(store).cloned() else {
            return;
        };
        let (pages_ahead, ahead) = std::sync::mpsc::sync_channel(PAGES_AHEAD);
        let fetching = std::thread::Builder::new()
            .name("pull-ahead".into())
            .spawn(move || {
                let mut at = cursor;
                loop {
                    let pages =
                        client.pull_pages(&token, Some(at.clone()), limit, PAGES_ASKED, Some(own));
                    let pages: Box<dyn Iterator<Item = Result<PullResponse>>> = match pages {
                        Ok(pages) => Box::new(pages),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    };
                    for page in pages {
                        let next = match &page {
                            Ok(p) if p.continues() => Some(p.next_cursor.0.clone()),
                            _ => None,
                        };
                        // The receiver gone (the sync ended or went another way): stop.
                        if pages_ahead.send((at, page)).is_err() {
                            return;
                        }
                        match next {
                            Some(next) => at = next,
                            None => return,
                        }
                    }
                }
            });
        if fetching.is_ok() {
            self.ahead = Some(ahead);
        }
    }

    fn fetched(&mut self, cursor: &str) -> Option<PullResponse> {
        self.take(cursor, false)
    }
}

/// Whether a smaller push could hold part of `changes`: a batch of one record's changes goes
/// whole, whatever its size (the server judges a new record by what one push brings of it).
fn divisible(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.entity != changes[0].entity)
}

/// The bytes a push may hold after `changes` were too many for the server or the link: a
/// quarter of what they held (not of what they might have held: each smaller try costs a
/// round of attempts, on a slow link half a minute each), at least [`LEAST_PUSH_BYTES`].
fn smaller(max_bytes: usize, changes: &[Change]) -> usize {
    let sent: usize = changes
        .iter()
        .map(baylink_sync::wire::approximate_bytes)
        .sum();
    (max_bytes.min(sent) / 4).max(LEAST_PUSH_BYTES)
}

/// Whether a failed request may succeed if sent again: the network, the server failing rather
/// than refusing, or its time for the request running out (408: on a slow link).
fn transient(error: &Error) -> bool {
    match error {
        Error::Network(_) => true,
        Error::Server { status, .. } => *status >= 500 || matches!(status, 408 | 429),
        _ => false,
    }
}

/// How long the server (or a gateway before it) asked to wait before asking again.
fn asked_to_wait(error: &Error) -> Option<Duration> {
    match error {
        Error::Network(n) => n.retry_after,
        Error::Server { retry_after, .. } => *retry_after,
        _ => None,
    }
    .map(Duration::from_secs)
}

/// How long to wait before retry `attempt` (1 for the first): the backoff with jitter, or what
/// the server asked for if longer.
pub fn backoff(attempt: u32, asked: Option<Duration>) -> Duration {
    let base = FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    let fraction = uuid::Uuid::new_v4().as_u128() as f64 / u128::MAX as f64;
    base.mul_f64(0.5 + fraction).max(asked.unwrap_or_default())
}

/// Runs a request, retrying transient failures with exponential backoff and jitter, waiting
/// at least as long as the server asked (`Retry-After`).
fn with_retries<T>(
    transport: &mut dyn Transport,
    store: &mut Store,
    progress: &dyn Progress,
    call: &mut dyn FnMut(&mut dyn Transport, &mut Store) -> Result<T>,
) -> Result<T> {
    let mut attempt = 1;
    loop {
        match call(transport, store) {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                let asked = asked_to_wait(&e);
                if asked.is_some_and(|wait| wait > LONGEST_RETRY_AFTER) {
                    return Err(e);
                }
                // In short waits, so that a cancel is taken within one of them, not after
                // the whole of a minute the server asked for.
                let mut left = backoff(attempt, asked);
                progress.retrying(attempt + 1, ATTEMPTS, &e, left);
                while !left.is_zero() {
                    go_on(progress)?;
                    let step = left.min(WAIT_STEP);
                    transport.pause(step);
                    left -= step;
                }
                go_on(progress)?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Where a sync stands, for a progress bar.
pub trait Progress {
    /// `phase` is `push` or `pull`; `done` of `total` (0 when not known yet).
    fn progress(&self, phase: &str, done: u64, total: u64);
    /// Whether the sync should stop, asked between requests: it then ends with
    /// [`Error::Cancelled`], every step already applied kept. Never by default.
    fn cancelled(&self) -> bool {
        false
    }
    /// A request failed in a way that may pass (`why`): attempt `attempt` of `of` follows
    /// after `wait`. On a bad link a sync can spend minutes so: an officer should see why.
    /// Nothing by default.
    fn retrying(&self, attempt: u32, of: u32, why: &Error, wait: Duration) {
        let _ = (attempt, of, why, wait);
    }
}

/// [`Error::Cancelled`] once the caller asked to stop.
fn go_on(progress: &dyn Progress) -> Result<()> {
    if progress.cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

impl<F: Fn(&str, u64, u64)> Progress for F {
    fn progress(&self, phase: &str, done: u64, total: u64) {
        self(phase, done, total);
    }
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct SyncReport {
    /// Changes the server accepted.
    pub pushed: u64,
    /// Changes refused for good (kept for correction).
    pub refused: u64,
    /// Records with a change the server accepted.
    pub pushed_records: u64,
    /// Records with a change refused for good.
    pub refused_records: u64,
    /// Changes restamped after a clock correction.
    pub restamped: u64,
    /// Values of this phone's own queued to send again because the server no longer knew
    /// where the phone stood (its database put back from a backup, or its keys replaced).
    pub resent: u64,
    /// Whether the phone started over: unseen for longer than the server keeps deletions for
    /// it, it dropped what had nothing waiting and pulled its villages again.
    pub started_over: bool,
    /// Values received.
    pub pulled: u64,
    /// Records removed because they left the officer's villages.
    pub purged: u64,
    /// What happened elsewhere to records this phone held, for the officer: approvals,
    /// returns, merges into another record, values this phone wrote that another device or
    /// the station replaced, and persons of the officer's villages who matched the station's
    /// watch list (at most [`NEWS_KEPT`]; `news_complete` says whether that is all).
    pub news: Vec<SyncNews>,
    /// Whether `news` is everything.
    pub news_complete: bool,
}

/// Most news items a sync report carries.
pub const NEWS_KEPT: usize = 500;

/// One thing that happened elsewhere to a record this phone held.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct SyncNews {
    /// The record.
    pub record_id: String,
    /// Its kind.
    pub kind: String,
    /// Its label as the phone shows it now.
    pub label: String,
    /// `approved`, `returned`, `merged_away`, `replaced` or `watched`.
    pub what: String,
    /// For `replaced`: the field.
    pub field: Option<String>,
    /// For `replaced`: the value this phone had written.
    pub mine: Option<String>,
    /// For `replaced`: the value that stands now.
    pub theirs: Option<String>,
    /// For `returned`: the reviewer's comment.
    pub comment: Option<String>,
    /// For `merged_away`: the record it was merged into.
    pub merged_into: Option<String>,
    /// For `watched`: what matched the station's watch list, `id_number` or `region`.
    pub rule: Option<String>,
}

impl SyncNews {
    /// A news item as the report tells it, labelled by what the store shows now.
    fn told(store: &Store, news: crate::store::News) -> Result<SyncNews> {
        use crate::store::NewsKind;
        let label = store
            .summary(news.entity)?
            .map(|s| s.label)
            .unwrap_or_default();
        let mut told = SyncNews {
            record_id: news.entity.to_string(),
            kind: news.kind,
            label,
            ..SyncNews::default()
        };
        match news.what {
            NewsKind::Approved => told.what = "approved".into(),
            NewsKind::Returned(comment) => {
                told.what = "returned".into();
                told.comment = comment;
            }
            NewsKind::MergedAway(into) => {
                told.what = "merged_away".into();
                told.merged_into = Some(into.to_string());
            }
            NewsKind::Replaced {
                field,
                mine,
                theirs,
            } => {
                told.what = "replaced".into();
                told.field = Some(field);
                told.mine = Some(baylink_domain::to_text(&mine));
                told.theirs = Some(baylink_domain::to_text(&theirs));
            }
            NewsKind::Watched(rule) => {
                told.what = "watched".into();
                told.rule = Some(rule);
            }
        }
        Ok(told)
    }
}

/// The operating system's clock, as every part of Baylink reads it.
fn now_ms() -> u64 {
    baylink_sync::PhysicalClock::now_ms(&baylink_sync::SystemClock)
}

fn to_session(
    server: &str,
    tokens: &Session,
    cursor: Option<String>,
    last_sync_ms: Option<u64>,
    device_key: Option<String>,
) -> db::Session {
    db::Session {
        server: server.to_owned(),
        username: tokens.account.username.clone(),
        display_name: tokens.account.display_name.clone(),
        villages: tokens.villages.clone(),
        village_names: tokens.village_names.clone(),
        access_token: Some(tokens.access_token.clone()),
        refresh_token: Some(tokens.refresh_token.clone()),
        cursor,
        last_sync_ms,
        device_key: tokens.device_key.clone().or(device_key),
    }
}

/// Signs in to a server with this device and keeps the session in the store.
pub fn login(
    store: &mut Store,
    server: &str,
    username: &str,
    password: &str,
    device_name: &str,
) -> Result<()> {
    let lower = server.trim().to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(Error::field(
            "server",
            "url",
            format!("服务器地址应以 https:// 或 http:// 开头：{server}"),
            format!("the server address must start with https:// or http://: {server}"),
        ));
    }
    // Another officer signs in as a new device; the last one's data goes only once the server
    // has taken the new officer's password.
    let handing_over = hand_over(store, username)?;
    let client = Client::with_ca(server, TIMEOUT, store.server_ca()?.as_deref())?;
    // The key proves this device to the server it came from (and only to that one).
    let device_key = store
        .raw_session()?
        .filter(|s| s.server == server && !handing_over)
        .and_then(|s| s.device_key);
    let node = if handing_over {
        NodeId::random()
    } else {
        store.node_id()
    };
    let tokens = guard(
        store,
        client.login(username, password, node, device_name, device_key.as_deref()),
    )?;
    if handing_over {
        store.wipe_as(node)?;
    }
    store.begin_session(
        &to_session(server, &tokens, None, None, device_key),
        tokens.server_time_ms,
        now_ms(),
    )
}

/// Whether this sign-in hands the phone to another officer: refused while the last officer's
/// changes wait (they would be lost, or pushed under the wrong name); otherwise, once the new
/// officer's sign-in succeeds, the last officer's records go and the phone takes a new device
/// identity (the server binds a device to one account for ever), so the new officer never reads
/// the last one's villages, and a failed sign-in leaves the phone as it was.
fn hand_over(store: &mut Store, username: &str) -> Result<bool> {
    let Some(last) = store
        .raw_session()?
        .filter(|s| !s.username.is_empty() && s.username != username)
    else {
        return Ok(false);
    };
    let waiting = store.pending_records()? + store.refused_records()?.len() as u64;
    if waiting > 0 {
        let who = &last.username;
        return Err(Error::field(
            "username",
            "changes_waiting",
            format!(
                "本机还有 {waiting} 条记录属于警员 {who}、尚未同步：请 {who} 先登录同步（或放弃被拒的修改）后再换人"
            ),
            format!(
                "{waiting} record(s) of officer {who} have not synced: {who} signs in and syncs (or dismisses refused changes) before another officer uses this phone"
            ),
        ));
    }
    Ok(true)
}

/// Ends the session here and on the server (when reachable); local data stays.
pub fn logout(store: &mut Store) -> Result<()> {
    if let Some(mut session) = store.raw_session()? {
        if let Some(token) = session.access_token.as_deref() {
            // The server may be out of reach: the local session ends regardless.
            let ca = store.server_ca()?;
            if let Ok(client) = Client::with_ca(&session.server, TIMEOUT, ca.as_deref()) {
                let _ = client.logout(token);
            }
        }
        session.access_token = None;
        session.refresh_token = None;
        store.save_raw_session(&session)?;
    }
    Ok(())
}

/// A revoked device wipes itself before reporting the error.
fn guard<T>(store: &mut Store, result: Result<T>) -> Result<T> {
    if let Err(Error::Server { code, .. }) = &result
        && code == unauthorized::DEVICE_REVOKED
    {
        store.wipe()?;
        return Err(Error::Revoked);
    }
    result
}

/// Calls the server with the access token, refreshing it once if it expired or is no longer
/// taken (its key was retired, or the server's keys replaced): the refresh token does not
/// depend on the signing key, so a phone is not signed out by a key change.
fn authed<T>(
    store: &mut Store,
    client: &Client,
    call: &dyn Fn(&Client, &str) -> Result<T>,
) -> Result<T> {
    let session = store.raw_session()?.ok_or(Error::NotSignedIn)?;
    let token = session.access_token.clone().ok_or(Error::NotSignedIn)?;
    match call(client, &token) {
        Err(Error::Server {
            status: 401, code, ..
        }) if code == unauthorized::TOKEN_EXPIRED || code == unauthorized::INVALID_TOKEN => {
            let refresh = session.refresh_token.clone().ok_or(Error::NotSignedIn)?;
            let tokens = match guard(store, client.refresh(store.node_id(), &refresh)) {
                // The server ended the session (a new password, a disabled account, a token
                // spent elsewhere): the phone says it is signed out, and keeps its place.
                Err(e @ Error::Server { status: 401, .. }) => {
                    let mut ended = session;
                    ended.access_token = None;
                    ended.refresh_token = None;
                    store.save_raw_session(&ended)?;
                    return Err(e);
                }
                other => other?,
            };
            let renewed = to_session(
                &session.server,
                &tokens,
                session.cursor.clone(),
                session.last_sync_ms,
                session.device_key.clone(),
            );
            store.save_raw_session(&renewed)?;
            guard(store, call(client, &tokens.access_token))
        }
        other => guard(store, other),
    }
}

/// Pushes everything pending, then pulls until up to date, over HTTP.
pub fn sync(store: &mut Store, progress: &dyn Progress) -> Result<SyncReport> {
    sync_with(store, &mut Http::default(), progress)
}

/// Pushes everything pending, then pulls until up to date, through a transport.
pub fn sync_with(
    store: &mut Store,
    transport: &mut dyn Transport,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let mut report = SyncReport {
        news_complete: true,
        ..SyncReport::default()
    };
    let mut records = (HashSet::<Uuid>::new(), HashSet::<Uuid>::new());
    push(store, transport, progress, &mut report, &mut records)?;
    let resent = match pull(store, transport, progress, &mut report) {
        Ok(resent) => resent,
        Err(e) => {
            // Searches of what a bootstrap cut short brought read indexes again; the sync's
            // error is what the caller must see, whatever this does.
            let _ = store.restore_indexes();
            return Err(e);
        }
    };
    if resent > 0 {
        // The server was put back from a backup: what this phone wrote goes again, now.
        push(store, transport, progress, &mut report, &mut records)?;
    }
    store.finish_sync(transport.now_ms())?;
    Ok(report)
}

/// Pushes everything pending, batch after batch, settling each answer; counts the records
/// pushed and refused in `records` (across calls) and the report.
fn push(
    store: &mut Store,
    transport: &mut dyn Transport,
    progress: &dyn Progress,
    report: &mut SyncReport,
    (pushed_records, refused_records): &mut (HashSet<Uuid>, HashSet<Uuid>),
) -> Result<()> {
    let total = store.pending_count()?;
    progress.progress("push", 0, total);
    // Each round settles a batch; a batch only restamped is pushed again (bounded, in case a
    // server keeps refusing).
    // Cut smaller whenever the server answers that a push is too large (its limit may be set
    // below the default) or a push keeps running out of time (a slow link, or a server slow to
    // answer): the same changes go again in smaller pushes.
    let mut max_bytes = PUSH_BYTES;
    // Changes per push: what every server takes, until this one says how many it takes.
    let mut limit = transport.push_limit().min(FIRST_PUSH_CHANGES);
    // Set once a push above that was refused as too many changes (a node of an older version
    // behind the same address, while a cluster is upgraded node by node): kept to what every
    // server takes for the rest of the sync, whatever a newer node says.
    let mut capped = false;
    // The batch already read (and on its way) while the one before was settled.
    let mut next: Option<Vec<Change>> = None;
    // Once the server answered: what it takes and reads is known, so a batch read ahead is
    // read and encoded as it will go.
    let mut answered = false;
    for _ in 0..10_000 {
        go_on(progress)?;
        let changes = match next.take() {
            Some(changes) => changes,
            None => store.outbox_after(0, limit, max_bytes)?,
        };
        if changes.is_empty() {
            break;
        }
        // While this batch is on its way, the one after it is read and encoded, to go the
        // moment this one is answered all accepted (the server would otherwise wait for it).
        let mut readied = None;
        if answered {
            transport.push_ahead(store, &changes);
            let last = changes.iter().map(|c| c.id.counter).max().unwrap_or(0);
            let following = store.outbox_after(last, limit, max_bytes)?;
            if !following.is_empty() {
                transport.ready_next(store, &following);
                readied = Some((following, limit, max_bytes));
            }
        }
        let answer = match with_retries(transport, store, progress, &mut |t, s| t.push(s, &changes))
        {
            // Too large, or out of the server's time (its body not arrived whole, or its answer
            // not ready; sent again first): smaller pushes.
            Err(Error::Server {
                status: 413 | 408, ..
            }) if divisible(&changes) && max_bytes > LEAST_PUSH_BYTES => {
                max_bytes = smaller(max_bytes, &changes);
                continue;
            }
            // A server (or a proxy before it) refusing a body too large may answer before it
            // has read it and close the connection: the phone then sees the pipe broken while
            // it sends, not the 413. A push that runs out of the phone's own time for a request
            // (`TIMEOUT`, shorter than the server's) once connected — a link too slow to carry
            // it, or a server too slow to answer — times out (a server not found or not
            // reached is `Dns` or `Connect`, and is not cut for). Smaller pushes for both, once
            // retrying the same one failed.
            Err(Error::Network(why))
                if (why.detail.contains("Broken pipe") || why.kind == NetworkKind::Timeout)
                    && divisible(&changes)
                    && max_bytes > LEAST_PUSH_BYTES =>
            {
                max_bytes = smaller(max_bytes, &changes);
                continue;
            }
            Err(Error::Server {
                status: 400,
                code,
                message,
                ..
            }) if code == "bad_request"
                && message.starts_with("changes: at most")
                && changes.len() > FIRST_PUSH_CHANGES =>
            {
                capped = true;
                limit = transport.push_limit().min(FIRST_PUSH_CHANGES);
                continue;
            }
            other => other?,
        };
        answered = true;
        if let (Some(most), false) = (answer.max_changes, capped) {
            limit = transport.push_limit().min(most as usize).max(1);
        }
        // A batch all accepted leaves the outbox as it was for every later change: the next
        // batch goes while this one is settled (the server applies it meanwhile). After a
        // refusal the next is read once this one is settled (a refused change passes on what
        // it replaced to the later changes of its field).
        let all_accepted = answer.results.len() == changes.len()
            && answer
                .results
                .iter()
                .all(|r| r.status == ChangeStatus::Accepted);
        if all_accepted {
            // Read before the answer, under the same limits, it is what a read now gives: the
            // answer took every change, and only settling it (below) changes the outbox, in
            // this batch's rows.
            let following = match readied {
                Some((following, at_limit, at_bytes))
                    if (at_limit, at_bytes) == (limit, max_bytes) =>
                {
                    following
                }
                _ => {
                    let last = changes.iter().map(|c| c.id.counter).max().unwrap_or(0);
                    store.outbox_after(last, limit, max_bytes)?
                }
            };
            if !following.is_empty() {
                if !transport.send_ready(store, &following) {
                    transport.push_ahead(store, &following);
                }
                next = Some(following);
            }
        } else {
            // Settling passes what a refused change replaced on to the later changes of its
            // field: the batch made ready may no longer be what the outbox holds.
            transport.drop_ready();
        }
        let (ahead, settled): (Vec<_>, Vec<_>) = answer.results.into_iter().partition(|r| {
            r.status == ChangeStatus::Refused && r.code.as_deref() == Some(refusal::CLOCK_AHEAD)
        });
        let entity_of: HashMap<u64, Uuid> =
            changes.iter().map(|c| (c.id.counter, c.entity)).collect();
        for r in &settled {
            let records = match r.status {
                ChangeStatus::Accepted => &mut *pushed_records,
                ChangeStatus::Refused => &mut *refused_records,
                ChangeStatus::Unknown => continue,
            };
            records.extend(entity_of.get(&r.counter));
        }
        let (accepted, refused) = store.settle(&settled)?;
        report.pushed += accepted as u64;
        report.refused += refused as u64;
        if !ahead.is_empty() {
            let counters: Vec<u64> = ahead.iter().map(|r| r.counter).collect();
            report.restamped += store.restamp(&counters, answer.server_time_ms)? as u64;
        } else if accepted + refused == 0 {
            // Nothing this round could settle (statuses from a newer server): try next sync.
            break;
        }
        progress.progress("push", report.pushed + report.refused, total);
    }
    report.pushed_records = pushed_records.len() as u64;
    report.refused_records = refused_records.len() as u64;
    Ok(())
}

/// Pulls pages until the device is up to date; returns how many values of its own this phone
/// queued to send again (a server put back from a backup).
fn pull(
    store: &mut Store,
    transport: &mut dyn Transport,
    progress: &dyn Progress,
    report: &mut SyncReport,
) -> Result<u64> {
    let mut started_over = false;
    loop {
        go_on(progress)?;
        let cursor = store.raw_session()?.and_then(|s| s.cursor);
        let page = match with_retries(transport, store, progress, &mut |t, s| {
            t.pull(s, cursor.clone(), PULL_PAGE)
        }) {
            Ok(page) => page,
            // The server took the cursor for none of its own (its keys were replaced, or its
            // database restored from a backup): pull everything from the start, once. What
            // this phone wrote and the server accepted after the backup was taken is not on
            // the server any more, and the phone counts it as sent: once the pull is complete
            // (the server's values merged), it sends again every value of its own that still
            // stands; the server keeps what it holds already, unchanged.
            Err(Error::Server {
                status: 400, code, ..
            }) if code == BAD_CURSOR && cursor.is_some() && !started_over => {
                started_over = true;
                store.forget_cursor()?;
                continue;
            }
            // Unseen for longer than the server keeps deletions for it: what it deleted or
            // moved away meanwhile is compacted, and a pull from the cursor would not say so.
            // Or a village was taken and the cursor cannot say which of its records the phone
            // holds (one signed with a key since retired, or by an earlier server). The phone
            // starts over as a new one (what waits to be pushed stays).
            Err(Error::Server { code, .. })
                if code == CURSOR_EXPIRED && cursor.is_some() && !started_over =>
            {
                started_over = true;
                store.start_over()?;
                report.started_over = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        // The next pages are asked for while this one is applied, and those already here are
        // applied with it. Not after a page that drops records: its cursor is the device's
        // proof to the server that it dropped them, and must not reach the server before the
        // drop is applied.
        let mut pages = vec![page];
        let mut values = pages[0].value_count();
        while let Some(last) = pages.last().filter(|p| p.continues()) {
            let next = last.next_cursor.0.clone();
            transport.prefetch(store, next.clone(), PULL_PAGE);
            if values >= APPLY_VALUES {
                break;
            }
            let Some(page) = transport.fetched(&next) else {
                break;
            };
            values += page.value_count();
            pages.push(page);
        }
        let purged: usize = pages.iter().map(|p| p.purged.len()).sum();
        let more = pages.last().is_some_and(|p| p.more);
        let applied = store.apply_pulls_from(pages, cursor.as_deref(), transport.now_ms())?;
        report.pulled += (applied.applied + applied.unchanged) as u64;
        for news in applied.news {
            if report.news.len() < NEWS_KEPT {
                report.news.push(SyncNews::told(store, news)?);
            } else {
                report.news_complete = false;
            }
        }
        report.purged += purged as u64;
        progress.progress("pull", report.pulled, 0);
        if !more {
            let resent = store.resend_own_if_due()?;
            report.resent += resent;
            return Ok(resent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport that only counts and records the pauses between attempts.
    #[derive(Default)]
    struct Pauses(Vec<Duration>);

    impl Transport for Pauses {
        fn push(&mut self, _: &mut Store, _: &[Change]) -> Result<PushResponse> {
            Err(Error::Network("no link".into()))
        }
        fn pull(&mut self, _: &mut Store, _: Option<String>, _: u32) -> Result<PullResponse> {
            Err(Error::Network("no link".into()))
        }
        fn pause(&mut self, duration: Duration) {
            self.0.push(duration);
        }
    }

    /// A server that takes every change and says how many it takes a push (or, one of before
    /// it said so, nothing); the size of each push is kept.
    struct Takes {
        most: Option<u32>,
        pushes: Vec<usize>,
    }

    impl Transport for Takes {
        fn push(&mut self, _: &mut Store, changes: &[Change]) -> Result<PushResponse> {
            self.pushes.push(changes.len());
            let results = changes
                .iter()
                .map(|c| baylink_sync::wire::ChangeResult::accepted(c.id.counter))
                .collect();
            Ok(PushResponse {
                server_time_ms: now_ms(),
                results,
                max_changes: self.most,
                extra: Default::default(),
            })
        }
        fn pull(&mut self, _: &mut Store, _: Option<String>, _: u32) -> Result<PullResponse> {
            Err(Error::Network("pushes only".into()))
        }
    }

    /// Pushes everything the store holds through `transport`, and checks nothing is left.
    fn push_all(store: &mut Store, transport: &mut dyn Transport) {
        let mut report = SyncReport::default();
        let mut records = (HashSet::new(), HashSet::new());
        let quiet = |_: &str, _, _| {};
        push(store, transport, &quiet, &mut report, &mut records).unwrap();
        assert_eq!(store.pending_count().unwrap(), 0);
    }

    #[test]
    fn pushes_keep_to_what_every_server_takes_until_the_server_says_it_takes_more() {
        // 2,000 persons captured offline, about 20,000 changes.
        let captured = || {
            let mut store = Store::open_in_memory().unwrap();
            let persons: Vec<baylink_domain::validate::Input> = (0..2_000u64)
                .map(|n| {
                    [
                        ("village", "441303006001".to_owned()),
                        ("id_number", baylink_domain::synthetic::resident_id(n)),
                        ("name", baylink_domain::synthetic::name(n)),
                        ("occupation", "渔民".to_owned()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
                })
                .collect();
            store
                .capture_many(baylink_domain::EntityKind::Person, &persons)
                .unwrap();
            store
        };
        let pending = captured().pending_count().unwrap() as usize;
        assert!(pending > 3 * FIRST_PUSH_CHANGES, "{pending} changes");
        let pushed = |most: Option<u32>| {
            let mut store = captured();
            let mut server = Takes {
                most,
                pushes: Vec::new(),
            };
            push_all(&mut store, &mut server);
            assert_eq!(server.pushes.iter().sum::<usize>(), pending);
            server.pushes
        };
        // A server of before the limit was told: never more than every server takes.
        let older = pushed(None);
        assert!(older.iter().all(|&n| n <= FIRST_PUSH_CHANGES), "{older:?}");
        // Told more after the first answer: fewer, larger pushes, none above the phone's own.
        let newer = pushed(Some(1_000_000));
        assert!(newer[0] <= FIRST_PUSH_CHANGES, "{newer:?}");
        assert!(newer[1] > FIRST_PUSH_CHANGES, "{newer:?}");
        assert!(newer.iter().all(|&n| n <= PUSH_BATCH), "{newer:?}");
        assert!(newer.len() < older.len(), "{newer:?} {older:?}");
        // Told less (a server set lower): no push above it after the first answer.
        let lower = pushed(Some(1_000));
        assert!(lower[1..].iter().all(|&n| n <= 1_000), "{lower:?}");

        // Two nodes of two versions behind one address, answering in turn: the older refuses a
        // push above what it takes; the sync keeps to that and completes.
        let mut store = captured();
        let mut nodes = TwoVersions {
            turn: 0,
            pushes: Vec::new(),
        };
        push_all(&mut store, &mut nodes);
        assert_eq!(nodes.pushes.iter().sum::<usize>(), pending);
        assert!(
            nodes.pushes.iter().all(|&n| n <= FIRST_PUSH_CHANGES),
            "{:?}",
            nodes.pushes
        );
    }

    /// A server behind a link so slow that a push of more than `most_bytes` (as the phone counts
    /// them) does not arrive before a time runs out (`timeout`: the server's 408, or the
    /// phone's own); smaller ones are taken whole.
    struct SlowLink {
        most_bytes: usize,
        timeout: fn() -> Error,
        pushes: Vec<usize>,
        timed_out: u32,
        pauses: u32,
    }

    impl Transport for SlowLink {
        fn push(&mut self, store: &mut Store, changes: &[Change]) -> Result<PushResponse> {
            let bytes: usize = changes
                .iter()
                .map(baylink_sync::wire::approximate_bytes)
                .sum();
            if bytes > self.most_bytes {
                self.timed_out += 1;
                return Err((self.timeout)());
            }
            self.pushes.push(changes.len());
            Takes {
                most: None,
                pushes: Vec::new(),
            }
            .push(store, changes)
        }
        fn pull(&mut self, _: &mut Store, _: Option<String>, _: u32) -> Result<PullResponse> {
            Err(Error::Network("pushes only".into()))
        }
        fn pause(&mut self, _: Duration) {
            self.pauses += 1;
        }
    }

    #[test]
    fn a_push_too_slow_to_arrive_goes_again_then_in_smaller_pushes_until_all_arrive() {
        let pending = persons(300).0.pending_count().unwrap() as usize;
        let server: fn() -> Error = || Error::Server {
            status: 408,
            code: "timeout".into(),
            message: "the request did not arrive in time".into(),
            retry_after: None,
        };
        let phone: fn() -> Error = || {
            Error::Network(crate::error::Network::new(
                NetworkKind::Timeout,
                "timed out reading response",
            ))
        };
        for timeout in [server, phone] {
            let (mut store, _) = persons(300);
            let mut link = SlowLink {
                most_bytes: 64 * 1024,
                timeout,
                pushes: Vec::new(),
                timed_out: 0,
                pauses: 0,
            };
            push_all(&mut store, &mut link);
            assert_eq!(link.pushes.iter().sum::<usize>(), pending);
            assert!(link.pushes.len() > 1, "{:?}", link.pushes);
            // Each size sent again as a failure that may pass (after a pause) before a smaller
            // one, a quarter of the one that failed: three cuts from this push's bytes to fit
            // 64 KB, not four from the 6 MiB a push may hold.
            assert!(link.timed_out >= ATTEMPTS, "{}", link.timed_out);
            assert!(link.timed_out <= 3 * ATTEMPTS, "{}", link.timed_out);
            assert!(link.pauses >= ATTEMPTS - 1, "{}", link.pauses);
        }
        // One record's changes cannot go in parts: tried as often as any request, never cut,
        // and the sync ends with the failure (nothing lost: it waits in the outbox).
        let (mut store, _) = persons(1);
        let mut link = SlowLink {
            most_bytes: 100,
            timeout: server,
            pushes: Vec::new(),
            timed_out: 0,
            pauses: 0,
        };
        let mut report = SyncReport::default();
        let mut records = (HashSet::new(), HashSet::new());
        let quiet = |_: &str, _, _| {};
        let ended = push(&mut store, &mut link, &quiet, &mut report, &mut records);
        assert!(
            matches!(ended, Err(Error::Server { status: 408, .. })),
            "{ended:?}"
        );
        assert_eq!(link.timed_out, ATTEMPTS);
        assert!(store.pending_count().unwrap() > 0);
    }

    /// A server reached as HTTP is, with a push sent ahead and one made ready, and pushes of at
    /// most `limit` changes. It refuses the first change of `refuse` (a record and field) it is
    /// sent, and answers its `lower_at`-th push saying it takes 200 changes a push; it keeps what
    /// the phone did, in order.
    struct Pipeline {
        limit: usize,
        refuse: Option<(Uuid, &'static str)>,
        lower_at: usize,
        /// The counters of the push on its way.
        on_its_way: Option<Vec<u64>>,
        /// The batch made ready, as it was read.
        ready: Option<Vec<Change>>,
        /// Every batch made ready, as it was read.
        readied: Vec<Vec<Change>>,
        /// Each push answered.
        answered: Vec<Vec<Change>>,
        /// What happened, in order: `ready N`, `sent N` (made ready, then sent), `ahead N`,
        /// `answer N` (N: the batch's first counter).
        log: Vec<String>,
    }

    impl Pipeline {
        fn new(limit: usize, refuse: Option<(Uuid, &'static str)>, lower_at: usize) -> Self {
            Pipeline {
                limit,
                refuse,
                lower_at,
                on_its_way: None,
                ready: None,
                readied: Vec::new(),
                answered: Vec::new(),
                log: Vec::new(),
            }
        }
    }

    impl Transport for Pipeline {
        fn push(&mut self, _: &mut Store, changes: &[Change]) -> Result<PushResponse> {
            let counters: Vec<u64> = changes.iter().map(|c| c.id.counter).collect();
            if let Some(way) = self.on_its_way.take() {
                assert_eq!(way, counters, "answered a push not the one on its way");
            }
            self.log.push(format!("answer {}", counters[0]));
            self.answered.push(changes.to_vec());
            let nth = self.answered.len();
            let refuse = self.refuse.take();
            let refused = |c: &Change| {
                refuse.is_some_and(|(entity, field)| c.entity == entity && c.field == field)
            };
            if !changes.iter().any(refused) {
                self.refuse = refuse;
            }
            let results = changes
                .iter()
                .map(|c| {
                    let mut result = baylink_sync::wire::ChangeResult::accepted(c.id.counter);
                    if refused(c) {
                        result.status = ChangeStatus::Refused;
                        result.code = Some(refusal::INVALID.to_owned());
                    }
                    result
                })
                .collect();
            Ok(PushResponse {
                server_time_ms: now_ms(),
                results,
                max_changes: (nth == self.lower_at).then_some(200),
                extra: Default::default(),
            })
        }
        fn pull(&mut self, _: &mut Store, _: Option<String>, _: u32) -> Result<PullResponse> {
            Err(Error::Network("pushes only".into()))
        }
        fn push_ahead(&mut self, _: &Store, changes: &[Change]) {
            if self.on_its_way.is_none() {
                self.log.push(format!("ahead {}", changes[0].id.counter));
                self.on_its_way = Some(changes.iter().map(|c| c.id.counter).collect());
            }
        }
        fn ready_next(&mut self, _: &Store, changes: &[Change]) {
            self.log.push(format!("ready {}", changes[0].id.counter));
            self.ready = Some(changes.to_vec());
            self.readied.push(changes.to_vec());
        }
        fn send_ready(&mut self, _: &Store, changes: &[Change]) -> bool {
            let made = self.ready.take();
            if made.as_deref() != Some(changes) || self.on_its_way.is_some() {
                return false;
            }
            self.log.push(format!("sent {}", changes[0].id.counter));
            self.on_its_way = Some(changes.iter().map(|c| c.id.counter).collect());
            true
        }
        fn drop_ready(&mut self) {
            if let Some(ready) = self.ready.take() {
                self.log.push(format!("drop {}", ready[0].id.counter));
            }
        }
        fn push_limit(&self) -> usize {
            self.limit
        }
    }

    /// A phone holding `count` persons captured offline, and their ids.
    fn persons(count: u64) -> (Store, Vec<Uuid>) {
        let mut store = Store::open_in_memory().unwrap();
        let persons: Vec<baylink_domain::validate::Input> = (0..count)
            .map(|n| {
                [
                    ("village", "441303006001".to_owned()),
                    ("id_number", baylink_domain::synthetic::resident_id(n)),
                    ("name", baylink_domain::synthetic::name(n)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
            })
            .collect();
        let ids = store
            .capture_many(baylink_domain::EntityKind::Person, &persons)
            .unwrap();
        (store, ids)
    }

    /// Pushes everything through `server`; the sync's report.
    fn push_through(store: &mut Store, server: &mut Pipeline) -> SyncReport {
        let mut report = SyncReport::default();
        let mut records = (HashSet::new(), HashSet::new());
        push(
            store,
            server,
            &|_: &str, _, _| {},
            &mut report,
            &mut records,
        )
        .unwrap();
        report
    }

    #[test]
    fn the_next_push_is_made_ready_while_one_is_on_its_way_and_goes_only_after_every_change_was_accepted()
     {
        // Pushes of 300 changes; the fourth answer lowers the limit to 200.
        let (mut store, _) = persons(150);
        let pending = store.pending_count().unwrap() as usize;
        let mut server = Pipeline::new(300, None, 4);
        let report = push_through(&mut store, &mut server);
        let (log, pushes) = (&server.log, &server.answered);
        assert_eq!(report.pushed as usize, pending);
        let sent: Vec<u64> = pushes.iter().flatten().map(|c| c.id.counter).collect();
        assert!(sent.windows(2).all(|w| w[0] < w[1]), "{log:?}");
        assert_eq!(sent.len(), pending, "{log:?}");
        assert!(pushes.len() >= 5, "{log:?}");
        // Nothing is made ready before the first answer (what the server takes and reads is
        // learned from it).
        let at = |entry: &str| log.iter().position(|l| l == entry);
        let first = at(&format!("answer {}", pushes[0][0].id.counter)).unwrap();
        assert!(
            !log[..first].iter().any(|l| l.starts_with("ready")),
            "{log:?}"
        );
        for (i, batch) in pushes.iter().enumerate().skip(1) {
            let Some(next) = pushes.get(i + 1) else {
                break;
            };
            let answer = at(&format!("answer {}", batch[0].id.counter)).unwrap();
            let ready = at(&format!("ready {}", next[0].id.counter));
            let sent = at(&format!("sent {}", next[0].id.counter));
            if i + 1 == server.lower_at {
                // Read under the limit the answer lowered: the batch made ready did not go.
                assert_eq!(sent, None, "{log:?}");
                assert!(next.len() <= 200, "{log:?}");
            } else {
                // Made ready before the answer to the one before, sent after it.
                assert!(ready.is_some_and(|r| r < answer), "{log:?}");
                assert!(sent.is_some_and(|s| s > answer), "{log:?}");
            }
        }
        assert!(
            pushes[server.lower_at..].iter().all(|p| p.len() <= 200),
            "{log:?}"
        );
    }

    #[test]
    fn a_push_made_ready_is_not_sent_after_a_refusal_changed_what_it_holds() {
        // Pushes of at most 10 changes (a person's capture, larger, goes alone), and the last
        // person renamed since: that rename, a push of its own, is made ready while her capture
        // is on its way, based on the name captured. The server refuses the captured name; the
        // phone passes its base on to the rename, so the batch made ready is no longer what the
        // outbox holds.
        let (mut store, ids) = persons(20);
        let renamed = ids[19];
        let input = [("name".to_owned(), "陈新".to_owned())]
            .into_iter()
            .collect();
        store.edit(renamed, &input).unwrap();
        let pending = store.pending_count().unwrap() as usize;
        let mut server = Pipeline::new(10, Some((renamed, "name")), 0);
        let report = push_through(&mut store, &mut server);
        let (log, pushes) = (&server.log, &server.answered);
        assert_eq!((report.pushed as usize, report.refused), (pending - 1, 1));
        let of = |batch: &[Change]| {
            batch
                .iter()
                .filter(|c| c.entity == renamed && c.field == "name")
                .cloned()
                .collect::<Vec<_>>()
        };
        let [.., capture, rename] = pushes.as_slice() else {
            panic!("{log:?}");
        };
        let (captured, rename) = (&of(capture)[0], &of(rename)[0]);
        assert_eq!(rename.value, "陈新");
        // The rename was made ready (while the capture was on its way) based on the name
        // captured...
        let readied = server
            .readied
            .iter()
            .flatten()
            .find(|c| c.id.counter == rename.id.counter)
            .unwrap();
        assert_eq!(readied.base, Some(captured.stamp), "{log:?}");
        // ... and went based on what the refused capture replaced (nothing), read again.
        assert_eq!(rename.base, None, "{rename:?}");
        assert_eq!(
            log.last().map(String::as_str),
            Some(format!("answer {}", rename.id.counter).as_str())
        );
        // Dropped on the refusal's answer, then read again and begun the ordinary way.
        let refused = at(log, &format!("answer {}", capture[0].id.counter)).unwrap();
        let dropped = at(log, &format!("drop {}", rename.id.counter));
        let begun = at(log, &format!("ahead {}", rename.id.counter));
        assert!(dropped.is_some_and(|d| d > refused), "{log:?}");
        assert!(begun.is_some_and(|b| Some(b) > dropped), "{log:?}");
        assert!(
            at(log, &format!("sent {}", rename.id.counter)).is_none(),
            "{log:?}"
        );
    }

    /// Answers one push on `listener` with every change accepted; the request's
    /// `Authorization` header.
    fn answer_one_push(listener: &std::net::TcpListener) -> String {
        use std::io::{BufRead, Read, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let (mut authorization, mut length) = (String::new(), 0usize);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().unwrap(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let request: baylink_sync::wire::PushRequest = serde_json::from_slice(&body).unwrap();
        let results = request
            .into_changes()
            .iter()
            .map(|c| baylink_sync::wire::ChangeResult::accepted(c.id.counter))
            .collect();
        let answer = serde_json::to_string(&PushResponse {
            server_time_ms: now_ms(),
            results,
            max_changes: None,
            extra: Default::default(),
        })
        .unwrap();
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        authorization
    }

    #[test]
    fn a_push_made_ready_goes_only_as_it_was_read_and_with_the_token_of_the_moment() {
        let (mut store, _) = persons(3);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let signed_in = |token: &str| db::Session {
            server: server.clone(),
            username: "o006001".into(),
            display_name: "o006001".into(),
            villages: vec!["441303006001".into()],
            village_names: Default::default(),
            access_token: Some(token.into()),
            refresh_token: None,
            cursor: None,
            last_sync_ms: None,
            device_key: None,
        };
        store.save_raw_session(&signed_in("before")).unwrap();
        let changes = store.outbox_after(0, 100, PUSH_BYTES).unwrap();
        let mut http = Http::default();
        // Not as it was read (a refusal passed a base on since): not sent.
        http.ready_next(&store, &changes);
        let mut based = changes.clone();
        based[0].base = Some(based[0].stamp);
        assert!(!http.send_ready(&store, &based));
        // Dropped: not sent.
        http.ready_next(&store, &changes);
        http.drop_ready();
        assert!(!http.send_ready(&store, &changes));
        // As read: sent, with the token the session holds when it goes (refreshed meanwhile).
        http.ready_next(&store, &changes);
        store.save_raw_session(&signed_in("after")).unwrap();
        let answering = std::thread::spawn(move || answer_one_push(&listener));
        assert!(http.send_ready(&store, &changes));
        let answer = http.push(&mut store, &changes).unwrap();
        assert_eq!(answer.results.len(), changes.len());
        assert_eq!(answering.join().unwrap(), "Bearer after");
    }

    /// Where `entry` stands in the log.
    fn at(log: &[String], entry: &str) -> Option<usize> {
        log.iter().position(|l| l == entry)
    }

    /// A new node (it takes 20,000 changes a push and says so) and an old one (it takes 5,000,
    /// says nothing, and refuses more as a bad request) answering pushes in turn.
    struct TwoVersions {
        turn: usize,
        pushes: Vec<usize>,
    }

    impl Transport for TwoVersions {
        fn push(&mut self, store: &mut Store, changes: &[Change]) -> Result<PushResponse> {
            self.turn += 1;
            let old = self.turn.is_multiple_of(2);
            if old && changes.len() > FIRST_PUSH_CHANGES {
                return Err(Error::Server {
                    status: 400,
                    code: "bad_request".into(),
                    message: format!("changes: at most {FIRST_PUSH_CHANGES} per push"),
                    retry_after: None,
                });
            }
            let mut node = Takes {
                most: (!old).then_some(20_000),
                pushes: Vec::new(),
            };
            let answer = node.push(store, changes)?;
            self.pushes.push(changes.len());
            Ok(answer)
        }
        fn pull(&mut self, _: &mut Store, _: Option<String>, _: u32) -> Result<PullResponse> {
            Err(Error::Network("pushes only".into()))
        }
    }

    fn busy(retry_after: Option<u64>) -> Error {
        Error::Server {
            status: 503,
            code: "busy".into(),
            message: String::new(),
            retry_after,
        }
    }

    #[test]
    fn retries_back_off_with_jitter_and_wait_as_long_as_the_server_asks() {
        for attempt in 1..=3u32 {
            let base = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            let waits: Vec<Duration> = (0..50).map(|_| backoff(attempt, None)).collect();
            assert!(
                waits.iter().all(|w| *w >= base / 2 && *w <= base * 3 / 2),
                "{waits:?}"
            );
            assert!(waits.iter().any(|w| *w != waits[0]), "jittered: {waits:?}");
        }
        assert!(backoff(1, Some(Duration::from_secs(9))) >= Duration::from_secs(9));

        let mut store = Store::open_in_memory().unwrap();
        let mut pauses = Pauses::default();
        let mut calls = 0;
        let asked = with_retries(&mut pauses, &mut store, &|_: &str, _, _| {}, &mut |_, _| {
            calls += 1;
            Err::<(), _>(busy(Some(20)))
        });
        assert!(asked.is_err());
        assert_eq!(calls, ATTEMPTS);
        let waited: Duration = pauses.0.iter().sum();
        assert!(
            waited >= Duration::from_secs(20 * u64::from(ATTEMPTS - 1)),
            "{waited:?}"
        );
        assert!(
            pauses.0.iter().all(|p| *p <= WAIT_STEP),
            "waits in short steps"
        );

        // Cancelled while it waits: it stops within a step.
        struct CancelAfter(std::cell::Cell<u32>);
        impl Progress for CancelAfter {
            fn progress(&self, _: &str, _: u64, _: u64) {}
            fn cancelled(&self) -> bool {
                self.0.set(self.0.get() + 1);
                self.0.get() > 3
            }
        }
        let mut pauses = Pauses::default();
        let cancelled = with_retries(
            &mut pauses,
            &mut store,
            &CancelAfter(std::cell::Cell::new(0)),
            &mut |_, _| Err::<(), _>(busy(Some(50))),
        );
        assert!(matches!(cancelled, Err(Error::Cancelled)), "{cancelled:?}");
        assert!(pauses.0.iter().sum::<Duration>() <= WAIT_STEP * 3);

        // Asked to wait longer than a sync waits: it ends at once, for the next sync to try.
        let (mut pauses, mut calls) = (Pauses::default(), 0);
        let too_long = with_retries(&mut pauses, &mut store, &|_: &str, _, _| {}, &mut |_, _| {
            calls += 1;
            Err::<(), _>(busy(Some(3_600)))
        });
        assert!(matches!(too_long, Err(Error::Server { status: 503, .. })));
        assert_eq!((calls, pauses.0.len()), (1, 0));
    }

    /// A server that finds the phone's cursor expired, then sends a pull from the start that
    /// brings nothing (what the phone holds left its villages, the drops compacted away).
    struct Expires;

    impl Transport for Expires {
        fn push(&mut self, _: &mut Store, _: &[Change]) -> Result<PushResponse> {
            Err(Error::Network("nothing to push here".into()))
        }
        fn pull(&mut self, _: &mut Store, cursor: Option<String>, _: u32) -> Result<PullResponse> {
            match cursor {
                Some(_) => Err(Error::Server {
                    status: 410,
                    code: CURSOR_EXPIRED.to_owned(),
                    message: "cursor: expired".into(),
                    retry_after: None,
                }),
                None => Ok(PullResponse {
                    server_time_ms: now_ms(),
                    values: Vec::new(),
                    records: Vec::new(),
                    purged: Vec::new(),
                    next_cursor: baylink_sync::wire::Cursor("s9:441303006001".into()),
                    more: false,
                    villages: None,
                    watch_hits: Vec::new(),
                    extra: Default::default(),
                }),
            }
        }
    }

    #[test]
    fn a_refusal_of_a_record_starting_over_drops_is_kept_for_the_officer_to_see() {
        let mut store = Store::open_in_memory().unwrap();
        let fields = |pairs: &[(&str, &str)]| -> baylink_domain::validate::Input {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let id = store
            .capture(
                baylink_domain::EntityKind::Person,
                &fields(&[
                    ("village", "441303006001"),
                    ("id_number", &baylink_domain::synthetic::resident_id(7)),
                    ("name", "王芳"),
                ]),
            )
            .unwrap();
        let answer = |store: &Store,
                      status: ChangeStatus|
         -> Vec<baylink_sync::wire::ChangeResult> {
            store
                .outbox(100)
                .unwrap()
                .iter()
                .map(|c| baylink_sync::wire::ChangeResult {
                    counter: c.id.counter,
                    status,
                    code: (status == ChangeStatus::Refused).then(|| "out_of_scope".to_owned()),
                    message: (status == ChangeStatus::Refused).then(|| "out of scope".to_owned()),
                    extra: Default::default(),
                })
                .collect()
        };
        let taken = answer(&store, ChangeStatus::Accepted);
        store.settle(&taken).unwrap();
        // A cursor, from a pull long ago.
        let mut none = Expires;
        let page = none.pull(&mut store, None, 10).unwrap();
        store.apply_pulls_from(vec![page], None, now_ms()).unwrap();
        // Her edit is refused (she left the officer's villages meanwhile).
        store.edit(id, &fields(&[("name", "王小芳")])).unwrap();
        let refused = answer(&store, ChangeStatus::Refused);
        store.settle(&refused).unwrap();
        let quiet = |_: &str, _, _| {};
        let report = sync_with(&mut store, &mut Expires, &quiet).unwrap();
        assert!(report.started_over, "{report:?}");
        // The pull from the start did not bring her: she goes, the refusal stays to be seen.
        assert!(store.get(id).unwrap().is_none());
        let seen: Vec<String> = store
            .refused()
            .unwrap()
            .into_iter()
            .map(|r| r.field)
            .collect();
        assert_eq!(seen, ["name"]);
    }
}
