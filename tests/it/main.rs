//! Integration tests: the real app on 127.0.0.1:0 with a real index, real MiniLM embeddings and
//! the real llama-server that `scripts/test.sh` starts (RAGCHAT_TEST_LLM_URL).

mod health;
mod ingest;
mod llm_contract;
mod support;
mod ws;
