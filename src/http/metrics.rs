//! `GET /metrics`: the Prometheus text exposition. Served unauthenticated on
//! `RAGCHAT_OPERATOR_ADDR` (a private address, for a scraper beside the service), and on the public
//! address to the same callers as the `/health` details: a valid credential (Prometheus sends
//! it as `authorization: Bearer …`), or loopback when the service needs none. Also the
//! `http.server.request.duration` middleware.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::health::operator_only;
use crate::state::AppState;

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` on the operators' address.
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Readiness per component is read from the last probe: make it a fresh one (cached briefly).
    let _ = state.health.report().await;
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// `GET /metrics` on the public address: for operators only.
pub async fn metrics_public(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = operator_only(&state, peer, &headers, "metrics").await {
        return refused;
    }
    metrics(State(state)).await
}

/// Times every routed request but the WebSocket upgrade (whose session is measured apart).
pub async fn timed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    if route == "/ws" {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let t = Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        t.elapsed(),
    );
    response
}
