//! `loadgen`: a WebSocket load generator for ragchat, with a direct-to-model baseline mode and
//! an idle-socket mode.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _};
use ragchat_loadtest::flood::{self, Flood, FloodReport};
use ragchat_loadtest::questions::Questions;
use ragchat_loadtest::run::{self, Idle, Load, Target};
use ragchat_loadtest::sockets::{self, Sources};
use ragchat_loadtest::stats::Report;

/// Ramps concurrent clients that ask questions over ragchat's WebSocket (or straight at an
/// OpenAI-compatible endpoint with --direct) and reports time to first token, inter-token gaps,
/// total time, answer size and errors as percentiles; or holds idle sockets (--idle); or floods
/// asks from one principal (--flood).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Args {
    /// ragchat's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    url: String,
    /// Run the same workload straight against this OpenAI-compatible base URL (e.g. the
    /// simulator's http://127.0.0.1:PORT/v1) instead of ragchat: the baseline.
    #[arg(long)]
    direct: Option<String>,
    /// Concurrent clients (each runs one turn at a time).
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Spread the clients' starts over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp_secs: f64,
    /// Stop starting turns this many seconds after the ramp (running turns finish).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Turns each client takes (default without --duration-secs: 1).
    #[arg(long)]
    turns_per_client: Option<u64>,
    /// Do not record turns that start in the first this-many seconds.
    #[arg(long, default_value_t = 0.0)]
    warmup_secs: f64,
    /// Pause between a client's turns, ms.
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Questions, one per line (default: a built-in list about tests/fixtures/corpus).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Share of turns to cancel (0..1).
    #[arg(long, default_value_t = 0.0)]
    cancel_share: f64,
    /// Cancel after this many tokens.
    #[arg(long, default_value_t = 3)]
    cancel_after_tokens: u64,
    /// Give up on a turn (or a connection attempt) after this many seconds without a frame.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Direct mode: model name.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Direct mode: max_tokens (ragchat sends RAGCHAT_LLM_MAX_TOKENS, default 384).
    #[arg(long, default_value_t = 384)]
    max_tokens: u32,
    /// Hold this many idle sockets for --duration-secs instead of taking turns.
    #[arg(long)]
    idle: Option<usize>,
    /// Idle mode: handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Idle mode: the server's PID, to report its resident memory per socket.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1..N); 0 = enough for
    /// the socket count. Ignored for non-loopback targets.
    #[arg(long, default_value_t = 0)]
    source_addrs: usize,
    /// Third octet of the loopback source addresses (127.0.NET.1…): runs with different nets
    /// look like different clients to the server.
    #[arg(long, default_value_t = 0)]
    source_net: u8,
    /// Authenticate with bearer tokens minted by this URL (`GET URL?sub=…`, e.g. llm-sim's
    /// test issuer at http://127.0.0.1:PORT/token): one subject per client, or one for all
    /// of a flood's sockets.
    #[arg(long)]
    token_url: Option<String>,
    /// Subject of the minted tokens (clients get SUB-0, SUB-1, …; a flood gets SUB).
    #[arg(long, default_value = "loadgen")]
    token_sub: String,
    /// Flood: send this many asks per second in total over --clients sockets for
    /// --duration-secs, whatever the answers, and count the replies.
    #[arg(long)]
    flood: Option<f64>,
    /// Name of the run in the report.
    #[arg(long, default_value = "loadgen")]
    label: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.cancel_share) {
        anyhow::bail!("--cancel-share must be between 0 and 1");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.build()?;
    let (table, json) = if let Some(rate) = args.flood {
        let report = runtime.block_on(flood(&args, rate))?;
        (report.table(), serde_json::to_string_pretty(&report)?)
    } else {
        let report = runtime.block_on(drive(&args))?;
        (report.table(), serde_json::to_string_pretty(&report)?)
    };
    write!(std::io::stdout().lock(), "{table}")?;
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Bearer tokens for `subjects` from --token-url (none without it), fetched before the load.
async fn tokens(args: &Args, subjects: Vec<String>) -> anyhow::Result<Vec<String>> {
    let Some(url) = &args.token_url else {
        return Ok(Vec::new());
    };
    let http = reqwest::Client::new();
    futures::stream::iter(subjects)
        .map(|sub| {
            let http = http.clone();
            async move {
                let response = http
                    .get(url)
                    .query(&[("sub", &sub)])
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .with_context(|| format!("minting a token at {url}"))?;
                Ok(response.text().await?)
            }
        })
        .buffered(16)
        .try_collect()
        .await
}

async fn flood(args: &Args, rate: f64) -> anyhow::Result<FloodReport> {
    if !(rate.is_finite() && rate > 0.0) {
        anyhow::bail!("--flood must be a positive rate");
    }
    sockets::raise_nofile(args.clients as u64 + 4096);
    let addr = sockets::resolve(&args.url).await?;
    let bearer = tokens(args, vec![args.token_sub.clone()]).await?.pop();
    Ok(flood::flood(Flood {
        label: args.label.clone(),
        url: args.url.clone(),
        addr,
        sockets: args.clients,
        rate,
        duration: secs(args.duration_secs.unwrap_or(10.0)),
        sources: Sources::for_target(addr, args.clients, 1, args.source_net),
        bearer,
        connect_timeout: Duration::from_secs(args.timeout_secs.max(1)),
    })
    .await)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

async fn drive(args: &Args) -> anyhow::Result<Report> {
    let sockets_needed = args.idle.unwrap_or(args.clients);
    let limit = sockets::raise_nofile(sockets_needed as u64 + 4096);
    if limit < sockets_needed as u64 + 64 {
        eprintln!(
            "warning: open-file limit {limit} is below the {sockets_needed} sockets asked for"
        );
    }
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    if let Some(n) = args.idle {
        let addr = sockets::resolve(&args.url).await?;
        let sources = Sources::for_target(addr, n, args.source_addrs, args.source_net);
        if !args.quiet {
            eprintln!(
                "holding {n} idle sockets on {} from {} source address(es)",
                args.url,
                sources.len().max(1)
            );
        }
        return Ok(run::idle(Idle {
            label: args.label.clone(),
            url: args.url.clone(),
            addr,
            sockets: n,
            ramp: secs(args.ramp_secs),
            hold: secs(args.duration_secs.unwrap_or(10.0)),
            sources,
            concurrency: args.connect_concurrency,
            server_pid: args.server_pid,
            connect_timeout: timeout,
            progress: !args.quiet,
        })
        .await);
    }
    let questions = match &args.questions {
        Some(p) => Questions::load(p)?,
        None => Questions::default(),
    };
    let (target, sources) = match &args.direct {
        Some(base) => (
            Target::Direct { base: base.clone() },
            Sources::for_target(sockets::resolve(base).await?, 0, 1, 0),
        ),
        None => {
            let addr = sockets::resolve(&args.url).await?;
            let sources =
                Sources::for_target(addr, args.clients, args.source_addrs, args.source_net);
            (
                Target::Ws {
                    url: args.url.clone(),
                    addr,
                },
                sources,
            )
        }
    };
    let subjects = (0..args.clients.max(1))
        .map(|i| format!("{}-{i}", args.token_sub))
        .collect();
    let bearer = match args.direct {
        Some(_) => Vec::new(),
        None => tokens(args, subjects).await?,
    };
    let turns_per_client = match (args.turns_per_client, args.duration_secs) {
        (None, None) => Some(1),
        (t, _) => t,
    };
    Ok(run::turns(Load {
        label: args.label.clone(),
        target,
        clients: args.clients.max(1),
        ramp: secs(args.ramp_secs),
        duration: args.duration_secs.map(secs),
        turns_per_client,
        warmup: secs(args.warmup_secs),
        think: Duration::from_millis(args.think_ms),
        cancel_share: args.cancel_share,
        cancel_after_tokens: args.cancel_after_tokens.max(1),
        questions,
        sources,
        bearer,
        turn_timeout: timeout,
        model: args.model.clone(),
        max_tokens: Some(args.max_tokens),
        progress: !args.quiet,
    })
    .await)
}
