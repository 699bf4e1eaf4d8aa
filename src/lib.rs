//! ragchat: a WebSocket RAG chat service.
//!
//! A client asks a question over a WebSocket; the service embeds it, retrieves the best chunks
//! from a vector index, streams a grounded answer from an OpenAI-compatible chat model and writes
//! one JSON record of the turn.
//!
//! Module map:
//! - [`config`]: typed configuration from env vars and flags, parsed and validated once.
//! - [`app`]: `AppState` and the one place where backends are chosen from config; `serve`.
//! - [`http`]: the axum router: test page, `/ws` upgrade, health endpoints.
//! - [`chat`]: one turn (embed → retrieve → prompt → stream → record), the wire protocol and the
//!   per-socket session.
//! - [`embed`]: the `Embedder` trait; in-process MiniLM (candle) and OpenAI-compatible backends.
//! - [`retrieval`]: the `VectorIndex` trait; the embedded Qdrant Edge backend.
//! - [`llm`]: the `ChatModel` trait; the OpenAI-compatible streaming client.
//! - [`store`]: the `RecordStore` trait, the turn record, the SQLite backend and the writer queue.
//! - [`ingest`]: load files, split them into chunks, embed and upsert them.
//! - [`eval`]: labelled questions scored as recall@k and MRR against the configured index.
//! - [`health`]: cached readiness probes of every backend.
//! - [`telemetry`]: the tracing subscriber (JSON logs).
//! - [`error`]: the edge error: stable codes for clients.

pub mod app;
pub mod chat;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod health;
pub mod http;
pub mod ingest;
pub mod llm;
pub mod retrieval;
pub mod store;
pub mod telemetry;

/// The version recorded in every turn record and reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
