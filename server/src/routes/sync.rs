//! `/api/v1/sync`: push (a batch of changes, each accepted or refused, durable before the
//! answer) and pull (pages of current values in the caller's villages after a cursor).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use baylink_sync::wire::{
    GROUPED_PULL, PROTOCOL_VERSION, PullRequest, PullResponse, PushRequest, PushResponse, group,
};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

use crate::error::AppError;
use crate::extract::{AppJson, AuthDevice};
use crate::state::AppState;
use crate::store::{now_ms, sync};

/// Most changes in one push, most values in one pull page.
pub const MAX_BATCH: usize = 5_000;

/// The sync routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sync/push", post(push))
        .route("/api/v1/sync/pull", post(pull))
}

fn check_protocol(version: u32) -> Result<(), AppError> {
    if version == 0 || version > PROTOCOL_VERSION {
        return Err(AppError::BadRequest(format!(
            "protocol: version {version} is not spoken here (1 to {PROTOCOL_VERSION})"
        )));
    }
    Ok(())
}

async fn push(
    State(state): State<AppState>,
    AuthDevice(caller): AuthDevice,
    AppJson(req): AppJson<PushRequest>,
) -> Result<Json<PushResponse>, AppError> {
    check_protocol(req.protocol)?;
    if req.device.to_string() != caller.device {
        return Err(AppError::Forbidden(
            "device: a device pushes its own changes only".into(),
        ));
    }
    if req.changes.len() > MAX_BATCH {
        return Err(AppError::BadRequest(format!(
            "changes: at most {MAX_BATCH} per push"
        )));
    }
    if let Some(c) = req.changes.iter().find(|c| c.id.device != req.device) {
        return Err(AppError::BadRequest(format!(
            "changes: {} belongs to another device",
            c.id
        )));
    }
    let max_ahead = state.config.max_clock_ahead_ms;
    let count = req.changes.len();
    let device = caller.device.clone();
    let results = state
        .db
        .call(move |conn| sync::push(conn, &caller, &req.changes, now_ms(), max_ahead))
        .await?;
    let refused = results
        .iter()
        .filter(|r| r.status != baylink_sync::wire::ChangeStatus::Accepted)
        .count();
    tracing::info!(%device, count, refused, "push");
    Ok(Json(PushResponse {
        server_time_ms: now_ms(),
        results,
        extra: BTreeMap::new(),
    }))
}

async fn pull(
    State(state): State<AppState>,
    AuthDevice(caller): AuthDevice,
    AppJson(req): AppJson<PullRequest>,
) -> Result<Json<PullResponse<Box<RawValue>>>, AppError> {
    check_protocol(req.protocol)?;
    let from = sync::parse_cursor(req.cursor.as_ref())?;
    let limit = req.limit.clamp(1, MAX_BATCH as u32);
    let device = caller.device.clone();
    // The page is read from a snapshot beside the writer; only the device's bookkeeping, when
    // there is any, waits for the writer.
    let (page, settle) = state
        .db
        .read(move |conn| sync::read_page(conn, &caller, from, limit, now_ms()))
        .await?;
    if settle.needed() {
        state
            .db
            .call(move |conn| {
                let tx = conn.transaction()?;
                sync::settle_pull(&tx, &settle)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
    }
    tracing::info!(%device, values = page.values.len(), purged = page.purged.len(), more = page.more, "pull");
    let (values, records) = if req.protocol >= GROUPED_PULL {
        (Vec::new(), group(page.values))
    } else {
        (page.values, Vec::new())
    };
    Ok(Json(PullResponse {
        server_time_ms: now_ms(),
        values,
        records,
        purged: page.purged,
        next_cursor: page.next,
        more: page.more,
        extra: BTreeMap::new(),
    }))
}
