//! `/api/v1/sync`: push (a batch of changes, each accepted or refused, durable before the
//! answer) and pull (pages of current values in the caller's villages after a cursor).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use baylink_sync::wire::{
    GROUPED_PULL, PAGE_STREAM, PROTOCOL_VERSION, PullRequest, PullResponse, PushRequest,
    PushResponse, group,
};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

use crate::error::AppError;
use crate::extract::{AppJson, AuthDevice};
use crate::pushing::PER_ACCOUNT;
use crate::state::AppState;
use crate::store::caller::{self, Caller};
use crate::store::now_ms;
use crate::store::pull::parse_cursor;
use baylink_sync::Change;
use baylink_sync::cursor::Position;
use tracing::Instrument;

/// Most values in one pull page.
pub const MAX_BATCH: usize = 5_000;
/// Most changes in one push, told to phones in each answer. Each push is one durable commit (or
/// shares one with the pushes waiting beside it, `store::group`) that rewrites every index page
/// its new records touch: 20,000 changes (about 1,300 persons)
/// a push made the evening's upload about a seventh quicker than 5,000, and the server wrote a
/// third less (docs/performance.md). The body limit (`max_body_bytes`) bounds a push's size
/// either way.
pub const MAX_PUSH: usize = 20_000;

/// The longest kind or field name a change may carry (every one is a short word).
pub const MAX_NAME_BYTES: usize = 64;

/// The push route: the one whose bodies are megabytes (`app` gives it the configured body limit).
pub fn push_router() -> Router<AppState> {
    Router::new().route("/api/v1/sync/push", post(push))
}

/// The pull route.
pub fn pull_router() -> Router<AppState> {
    Router::new().route("/api/v1/sync/pull", post(pull))
}

fn check_protocol(version: u32) -> Result<(), AppError> {
    if version == 0 || version > PROTOCOL_VERSION {
        return Err(AppError::BadRequest(format!(
            "protocol: version {version} is not spoken here (1 to {PROTOCOL_VERSION})"
        )));
    }
    Ok(())
}

