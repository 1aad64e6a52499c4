//! `GET /healthz`: the server is up and its database answers.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::state::AppState;

/// The health route.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(health))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let seq = state.store.current_seq().await?;
    Ok(Json(
        json!({ "status": "ok", "seq": seq, "server_time_ms": crate::store::now_ms() }),
    ))
}
