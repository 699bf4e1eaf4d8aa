//! ragchat: a WebSocket RAG chat service.
//!
//! A client asks a question over a WebSocket; the service embeds it, retrieves the best chunks
//! from a vector index, streams a grounded answer from an OpenAI-compatible chat model and writes
//! one JSON record of the turn.
//!
//! Module map, lowest floor first (a module imports only from floors below it):
//! - [`error`]: the edge error: every stable code with its HTTP status.
//! - [`turn`]: what every turn reports (finish reason, usage, timings), shared by the protocol
//!   and the record.
//! - [`config`]: typed configuration from env vars and flags, parsed and validated once; each
//!   backend's settings typed.
//! - [`telemetry`]: logs (JSON lines with trace ids), spans bridged to OpenTelemetry, W3C trace
//!   context in and out, the exporters, and the metrics behind `/metrics`.
//! - [`embed`]: the `Embedder` trait; in-process MiniLM (candle) and OpenAI-compatible backends.
//! - [`retrieval`]: the `VectorIndex` trait (and the writer and transfer traits beside it); the
//!   embedded Qdrant Edge and Qdrant server backends; export/import.
//! - [`llm`]: the `ChatModel` trait and the rules of a streamed answer; the OpenAI-compatible
//!   client.
//! - [`store`]: the turn record, the `RecordStore` trait, SQLite and Cosmos DB, the writer queue
//!   and the spool.
//! - [`health`]: cached readiness probes of every backend.
//! - [`auth`]: who is asking: API keys, OIDC tokens, App Service Authentication.
//! - [`limits`]: how much each client may use (sockets, turns, tokens), and refusals counted.
//! - [`state`]: `AppState`, what every request and turn may use.
//! - [`chat`]: one turn (retrieve → prompt → generate → outcome), the wire protocol and the
//!   per-socket session.
//! - [`http`]: the routers (test page, `/ws` upgrade, health endpoints, `/metrics`), their security
//!   headers, the client's address and origin checks, and the accept loop.
//! - [`ingest`]: load files, split them into chunks, embed and upsert them.
//! - [`eval`]: labelled questions scored as recall@k and MRR against the configured index.
//! - [`app`]: the one place where backends are chosen from config; `serve` with graceful
//!   shutdown and the seed ingest.

pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod health;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod llm;
pub mod retrieval;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod turn;

/// The version recorded in every turn record and reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