/// The changes of a push's body, once its envelope holds: a protocol this server speaks, the
/// caller's own device, at most [`MAX_PUSH`] changes, every change of that device, no kind or
/// field name longer than [`MAX_NAME_BYTES`]. What the push route applies.
pub fn push_changes(req: PushRequest, caller: &Caller) -> Result<Vec<Change>, AppError> {
    check_protocol(req.protocol)?;
    if req.device.to_string() != caller.device {
        return Err(AppError::Forbidden(
            "device: a device pushes its own changes only".into(),
        ));
    }
    if req.len() > MAX_PUSH {
        return Err(AppError::BadRequest(format!(
            "changes: at most {MAX_PUSH} per push"
        )));
    }
    // An action's kind is copied into each of its changes (a long one would cost the server
    // its length times the action's fields, which no body limit sees), and a refusal quotes
    // kinds and field names back. Every one is a short word.
    let long = |name: &str| name.len() > MAX_NAME_BYTES;
    if req
        .actions
        .iter()
        .any(|a| long(&a.kind) || a.fields.iter().any(|f| long(&f.field)))
    {
        return Err(AppError::BadRequest(format!(
            "actions: a kind or field name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if req.changes.iter().any(|c| long(&c.kind) || long(&c.field)) {
        return Err(AppError::BadRequest(format!(
            "changes: a kind or field name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if let Some(c) = req.changes.iter().find(|c| c.id.device != req.device) {
        return Err(AppError::BadRequest(format!(
            "changes: {} belongs to another device",
            c.id
        )));
    }
    // Actions are read as the same changes, of the pushing device.
    Ok(req.into_changes())
}

async fn push(
    State(state): State<AppState>,
    AuthDevice(caller): AuthDevice,
    request: Request,
) -> Result<Json<PushResponse>, AppError> {
    // Counted before the body is read, and held until the push is applied.
    let Some(slot) = state.pushing.enter(caller.account) else {
        return Err(AppError::Busy(format!(
            "本账号已有 {PER_ACCOUNT} 个上传在进行，请稍后再试 / this account has {PER_ACCOUNT} \
             pushes under way: try again once one is answered"
        )));
    };
    let AppJson(req) = AppJson::<PushRequest>::from_request(request, &state).await?;
    let changes = push_changes(req, &caller)?;
    let max_ahead = state.config.max_clock_ahead_ms;
    let count = changes.len();
    let device = caller.device.clone();
    // Applied in a task of its own, which holds the slot: a client gone while its push is
    // applied (the handler dropped) frees the slot only when the work and its memory are done.
    let store = state.store.clone();
    let results = tokio::spawn(
        async move {
            let _slot = slot;
            store.push(caller, changes, max_ahead).await
        }
        .in_current_span(),
    )
    .await
    .map_err(|e| {
        // A panic's message may quote what was pushed: not put in the answer or its log line
        // (the process's panic hook prints it to stderr as for any panic).
        let what = if e.is_panic() {
            "panicked"
        } else {
            "cancelled"
        };
        AppError::Internal(format!("push: the task applying it {what}"))
    })??;
    let refused = results
        .iter()
        .filter(|r| r.status != baylink_sync::wire::ChangeStatus::Accepted)
        .count();
    state.metrics.push(
        (count - refused) as u64,
        results
            .iter()
            .filter(|r| r.status != baylink_sync::wire::ChangeStatus::Accepted)
            .map(|r| r.code.as_deref().unwrap_or("refused")),
    );
    tracing::info!(%device, count, refused, "push");
    Ok(Json(PushResponse {
        server_time_ms: now_ms(),
        results,
        max_changes: Some(MAX_PUSH as u32),
        extra: BTreeMap::new(),
    }))
}

async fn pull(
    State(state): State<AppState>,
    AuthDevice(caller): AuthDevice,
    AppJson(req): AppJson<PullRequest>,
) -> Result<Response, AppError> {
    check_protocol(req.protocol)?;
    let cursor = state
        .keys
        .open_cursor(&caller.device, req.cursor.as_ref(), state.store.as_ref())
        .await?;
    let from = parse_cursor(cursor.as_ref())?;
    if cursor.is_some() {
        // Every number a cursor names was issued here: one past the last was issued by this
        // server before its database was put back to an earlier copy.
        let last = state.store.current_seq().await?;
        let furthest = [from.snapshot, from.fields_after]
            .into_iter()
            .flatten()
            .fold(from.after, i64::max);
        if furthest > last {
            return Err(AppError::BadCursor(
                "cursor: ahead of everything this server holds (its database was restored \
                 from a backup): pull from the start"
                    .into(),
            ));
        }
    }
    let ask = Ask {
        caller,
        limit: req.limit.clamp(1, MAX_BATCH as u32),
        protocol: req.protocol,
        own_held_after: req.own_held_after,
    };
    let pages = req.pages.unwrap_or(1).clamp(1, MAX_PAGES);
    // The first page is read before answering, so that a failure is an ordinary error answer.
    let (first, next) = page(&state, &ask, from).await?;
    let json = [(header::CONTENT_TYPE, "application/json")];
    let Some(next) = next.filter(|_| pages > 1) else {
        return Ok((json, first).into_response());
    };
    // The next pages are read while the device reads the ones before: one page ahead at most,
    // and the reading stops when the device goes away.
    let (send, pages_out) = tokio::sync::mpsc::channel::<Bytes>(1);
    let _ = send.try_send(line(first));
    tokio::spawn(async move {
        let mut from = next;
        for _ in 1..pages {
            let (body, next) = match page(&state, &ask, from).await {
                Ok(read) => read,
                Err(e) => {
                    // The stream ends early; the device asks again from the last page it got.
                    tracing::warn!(device = %ask.caller.device, error = %e, "pull stream");
                    return;
                }
            };
            if send.send(line(body)).await.is_err() {
                return;
            }
            match next {
                Some(next) => from = next,
                None => return,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, PAGE_STREAM)],
        Body::from_stream(Lines(pages_out)),
    )
        .into_response())
}

/// Most pages in one answer: a stream's pages are read with the villages the caller had when it
/// asked, so their number bounds how long a change of villages waits (a few seconds).
pub const MAX_PAGES: u32 = 32;

/// What a pull asks for, page after page.
struct Ask {
    caller: caller::Caller,
    limit: u32,
    protocol: u32,
    /// Own values above this counter are not sent back.
    own_held_after: Option<u64>,
}

/// Reads the page at `from` (the store writes its bookkeeping); returns it as JSON, with where the next
/// page starts if a stream may go on past it.
async fn page(
    state: &AppState,
    ask: &Ask,
    from: Position,
) -> Result<(Vec<u8>, Option<Position>), AppError> {
    let caller = ask.caller.clone();
    let page = state
        .store
        .pull_page(caller.clone(), from, ask.limit, ask.own_held_after)
        .await?;
    let (keys, protocol) = (state.keys.clone(), ask.protocol);
    state.metrics.pull_page();
    // Grouped and encoded on the blocking pool, as the page was read: a page of thousands of
    // values is milliseconds of work the async workers should not stall on.
    let (body, next) = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let count = page.values.len();
        let (values, records) = if protocol >= GROUPED_PULL {
            (Vec::new(), group(page.values))
        } else {
            (page.values, Vec::new())
        };
        let answer = PullResponse::<Box<RawValue>> {
            server_time_ms: now_ms(),
            values,
            records,
            purged: page.purged,
            next_cursor: keys.sign_cursor(&caller.device, &page.next),
            more: page.more,
            villages: Some(caller.villages.clone()),
            watch_hits: page.watch_hits,
            extra: BTreeMap::new(),
        };
        tracing::info!(device = %caller.device, values = count, purged = answer.purged.len(), more = answer.more, "pull");
        let next = if answer.continues() {
            Some(parse_cursor(Some(&page.next))?)
        } else {
            None
        };
        let body = serde_json::to_vec(&answer)
            .map_err(|e| AppError::Internal(format!("pull page: {e}")))?;
        Ok((body, next))
    })
    .await
    .map_err(|e| AppError::Internal(format!("pull page: {e}")))??;
    Ok((body, next))
}

/// A page as a line of a stream.
fn line(mut body: Vec<u8>) -> Bytes {
    body.push(b'\n');
    Bytes::from(body)
}

/// The pages of a stream as the answer's body.
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for Lines {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|page| page.map(Ok))
    }
}
