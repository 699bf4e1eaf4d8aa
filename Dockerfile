# syntax=docker/dockerfile:1
# ragchat container image: the stripped release binary with the test page embedded, the
# all-MiniLM-L6-v2 embedder (optional) and the project docs as a demo corpus, on distroless `cc`
# (glibc, no shell, no package manager), running as a non-root user.
#
#   docker build -t ragchat .                                  # with the local embedder
#   docker build --build-arg WITH_LOCAL_EMBEDDER=false -t ragchat .   # cloud embeddings endpoint
#   docker run -p 8000:8000 -v ragchat-data:/data -e RAGCHAT_LLM_URL=… ragchat
#
# Dependencies build in their own layer (cargo-chef), so a source change rebuilds only our crate.

# qdrant-edge needs Rust >= 1.96.
ARG RUST_VERSION=1.96
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
# gcc/g++ for aws-lc-sys and bundled SQLite; curl + python3 fetch and unpack the verified model.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make curl ca-certificates python3 \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only the service's dependencies: the workspace's load-test tools (loadtest/) are not shipped.
RUN cargo chef cook --release --locked -p ragchat --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package ragchat --bin ragchat \
 && mkdir -p /out/data /out/models \
 && cp target/release/ragchat /out/ragchat

# The local embedder (~90 MB) is baked in by default: an embedded index must be queried with
# the model that built it, and a container should start without network access to a model hub.
# Set WITH_LOCAL_EMBEDDER=false when RAGCHAT_EMBEDDER=openai (Azure OpenAI embeddings).
FROM chef AS models
ARG WITH_LOCAL_EMBEDDER=true
COPY scripts/assets.sh scripts/assets.sh
RUN mkdir -p /out/models \
 && if [ "${WITH_LOCAL_EMBEDDER}" = "true" ]; then \
      RAGCHAT_CACHE=/tmp/cache scripts/assets.sh embedder \
      && cp -r /tmp/cache/models/all-MiniLM-L6-v2 /out/models/; \
    fi

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="ragchat" \
      org.opencontainers.image.description="WebSocket RAG chat service" \
      org.opencontainers.image.source="https://github.com/ragchat/ragchat"
COPY --from=builder /out/ragchat /usr/local/bin/ragchat
COPY --from=models /out/models /opt/ragchat/models
COPY docs /opt/ragchat/docs
COPY --from=builder --chown=65532:65532 /out/data /data
# Container defaults; everything else (LLM endpoint, stores, keys) comes from the environment.
ENV RAGCHAT_ADDR=0.0.0.0:8000 \
    RAGCHAT_DATA_DIR=/data \
    RAGCHAT_EMBED_MODEL_DIR=/opt/ragchat/models/all-MiniLM-L6-v2 \
    RAGCHAT_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8000
VOLUME ["/data"]
# No shell or curl in the image: the binary probes its own /health/live.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/ragchat", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ragchat"]
CMD ["serve"]
