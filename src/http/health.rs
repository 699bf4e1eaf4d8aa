//! `/health/live`, `/health/ready` and `/health`. Liveness and readiness say only their status
//! (platform probes, anyone may ask); `/health` details (backends, model, errors) are for
//! operators: on `RAGCHAT_OPERATOR_ADDR`, or on the public address for authenticated callers
//! (under `RAGCHAT_AUTH=none`, for loopback callers only).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::client;
use crate::error::{ApiError, ErrorCode};
use crate::limits::Refusals;
use crate::state::AppState;

/// `GET /health/live`: the process is up.
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when every backend answers (a degraded record store still counts:
/// records are spooled) and the seed ingest is done, else 503 `not_ready`. What is down goes to
/// the log (and `/health`), not to whoever asks.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report().await;
    let seeding = state.health.seeding();
    if report.ready && seeding.is_none() && !state.shutdown.is_cancelled() {
        return (StatusCode::OK, Json(json!({ "status": "ready" })));
    }
    let code = ErrorCode::NotReady;
    (
        code.http_status(),
        Json(json!({ "status": "unavailable", "code": code })),
    )
}

/// `GET /health` on the public address: the details, for a caller with a valid credential
/// (`Authorization: Bearer …`), or any loopback caller when the service needs none.
pub async fn details_public(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = operator_only(&state, peer, &headers, "/health details").await {
        return refused;
    }
    details(State(state)).await.into_response()
}

/// What operators may read on the public address (`/health` details, `/metrics`): a caller with
/// a valid credential, or, when the service needs none, a loopback caller. `Err`: the 401.
pub async fn operator_only(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    what: &str,
) -> Result<(), Response> {
    let address = client::address(peer, headers, &state.config.auth.trusted_proxies);
    let allowed = if state.auth.required() {
        matches!(state.auth.from_headers(headers).await, Ok(Some(_)))
    } else {
        address.is_loopback()
    };
    if allowed {
        return Ok(());
    }
    state.refusals.note(
        Refusals::AUTH,
        address,
        &format!("{what} without a credential"),
    );
    let message = if state.auth.required() {
        format!("{what} need a credential; probes use /health/ready")
    } else {
        format!("{what} are for operators: from this machine, or on RAGCHAT_OPERATOR_ADDR")
    };
    Err(ApiError::new(ErrorCode::Unauthorized, message).into_response())
}

/// `GET /health`: versions, every component's state and latency, the record path, the limits.
pub async fn details(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report().await;
    let seeding = state.health.seeding();
    let refused: serde_json::Map<_, _> = state
        .refusals
        .counts()
        .into_iter()
        .map(|(kind, n)| (kind.to_owned(), n.into()))
        .collect();
    Json(json!({
        "version": crate::VERSION,
        "protocol": crate::chat::protocol::PROTOCOL,
        "ready": report.ready && seeding.is_none(),
        "seed": seeding.unwrap_or_else(|| "done".into()),
        "auth": state.auth.describe(),
        "components": {
            "index": report.index,
            "embedder": report.embedder,
            "llm": report.llm,
            "store": report.store,
        },
        "records": state.recorder.status(),
        "load": {
            "sockets": state.limits.open_sockets(),
            "turns": state.limits.running_turns(),
            "refused": refused,
        },
    }))
}
