//! The `ragchat` binary: parse the CLI, set up logging, dispatch, map errors to an exit code.

// The command-line front end: its commands' output (answers, records, reports) is stdout.
#![allow(clippy::print_stdout)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use async_trait::async_trait;
use clap::{Parser, Subcommand};
use ragchat::app::{self, App};
use ragchat::chat::protocol::ServerFrame;
use ragchat::chat::{OutputGone, TurnEvent, TurnOutput, TurnRequest, run_turn, turn_span};
use ragchat::config::{Config, ConfigArgs, QueryRewrite, RetrievalMode, TelemetryConfig};
use ragchat::embed::Embedder;
use ragchat::retrieval::IndexTransfer;
use ragchat::telemetry::MetricExporters;

/// A WebSocket RAG chat service: answers questions about your documents with cited sources.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the WebSocket chat, the test page and health endpoints.
    Serve,
    /// Load, chunk, embed and index documents (.md, .txt, .html, .pdf; directories
    /// recursively).
    Ingest {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also remove the indexed documents under these paths that no longer exist there.
        #[arg(long)]
        prune: bool,
    },
    /// Look after the index: list or remove its documents, or move it between backends (export
    /// every chunk to a JSON-lines file, import such a file).
    Index {
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Ask one question from the terminal, streaming the answer to stdout.
    Ask {
        /// The question.
        question: String,
    },
    /// Score retrieval on labelled question sets (JSON lines of {"question", "source"}) against
    /// the configured index: recall@1/3/5/10 and MRR by document, dense and hybrid side by side.
    /// See `make eval`.
    Eval {
        /// Question sets.
        #[arg(required = true)]
        sets: Vec<PathBuf>,
        /// Print one JSON report per set (with every question's outcome) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print recent turn records as JSON lines, newest first.
    Records {
        /// How many.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// Only this conversation's turns.
        #[arg(long)]
        conversation: Option<String>,
    },
    /// Print the JSON Schema of the WebSocket protocol.
    Schema,
    /// Probe a running server's /health/live (for container HEALTHCHECKs: no shell or curl
    /// needed). Exits 0 when it answers 200 within 3 s.
    Healthcheck {
        /// URL to probe. Default: /health/live on RAGCHAT_ADDR's port, on loopback.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum IndexAction {
    /// List the indexed documents with their chunk counts and ingest times (JSON lines when
    /// stdout is not a terminal).
    Sources,
    /// Remove documents (by their name in sources, as `index sources` lists it) and their chunks.
    Remove {
        /// Document names.
        #[arg(required = true)]
        sources: Vec<String>,
    },
    /// Write the configured index to FILE (`-` for stdout).
    Export {
        /// Destination.
        file: PathBuf,
    },
    /// Upsert the chunks of an export into the configured index (made with the same embedder).
    Import {
        /// Source (`-` for stdin).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match cli.config.telemetry.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Only the server exports; a command-line run logs to stderr and keeps its trace ids.
    let telemetry = if matches!(cli.command, Command::Serve) {
        telemetry
    } else {
        TelemetryConfig {
            service_name: telemetry.service_name,
            ..TelemetryConfig::default()
        }
    };
    let instance = ragchat::config::instance_name(cli.config.instance_id.as_deref());
    let mut telemetry = ragchat::telemetry::init(cli.config.log_format, &telemetry, &instance);
    let exporters = telemetry.take_metric_exporters();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli, exporters));
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ragchat::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(cli: Cli, exporters: MetricExporters) -> anyhow::Result<()> {
    match cli.command {
        Command::Schema => {
            let schema = ragchat::chat::protocol::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
        Command::Healthcheck { url } => healthcheck(url, cli.config.server.addr.port()).await,
        Command::Records { last, conversation } => {
            records(&cli.config.validate()?, last, conversation).await
        }
        Command::Serve => serve(cli.config.validate()?, exporters).await,
        Command::Ingest { paths, prune } => ingest(&cli.config.validate()?, &paths, prune).await,
        Command::Index { action } => index(&cli.config.validate()?, action).await,
        Command::Eval { sets, json } => eval(&cli.config.validate()?, &sets, json).await,
        Command::Ask { question } => ask(cli.config.validate()?, question).await,
    }
}

async fn healthcheck(url: Option<String>, port: u16) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/health/live"));
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

async fn records(config: &Config, last: usize, conversation: Option<String>) -> anyhow::Result<()> {
    let store = app::open_store(config).await?;
    let records = match (conversation, store.listing()) {
        (Some(id), _) => store.conversation(&id, last).await?,
        (None, Some(listing)) => listing.recent(last).await?,
        (None, None) => anyhow::bail!(
            "{} cannot list turns across conversations (a cross-partition ORDER BY needs a query \
             plan the Cosmos DB Rust SDK does not run yet); use `ragchat records --conversation \
             ID`, or Data Explorer in the Azure portal",
            store.describe()
        ),
    };
    let mut out = std::io::stdout().lock();
    for record in records {
        writeln!(out, "{}", serde_json::to_string(&record)?)?;
    }
    Ok(())
}

async fn serve(config: Config, exporters: MetricExporters) -> anyhow::Result<()> {
    let addr = config.server.addr;
    let app = App::build(config, exporters).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("RAGCHAT_ADDR: cannot listen on {addr}"))?;
    app.serve(listener, app::shutdown_signal()).await
}

async fn ingest(config: &Config, paths: &[PathBuf], prune: bool) -> anyhow::Result<()> {
    let (embedder, index) = open_for_indexing(config).await?;
    let mut summary = ragchat::ingest::run(
        paths,
        embedder.as_ref(),
        index.as_ref(),
        config.index.chunk_tokens,
        config.index.chunk_overlap,
    )
    .await?;
    if prune {
        summary.pruned = ragchat::ingest::prune(paths, index.as_ref())
            .await?
            .into_iter()
            .map(|doc| doc.source)
            .collect();
        summary.index_total = index.count().await?;
    }
    if !std::io::stdout().is_terminal() {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    println!(
        "indexed {} of {} files ({} chunks), {} unchanged, {} skipped, {} pruned; the index \
         holds {} chunks ({} ms)",
        summary.indexed,
        summary.files,
        summary.chunks,
        summary.unchanged,
        summary.skipped.len(),
        summary.pruned.len(),
        summary.index_total,
        summary.elapsed_ms
    );
    for s in &summary.skipped {
        println!("  skipped {}: {}", s.path, s.reason);
    }
    for source in &summary.pruned {
        println!("  pruned {source}");
    }
    Ok(())
}

async fn index(config: &Config, action: IndexAction) -> anyhow::Result<()> {
    use ragchat::retrieval::transfer;
    // The embedder fixes the vector size the index is opened (or created) with.
    let (_, index) = open_for_indexing(config).await?;
    let stdio = |p: &PathBuf| p.as_os_str() == "-";
    match action {
        IndexAction::Sources => {
            let docs = index.sources().await?;
            let terminal = std::io::stdout().is_terminal();
            for doc in &docs {
                if terminal {
                    println!(
                        "{:>6}  {:<24}  {}",
                        doc.chunks,
                        doc.ingested_at.as_deref().unwrap_or("-"),
                        doc.source
                    );
                } else {
                    println!("{}", serde_json::to_string(doc)?);
                }
            }
            eprintln!("{} documents in {}", docs.len(), index.describe());
        }
        IndexAction::Remove { sources } => {
            let indexed = index.sources().await?;
            let mut missing = Vec::new();
            for source in &sources {
                match indexed.iter().find(|d| &d.source == source) {
                    Some(doc) => {
                        index.replace_source(source, Vec::new()).await?;
                        eprintln!("removed {source} ({} chunks)", doc.chunks);
                    }
                    None => missing.push(source.as_str()),
                }
            }
            index.finish_ingest().await?;
            anyhow::ensure!(
                missing.is_empty(),
                "not in the index (see `ragchat index sources`): {}",
                missing.join(", ")
            );
        }
        IndexAction::Export { file } => {
            let n = if stdio(&file) {
                transfer::export(index.as_ref(), std::io::stdout().lock()).await?
            } else {
                let out = std::fs::File::create(&file)
                    .with_context(|| format!("cannot create {}", file.display()))?;
                transfer::export(index.as_ref(), std::io::BufWriter::new(out)).await?
            };
            eprintln!("exported {n} chunks from {}", index.describe());
        }
        IndexAction::Import { file } => {
            let n = if stdio(&file) {
                transfer::import(std::io::stdin().lock(), index.as_ref()).await?
            } else {
                let input = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                transfer::import(std::io::BufReader::new(input), index.as_ref()).await?
            };
            eprintln!(
                "imported {n} chunks into {}; it holds {}",
                index.describe(),
                index.count().await?
            );
        }
    }
    Ok(())
}

async fn eval(config: &Config, sets: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let embedder = app::open_embedder(config).await?;
    let index = app::open_index(config, embedder.dim()).await?;
    anyhow::ensure!(
        index.count().await? > 0,
        "the index at {} is empty: ingest the corpus the questions are about first",
        index.describe()
    );
    let modes = [RetrievalMode::Dense, RetrievalMode::Hybrid];
    // Follow-ups are scored as asked and, unless RAGCHAT_QUERY_REWRITE=off, as the chat model
    // rewrites them (as a turn would).
    let llm = match config.chat.query_rewrite {
        QueryRewrite::Auto => Some(app::open_llm(config)?),
        QueryRewrite::Off => None,
    };
    let rewriter = llm.as_deref().map(|llm| ragchat::eval::Rewriter {
        llm,
        timeout: std::time::Duration::from_millis(config.chat.query_rewrite_timeout_ms),
    });
    if !json {
        println!(
            "{:<28} {:<10} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9}",
            "set", "mode", "n", "R@1", "R@3", "R@5", "R@10", "MRR", "search ms"
        );
    }
    for set in sets {
        let cases = ragchat::eval::load(set)?;
        let mut runs = vec![None];
        if ragchat::eval::has_follow_ups(&cases) && rewriter.is_some() {
            runs.push(rewriter);
        }
        let name = set.display().to_string();
        for rewriter in runs {
            let reports =
                ragchat::eval::run(&cases, embedder.as_ref(), index.as_ref(), &modes, rewriter)
                    .await?;
            for report in reports {
                if json {
                    println!("{}", serde_json::json!({ "set": name, "report": report }));
                } else {
                    print_report(&name, &report);
                }
            }
        }
    }
    Ok(())
}

fn print_report(name: &str, report: &ragchat::eval::Report) {
    let r = |k: usize| report.recall.get(&k).copied().unwrap_or(0.0);
    let mode = match report.rewrite {
        Some(_) => format!("{}+rw", report.mode),
        None => report.mode.to_string(),
    };
    println!(
        "{name:<28} {mode:<10} {:>4} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>9.2}",
        report.questions,
        r(1),
        r(3),
        r(5),
        r(10),
        report.mrr,
        report.search_p50_ms
    );
    if let Some(count) = report.rewrite {
        println!(
            "    rewrite: {} rewritten, {} unchanged, {} failed (searched as asked)",
            count.rewritten, count.unchanged, count.failed
        );
    }
    for o in report.outcomes.iter().filter(|o| o.rank != Some(1)) {
        let rank = o.rank.map_or("-".to_owned(), |r| r.to_string());
        let searched = o
            .search_query
            .as_deref()
            .map(|q| format!(" → {q:?}"))
            .unwrap_or_default();
        println!(
            "    rank {rank:>2}  {}{searched}  (wanted {}, got {})",
            o.question,
            o.source,
            o.top.as_deref().unwrap_or("nothing")
        );
    }
}

async fn ask(config: Config, question: String) -> anyhow::Result<()> {
    let (state, recorder_task) = App::build(config, MetricExporters::default())
        .await?
        .into_parts();
    let ask = ragchat::chat::protocol::Ask {
        question,
        ..Default::default()
    };
    let conversation = uuid::Uuid::new_v4().to_string();
    let budget = state.config.limits.max_question_tokens;
    let principal = ragchat::auth::Principal::anonymous();
    let request = TurnRequest::from_ask(ask, &state.config.chat, &conversation, principal, budget)
        .map_err(|(_, e)| anyhow::anyhow!("{e}"))?;
    let mut out = Terminal {
        sources: Vec::new(),
        failed: None,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    // Aborted below, once the turn has ended.
    #[allow(clippy::disallowed_methods)]
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let span = turn_span(&request, state.llm.model());
    run_turn(&state, request, Instant::now(), cancel, &mut out, &span).await;
    watcher.abort();
    drop(state);
    recorder_task.finish().await;
    match out.failed {
        Some(message) => anyhow::bail!(message),
        None => Ok(()),
    }
}

/// The embedder and index of the command-line tools that write to the index (`ingest`,
/// `index`), creating the data directory first.
async fn open_for_indexing(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Embedder>, Arc<dyn IndexTransfer>)> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "RAGCHAT_DATA_DIR: cannot create {}",
            config.data_dir.display()
        )
    })?;
    let embedder = app::open_embedder(config).await?;
    let index = app::open_index(config, embedder.dim()).await?;
    Ok((embedder, index))
}

