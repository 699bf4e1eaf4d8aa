//! Logs, traces and metrics. Logs: JSON lines (or pretty text) on stderr, filtered by
//! `RAGCHAT_LOG` (default `info`, with qdrant-edge's internals at `error`), each carrying the
//! `trace_id` and `span_id` of the span it happened in. Traces: the `tracing` spans of a turn
//! (`chat.turn` and its phases) become OpenTelemetry spans through `tracing-opentelemetry`, always
//! (the `done` frame and the record carry the trace id), exported only where
//! [`TelemetryConfig`] says: OTLP/HTTP, Application Insights. Metrics: see [`Metrics`].
//!
//! Export never touches a turn: spans and logs go to the SDK's batch processors (bounded queues,
//! their own threads), metrics are pulled (Prometheus) or pushed by a periodic reader thread.

mod export;
mod metrics;
mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, TelemetryConfig};

pub use export::{ExportCounts, MetricExporters};
pub use metrics::{Metrics, Observed, TurnMetrics};
pub use propagation::{inject, parent_from, trace_id};

/// qdrant-edge warns about process-wide settings it does not let embedders set; hide that noise.
const DEFAULT_FILTER: &str = "info,qdrant_edge=error";
/// How long shutdown waits for the last spans and logs to leave.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// The process's tracer and logger providers; [`Telemetry::shutdown`] flushes them (bounded).
pub struct Telemetry {
    tracer: SdkTracerProvider,
    logger: Option<SdkLoggerProvider>,
    metric_exporters: Option<MetricExporters>,
}

impl Telemetry {
    /// The metric exporters made at start (outside the async runtime, as their blocking HTTP
    /// clients need), for the app's meter provider. `None` after the first call.
    pub fn take_metric_exporters(&mut self) -> MetricExporters {
        self.metric_exporters.take().unwrap_or_default()
    }

    /// Flushes and stops the exporters, waiting at most a few seconds: an unreachable collector
    /// does not hold the exit.
    pub fn shutdown(self) {
        if let Err(e) = self.tracer.shutdown_with_timeout(FLUSH_BOUND) {
            tracing::warn!(error = %e, "trace export did not finish");
        }
        if let Some(logger) = self.logger
            && let Err(e) = logger.shutdown_with_timeout(FLUSH_BOUND)
        {
            eprintln!("log export did not finish: {e}");
        }
    }
}

/// Installs the global subscriber (logs to stderr, spans to OpenTelemetry) and builds the
/// configured exporters. Call before the async runtime starts. Stdout stays free for command
/// output (`ask`, `records`). A second call (tests) keeps the first subscriber.
pub fn init(format: LogFormat, config: &TelemetryConfig, instance: &str) -> Telemetry {
    install(Some(format), config, instance)
}

/// Spans and their ids without log output or export: what a test process (or an embedder with
/// its own logging) needs for `done.trace_id`. A second call keeps the first subscriber.
pub fn init_traces_only() {
    let config = TelemetryConfig {
        service_name: "ragchat".into(),
        ..TelemetryConfig::default()
    };
    let _ = install(None, &config, "local");
}

fn install(format: Option<LogFormat>, config: &TelemetryConfig, instance: &str) -> Telemetry {
    let resource = export::resource(config, instance);
    let exporters = export::Exporters::new(config);
    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    let exporting = !exporters.spans.is_empty();
    for span_exporter in exporters.spans {
        tracer = span_exporter.install(tracer);
    }
    if !exporting {
        // No one reads spans: make none (ids still flow, and a sampled caller's trace goes on).
        tracer = tracer.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    }
    let tracer = tracer.build();
    let logger = (!exporters.logs.is_empty()).then(|| {
        let mut logger = SdkLoggerProvider::builder().with_resource(resource);
        for log_exporter in exporters.logs {
            logger = log_exporter.install(logger);
        }
        logger.build()
    });

    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(
        tracing_opentelemetry::layer()
            .with_tracer(tracer.tracer("ragchat"))
            // Per-poll work is what a streaming turn pays for every token: none of it.
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_threads(false)
            .with_target(false)
            // Only our spans; whatever `RAGCHAT_LOG` says (the trace id must not depend on it).
            .with_filter(Targets::new().with_target("ragchat", tracing::Level::INFO))
            .boxed(),
    );
    if let Some(format) = format {
        layers.push(stderr_layer(format));
    }
    if let Some(logger) = &logger {
        layers.push(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(logger)
                .with_filter(env_filter())
                // The SDK's own log lines (an export that failed) must not feed the export.
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    !m.target().starts_with("opentelemetry")
                }))
                .boxed(),
        );
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Telemetry {
        tracer,
        logger,
        metric_exporters: Some(exporters.metrics),
    }
}

/// `RAGCHAT_LOG` as a filter. A plain target/level list (the usual case) becomes a `Targets`
/// filter, which costs nothing when a span is entered; only directives on spans or fields need
/// an `EnvFilter`, which takes a shared lock on every enter and exit of every span — on a
/// streaming turn, per token and per layer.
fn env_filter() -> Box<dyn Filter<Registry> + Send + Sync> {
    let given = std::env::var("RAGCHAT_LOG").ok();
    let spec = given
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_FILTER);
    match spec.parse::<Targets>() {
        Ok(targets) => Box::new(targets),
        Err(_) => Box::new(EnvFilter::new(spec)),
    }
}

/// JSON lines with the trace and span ids, or compact text.
fn stderr_layer(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    match format {
        LogFormat::Json => {
            let mut json = json_subscriber::JsonLayer::stderr();
            json.with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime);
            json.with_level("level");
            json.with_flattened_event();
            json.with_target("target");
            json.with_current_span("span");
            json.add_dynamic_field("trace_id", |_, _| {
                propagation::ids_of_current().map(|(trace, _)| trace)
            });
            json.add_dynamic_field("span_id", |_, _| {
                propagation::ids_of_current().map(|(_, span)| span)
            });
            json.with_filter(env_filter()).boxed()
        }
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .with_filter(env_filter())
            .boxed(),
    }
}
