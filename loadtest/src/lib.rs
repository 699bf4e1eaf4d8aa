//! Load-testing tools for ragchat (issue 6): `llm-sim`, an OpenAI-compatible chat server that
//! speaks the llama-server dialect with fixed timings and injected faults, and `loadgen`, a
//! WebSocket load generator that measures what ragchat adds on top of the model.
//!
//! - [`sse`]: the llama-server SSE dialect: pre-serialised chunks, and an SSE reader.
//! - [`sim`]: the simulator's server (chat completions, embeddings, models, health), and a
//!   test OIDC issuer minting tokens for the JWT benchmark.
//! - [`stats`]: per-turn measurements in hdrhistograms; the report as a table and JSON.
//! - [`questions`]: the questions clients ask, and which client asks which.
//! - [`sockets`]: open-file limit, loopback source addresses, TCP connect.
//! - [`client`]: one turn over ragchat's WebSocket, or straight at the simulator.
//! - [`run`]: ramping clients through their turns; holding idle sockets.
//! - [`flood`]: one principal asking far faster than its limits allow.

pub mod client;
pub mod flood;
pub mod questions;
pub mod run;
pub mod sim;
pub mod sockets;
pub mod sse;
pub mod stats;
