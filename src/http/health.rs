//! `/health/live`, `/health/ready` and `/health`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::error::ErrorCode;
use crate::state::AppState;

/// `GET /health/live`: the process is up.
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when every backend answers (a degraded record store still counts:
/// records are spooled) and the seed ingest is done, else `not_ready` naming what is not.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report().await;
    let seeding = state.health.seeding();
    if report.ready && seeding.is_none() && !state.shutdown.is_cancelled() {
        return (StatusCode::OK, Json(json!({ "status": "ready" })));
    }
    let mut down: serde_json::Map<_, _> = report
        .down()
        .map(|(name, why)| (name.to_owned(), why.into()))
        .collect();
    if let Some(seeding) = seeding {
        down.insert("seed".into(), seeding.into());
    }
    if state.shutdown.is_cancelled() {
        down.insert("server".into(), "shutting down".into());
    }
    let code = ErrorCode::NotReady;
    (
        code.http_status(),
        Json(json!({ "status": "unavailable", "code": code, "down": down })),
    )
}

/// `GET /health`: versions, every component's state and latency, the record path.
pub async fn details(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report().await;
    let seeding = state.health.seeding();
    Json(json!({
        "version": crate::VERSION,
        "protocol": crate::chat::protocol::PROTOCOL,
        "ready": report.ready && seeding.is_none(),
        "seed": seeding.unwrap_or_else(|| "done".into()),
        "components": {
            "index": report.index,
            "embedder": report.embedder,
            "llm": report.llm,
            "store": report.store,
        },
        "records": state.recorder.status(),
    }))
}
