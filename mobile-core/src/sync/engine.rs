//! The sync engine: push the outbox in batches (restamping what the server found stamped ahead),
//! then pull pages until the device is up to date. Every step is applied in its own transaction,
//! so a cut connection or a crash resumes where it stopped, with nothing lost or applied twice.
//! The server is reached through a [`Transport`]: HTTP in the app, an in-process server with
//! injected faults in the simulation tests. A request that fails on the way (no signal, a cut
//! connection, a 5xx) is retried a few times with growing pauses before the sync gives up.

use std::time::Duration;

use baylink_sync::Change;
use baylink_sync::wire::{ChangeStatus, PullResponse, PushResponse, refusal};

use crate::db;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::sync::client::{Client, SessionTokens};

/// Changes per push.
const PUSH_BATCH: usize = 500;
/// Values per pull page: the most the server sends (fewer transactions on the phone).
const PULL_PAGE: u32 = 5_000;
/// Request timeout.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per request before a sync gives up (the next sync resumes where it stopped).
const ATTEMPTS: u32 = 4;
/// Pause before the first retry; each further retry waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

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
    /// Starts fetching the page after `cursor` while the device applies the current one, if
    /// this transport can; a `pull` of that cursor then takes its answer. Does nothing by
    /// default.
    fn prefetch(&mut self, store: &Store, cursor: String, limit: u32) {
        let _ = (store, cursor, limit);
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

/// A page being fetched in the background: its cursor and the request's thread.
type Prefetch = (String, std::thread::JoinHandle<Result<PullResponse>>);

/// The server over HTTP, with the session's tokens (refreshed once when expired) and a time
/// limit per request, after which a stalled request counts as failed (and is retried). While
/// the device applies a page, the next one is already on its way.
pub struct Http {
    timeout: Duration,
    ahead: Option<Prefetch>,
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
        }
    }
}

impl Transport for Http {
    fn push(&mut self, store: &mut Store, changes: &[Change]) -> Result<PushResponse> {
        let device = store.node_id();
        authed(store, self.timeout, &|client, token| {
            client.push(token, device, changes.to_vec())
        })
    }

