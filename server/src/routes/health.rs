//! Health: `GET /livez` (the process answers: restart it if not), `GET /readyz` (it serves:
//! its database is open and answers; send it requests), `GET /healthz` (ready, with the last
//! sequence number and the server's time).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::state::AppState;

/// The health routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let path = state.config.database_path();
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    let day_ago = crate::store::now_ms().saturating_sub(24 * 3600 * 1000);
    let active = state
        .store
        .devices()
        .await?
        .iter()
        .filter(|(d, _)| d.last_sync_ms.is_some_and(|ms| ms >= day_ago))
        .count() as u64;
    // The file sizes of the embedded database; PostgreSQL's own exporter reports its sizes.
    let (database_bytes, wal_bytes) = match state.config.database {
        None => (Some(size(&path)), Some(size(&wal))),
        Some(_) => (None, None),
    };
    let text = state.metrics.render(&crate::metrics::Gauges {
        database_bytes,
        wal_bytes,
        active_devices: active,
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// What a starting server answers while its database opens (and migrates): alive, not ready;
/// every other request `503` with `Retry-After`.
pub fn starting() -> Router {
    Router::new().route("/livez", get(live)).fallback(|| async {
        let mut response = AppError::Starting.into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        response
    })
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    match state.store.current_seq().await {
        Ok(_) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!("not ready: {e}");
            Err(AppError::Unavailable("the database does not answer".into()))
        }
    }
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let seq = state.store.current_seq().await.map_err(|e| {
        tracing::warn!("not ready: {e}");
        AppError::Unavailable("the database does not answer".into())
    })?;
    Ok(Json(
        json!({ "status": "ok", "seq": seq, "server_time_ms": crate::store::now_ms() }),
    ))
}
