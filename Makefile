# ragchat: `make run` starts everything on this machine; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run test assets build schema fmt lint-deploy container-check clean-data bench locust eval fuzz

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Fetch models, build, ingest docs/, start llama-server (unless RAGCHAT_LLM_URL is set) and serve on :8000
	@scripts/run.sh

test: ## fmt, clippy and every test, against a real llama-server and real embeddings
	@scripts/test.sh

assets: ## Fetch the models and build llama-server into ~/.cache/ragchat (once per machine)
	@scripts/assets.sh all

build: ## Release build
	@tc="$$(scripts/toolchain.sh)"; RUSTUP_TOOLCHAIN="$${tc:-$${RUSTUP_TOOLCHAIN:-}}" cargo build --release --locked

schema: ## Regenerate docs/protocol.schema.json from the protocol types
	@tc="$$(scripts/toolchain.sh)"; RUSTUP_TOOLCHAIN="$${tc:-$${RUSTUP_TOOLCHAIN:-}}" cargo run --quiet --locked -- schema > docs/protocol.schema.json.tmp && mv docs/protocol.schema.json.tmp docs/protocol.schema.json

fmt: ## Format the code
	@tc="$$(scripts/toolchain.sh)"; RUSTUP_TOOLCHAIN="$${tc:-$${RUSTUP_TOOLCHAIN:-}}" cargo fmt --all

lint-deploy: ## checkov (and actionlint) over infra/, the Dockerfile and the workflows
	@scripts/lint-deploy.sh

container-check: build ## Run the release binary as the image would (needs RAGCHAT_LLM_URL)
	@scripts/container-check.sh "$${CARGO_TARGET_DIR:-target}/release/ragchat" "$${RAGCHAT_LLM_URL:?set RAGCHAT_LLM_URL}"

bench: ## Release build, llm-sim + ragchat on loopback, the load matrix; writes docs/benchmarks.md
	@scripts/bench.sh

locust: ## Locust (pinned, headless, LOCUST_TIME) over wss through Caddy to ragchat and llm-sim; CSV/HTML in target/locust
	@scripts/locust.sh

fuzz: ## libFuzzer over the client-frame parser and the session (FUZZ_SECS per target; nightly, cargo fuzz)
	@scripts/fuzz.sh

eval: ## Retrieval quality: recall@k and MRR on the labelled sets in eval/ (local MiniLM)
	@scripts/eval.sh

clean-data: ## Delete the local index and records (data/)
	rm -rf data
