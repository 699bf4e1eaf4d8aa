//! Logging: a tracing subscriber writing JSON lines (or pretty text) to stderr, filtered by
//! `RAGCHAT_LOG` (default `info`, with qdrant-edge's internals at `error`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// qdrant-edge warns about process-wide settings it does not let embedders set; hide that noise.
const DEFAULT_FILTER: &str = "info,qdrant_edge=error";

/// Installs the global subscriber. Stdout stays free for command output (`ask`, `records`).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("RAGCHAT_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
