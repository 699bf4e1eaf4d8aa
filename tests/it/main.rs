//! Integration tests: the real app on 127.0.0.1:0 with a real index, real MiniLM embeddings and
//! the real llama-server that `scripts/test.sh` starts (RAGCHAT_TEST_LLM_URL); records also go
//! to a real Cosmos DB–compatible server (tests/cosmos-server) that the tests start themselves.

// Test servers and readers are spawned for the life of one test (its runtime ends them).
#![allow(clippy::disallowed_methods)]

mod cosmos_server;
mod crash;
mod dialects;
mod health;
mod ingest;
mod llm_contract;
mod observability;
mod oidc;
mod procs;
mod proxy;
mod records;
mod retrieval;
mod security;
mod support;
mod telemetry;
mod ws;
