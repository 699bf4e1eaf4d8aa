//! HTTP: the public router (test page, `/ws`, health endpoints, `/metrics`), the operators' router
//! (`/health` details, `/metrics`), their security headers, and the accept loop both are served by.

use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::get;
use axum::{Router, middleware};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

pub mod client;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod ws;

/// Only this server's own files and socket; no framing, no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// What the public may reach.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/vendor/marked.js", get(page::marked))
        .route("/vendor/purify.js", get(page::purify))
        .route("/ws", get(ws::upgrade))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::details_public))
        .route("/metrics", get(metrics::metrics_public))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::timed,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(headers(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(headers(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(headers(header::X_FRAME_OPTIONS, "DENY"))
        .layer(headers(header::REFERRER_POLICY, "no-referrer"))
        .with_state(state)
}

/// What operators reach on `RAGCHAT_OPERATOR_ADDR`: the health details and the metrics,
/// unauthenticated (the address is private).
pub fn operator_router(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::details))
        .route("/metrics", get(metrics::metrics))
        .layer(headers(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .with_state(state)
}

fn headers(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}