    fn pull(
        &mut self,
        store: &mut Store,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<PullResponse> {
        if let Some((ahead, request)) = self.ahead.take() {
            if cursor.as_deref() == Some(ahead.as_str()) {
                // Any failure (an expired token included) is left to the ordinary path below.
                if let Ok(Ok(page)) = request.join() {
                    return Ok(page);
                }
            }
        }
        authed(store, self.timeout, &|client, token| {
            client.pull(token, cursor.clone(), limit)
        })
    }

    fn prefetch(&mut self, store: &Store, cursor: String, limit: u32) {
        let Ok(Some(session)) = store.raw_session() else {
            return;
        };
        let Some(token) = session.access_token else {
            return;
        };
        let (timeout, next) = (self.timeout, cursor.clone());
        let request = std::thread::Builder::new()
            .name("pull-ahead".into())
            .spawn(move || Client::new(&session.server, timeout).pull(&token, Some(next), limit));
        if let Ok(request) = request {
            self.ahead = Some((cursor, request));
        }
    }
}

/// Whether a failed request may succeed if sent again: the network, or the server failing
/// rather than refusing.
fn transient(error: &Error) -> bool {
    match error {
        Error::Network(_) => true,
        Error::Server { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// Runs a request, retrying transient failures with exponential backoff.
fn with_retries<T>(
    transport: &mut dyn Transport,
    store: &mut Store,
    call: &mut dyn FnMut(&mut dyn Transport, &mut Store) -> Result<T>,
) -> Result<T> {
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match call(transport, store) {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                transport.pause(pause);
                pause *= 2;
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
    /// Changes restamped after a clock correction.
    pub restamped: u64,
    /// Values received.
    pub pulled: u64,
    /// Records removed because they left the officer's villages.
    pub purged: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_session(
    server: &str,
    tokens: &SessionTokens,
    cursor: Option<String>,
    last_sync_ms: Option<u64>,
) -> db::Session {
    db::Session {
        server: server.to_owned(),
        username: tokens.account.username.clone(),
        display_name: tokens.account.display_name.clone(),
        villages: tokens.villages.clone(),
        access_token: Some(tokens.access_token.clone()),
        refresh_token: Some(tokens.refresh_token.clone()),
        cursor,
        last_sync_ms,
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
    let client = Client::new(server, TIMEOUT);
    let tokens = guard(
        store,
        client.login(username, password, store.node_id(), device_name),
    )?;
    store.begin_session(
        &to_session(server, &tokens, None, None),
        tokens.server_time_ms,
        now_ms(),
    )
}

/// Ends the session here and on the server (when reachable); local data stays.
pub fn logout(store: &mut Store) -> Result<()> {
    if let Some(mut session) = store.raw_session()? {
        if let Some(token) = session.access_token.as_deref() {
            // The server may be out of reach: the local session ends regardless.
            let _ = Client::new(&session.server, TIMEOUT).logout(token);
        }
        session.access_token = None;
        session.refresh_token = None;
        store.save_raw_session(&session)?;
    }
    Ok(())
}

/// A revoked device wipes itself before reporting the error.
fn guard<T>(store: &mut Store, result: Result<T>) -> Result<T> {
    if let Err(Error::Server { code, .. }) = &result {
        if code == "device_revoked" {
            store.wipe()?;
            return Err(Error::Revoked);
        }
    }
    result
}

/// Calls the server with the access token, refreshing it once if it expired.
fn authed<T>(
    store: &mut Store,
    timeout: Duration,
    call: &dyn Fn(&Client, &str) -> Result<T>,
) -> Result<T> {
    let session = store.raw_session()?.ok_or(Error::NotSignedIn)?;
    let client = Client::new(&session.server, timeout);
    let token = session.access_token.clone().ok_or(Error::NotSignedIn)?;
    match call(&client, &token) {
        Err(Error::Server {
            status: 401, code, ..
        }) if code == "token_expired" => {
            let refresh = session.refresh_token.clone().ok_or(Error::NotSignedIn)?;
            let tokens = guard(store, client.refresh(store.node_id(), &refresh))?;
            let renewed = to_session(
                &session.server,
                &tokens,
                session.cursor.clone(),
                session.last_sync_ms,
            );
            store.save_raw_session(&renewed)?;
            guard(store, call(&client, &tokens.access_token))
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
    let mut report = SyncReport::default();
    let total = store.pending_count()?;
    progress.progress("push", 0, total);
    // Each round settles a batch; a batch only restamped is pushed again (bounded, in case a
    // server keeps refusing).
    for _ in 0..10_000 {
        let changes = store.outbox(PUSH_BATCH)?;
        if changes.is_empty() {
            break;
        }
        let answer = with_retries(transport, store, &mut |t, s| t.push(s, &changes))?;
        let (ahead, settled): (Vec<_>, Vec<_>) = answer.results.into_iter().partition(|r| {
            r.status == ChangeStatus::Refused && r.code.as_deref() == Some(refusal::CLOCK_AHEAD)
        });
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
    loop {
        let cursor = store.raw_session()?.and_then(|s| s.cursor);
        let page = with_retries(transport, store, &mut |t, s| {
            t.pull(s, cursor.clone(), PULL_PAGE)
        })?;
        // The next page is asked for while this one is applied. Not after a page that drops
        // records: its cursor is the device's proof to the server that it dropped them, and it
        // must not reach the server before the drop is applied.
        if page.more && page.purged.is_empty() {
            transport.prefetch(store, page.next_cursor.0.clone(), PULL_PAGE);
        }
        let applied = store.apply_pull(&page, transport.now_ms())?;
        report.pulled += (applied.applied + applied.unchanged) as u64;
        report.purged += page.purged.len() as u64;
        progress.progress("pull", report.pulled, 0);
        if !page.more {
            break;
        }
    }
    store.finish_sync(transport.now_ms())?;
    Ok(report)
}
