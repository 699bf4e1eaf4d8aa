//! `/health/live`, `/health/ready` and `/health`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::AppState;

/// `GET /health/live`: the process is up.
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when every backend answers (a degraded record store still counts:
/// records are spooled) and the seed ingest is done, else 503 naming what is not.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report(&state).await;
    let seeding = state.health.seeding();
    if report.ready && seeding.is_none() && !state.shutdown.is_cancelled() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let mut down = serde_json::Map::new();
        for (name, c) in [
            ("index", &report.index),
            ("embedder", &report.embedder),
            ("llm", &report.llm),
            ("store", &report.store),
        ] {
            if let (Some(e), "down") = (&c.error, c.status) {
                down.insert(name.into(), e.clone().into());
            }
        }
        if let Some(seeding) = seeding {
            down.insert("seed".into(), seeding.into());
        }
        if state.shutdown.is_cancelled() {
            down.insert("server".into(), "shutting down".into());
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "code": "not_ready", "down": down })),
        )
    }
}

/// `GET /health`: versions, every component's state and latency, the record path.
pub async fn details(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report(&state).await;
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
