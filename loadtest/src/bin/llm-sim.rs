//! `llm-sim`: an OpenAI-compatible LLM simulator in the llama-server dialect.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use clap::Parser;
use ragchat_loadtest::sim::issuer::Issuer;
use ragchat_loadtest::sim::{Fault, Sim, SimConfig};
use ragchat_loadtest::sockets;

/// An OpenAI-compatible chat/embeddings server that answers like llama-server, with fixed
/// timings, a number of slots and injected faults. Prints its address as one JSON line.
#[derive(Parser, Debug)]
#[command(name = "llm-sim", version)]
struct Args {
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Model name the responses carry.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Time to first token, ms (after a slot is free).
    #[arg(long, default_value_t = 200)]
    ttft_ms: u64,
    /// Interval between tokens, ms (50 = 20 tokens/s).
    #[arg(long, default_value_t = 50)]
    itl_ms: u64,
    /// Answer length in tokens; a smaller request `max_tokens` ends with `finish_reason:"length"`.
    #[arg(long, default_value_t = 64)]
    tokens: u32,
    /// Concurrent generations; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    slots: usize,
    /// With --slots: answer 503 when every slot is busy instead of queueing.
    #[arg(long)]
    no_queue: bool,
    /// Fault to inject.
    #[arg(long, value_enum, default_value_t = Fault::None)]
    fault: Fault,
    /// Share of chat requests that get the fault (0..1).
    #[arg(long, default_value_t = 1.0)]
    fault_rate: f64,
    /// Token index at which stall/cut/error-in-stream strike (default: half the answer).
    #[arg(long)]
    fault_after_tokens: Option<u32>,
    /// Retry-After seconds on a simulated 429.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Embedding size of /v1/embeddings.
    #[arg(long, default_value_t = 384)]
    embed_dim: usize,
    /// Latency of each /v1/embeddings call, ms.
    #[arg(long, default_value_t = 0)]
    embed_ms: u64,
    /// Seed of the fault draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.fault_rate) {
        anyhow::bail!("--fault-rate must be between 0 and 1");
    }
    if args.embed_dim == 0 {
        anyhow::bail!("--embed-dim must be at least 1");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    runtime.build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    sockets::raise_nofile(1 << 20);
    let config = SimConfig {
        model: args.model,
        ttft: Duration::from_millis(args.ttft_ms),
        itl: Duration::from_millis(args.itl_ms),
        tokens: args.tokens,
        slots: args.slots,
        queue: !args.no_queue,
        fault: args.fault,
        fault_rate: args.fault_rate,
        fault_after: args.fault_after_tokens,
        retry_after_secs: args.retry_after_secs,
        embed_dim: args.embed_dim,
        embed_delay: Duration::from_millis(args.embed_ms),
        seed: args.seed,
    };
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr()?;
    {
        let line = serde_json::json!({"addr": addr.to_string(), "url": format!("http://{addr}/v1"), "issuer": format!("http://{addr}")});
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let issuer = Issuer::new(format!("http://{addr}"))?;
    let router = Sim::new(config).router().merge(issuer.router());
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // No graceful drain: a stalled stream would hold it for an hour. Stop at once.
    tokio::select! {
        r = axum::serve(listener, router).into_future() => r?,
        () = shutdown() => {}
    }
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
