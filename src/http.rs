//! HTTP: the router (test page, `/ws`, health endpoints) and its tower layers.

use axum::Router;
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

pub mod health;
pub mod page;
pub mod ws;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/ws", get(ws::upgrade))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::details))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