/// Prints a turn: the answer as it streams, then the numbered sources.
struct Terminal {
    sources: Vec<ragchat::chat::protocol::Source>,
    failed: Option<String>,
}

#[async_trait]
impl TurnOutput for Terminal {
    async fn emit(&mut self, event: TurnEvent<'_>) -> Result<(), OutputGone> {
        let mut out = std::io::stdout().lock();
        let written = match event {
            TurnEvent::Sources(frame) => {
                self.sources = frame.sources.clone();
                Ok(())
            }
            TurnEvent::Token(text) => write!(out, "{text}").and_then(|()| out.flush()),
            TurnEvent::Final(ServerFrame::Done(done)) => {
                let mut lines = String::from("\n\n");
                let sources = done.sources.as_ref().unwrap_or(&self.sources);
                for s in sources {
                    let cited = if done.citations.contains(&s.n) {
                        "*"
                    } else {
                        " "
                    };
                    lines.push_str(&format!("{cited}[{}] {} ({})\n", s.n, s.title, s.source));
                }
                write!(out, "{lines}").and_then(|()| out.flush())
            }
            TurnEvent::Final(ServerFrame::Error(e)) => {
                self.failed = Some(format!("{}: {}", e.code, e.message));
                Ok(())
            }
            TurnEvent::Final(_) => Ok(()),
        };
        written.map_err(|_| OutputGone)
    }
}
