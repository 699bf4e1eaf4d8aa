//! The exporters [`TelemetryConfig`] names, each wrapped to count what it sent and what it
//! dropped (an export that failed: collector down, endpoint refusing). Those counts are the
//! `ragchat.telemetry.exported` / `ragchat.telemetry.dropped` metrics; a failed export is also one
//! warning from the SDK, never an error for a turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, LoggerProviderBuilder};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, TracerProviderBuilder};
use secrecy::ExposeSecret;

use crate::config::TelemetryConfig;

/// Application Insights over a blocking client: exports run on the SDK's own threads.
type AppInsights = opentelemetry_application_insights::Exporter<reqwest::blocking::Client>;

/// How long one export call to Application Insights may take.
const APPINSIGHTS_TIMEOUT: Duration = Duration::from_secs(10);

/// What one exporter of one signal sent and dropped since start.
#[derive(Debug)]
pub struct ExportCounts {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// `otlp` or `appinsights`.
    pub exporter: &'static str,
    /// Spans, log records or metric batches delivered.
    pub exported: AtomicU64,
    /// Those whose export failed.
    pub dropped: AtomicU64,
}

impl ExportCounts {
    const fn new(signal: &'static str, exporter: &'static str) -> Self {
        Self {
            signal,
            exporter,
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn count(&self, n: usize, result: &OTelSdkResult) {
        let counter = if result.is_ok() {
            &self.exported
        } else {
            &self.dropped
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Per process, as the exporters are.
pub static COUNTS: [ExportCounts; 6] = [
    ExportCounts::new("traces", "otlp"),
    ExportCounts::new("metrics", "otlp"),
    ExportCounts::new("logs", "otlp"),
    ExportCounts::new("traces", "appinsights"),
    ExportCounts::new("metrics", "appinsights"),
    ExportCounts::new("logs", "appinsights"),
];

/// An exporter that counts.
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
    counts: &'static ExportCounts,
}

impl<E> Counted<E> {
    fn new(inner: E, signal: &str, exporter: &str) -> Self {
        let counts = COUNTS
            .iter()
            .find(|c| c.signal == signal && c.exporter == exporter)
            .unwrap_or(&COUNTS[0]);
        Self { inner, counts }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.counts.count(n, &result);
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count();
        let result = self.inner.export(batch).await;
        self.counts.count(n, &result);
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.counts.count(1, &result);
        result
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// A span exporter, to install in the tracer provider.
pub enum SpanOut {
    /// OTLP over HTTP.
    Otlp(Counted<opentelemetry_otlp::SpanExporter>),
    /// Application Insights (requests and dependencies).
    AppInsights(Counted<AppInsights>),
}

impl SpanOut {
    /// Adds a batch processor for this exporter.
    pub fn install(self, builder: TracerProviderBuilder) -> TracerProviderBuilder {
        match self {
            Self::Otlp(e) => builder.with_batch_exporter(e),
            Self::AppInsights(e) => builder.with_batch_exporter(e),
        }
    }
}

/// A log exporter, to install in the logger provider.
pub enum LogOut {
    /// OTLP over HTTP.
    Otlp(Counted<opentelemetry_otlp::LogExporter>),
    /// Application Insights (traces, in its words).
    AppInsights(Counted<AppInsights>),
}

impl LogOut {
    /// Adds a batch processor for this exporter.
    pub fn install(self, builder: LoggerProviderBuilder) -> LoggerProviderBuilder {
        match self {
            Self::Otlp(e) => builder.with_batch_exporter(e),
            Self::AppInsights(e) => builder.with_batch_exporter(e),
        }
    }
}

/// The metric exporters, for the app's meter provider (pushed by a periodic reader,
/// `OTEL_METRIC_EXPORT_INTERVAL`, default 60 s).
#[derive(Default)]
pub struct MetricExporters {
    /// OTLP over HTTP.
    pub otlp: Option<Counted<opentelemetry_otlp::MetricExporter>>,
    /// Application Insights (customMetrics).
    pub appinsights: Option<Counted<AppInsights>>,
}

/// Every exporter the configuration names.
pub struct Exporters {
    pub spans: Vec<SpanOut>,
    pub logs: Vec<LogOut>,
    pub metrics: MetricExporters,
}

impl Exporters {
    /// Builds them. One that cannot be built (a malformed endpoint the SDK rejects) is reported
    /// on stderr and left out: telemetry never stops the service.
    pub fn new(config: &TelemetryConfig) -> Self {
        let mut out = Self {
            spans: Vec::new(),
            logs: Vec::new(),
            metrics: MetricExporters::default(),
        };
        if let Some(otlp) = &config.otlp {
            // Endpoints, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_*
            // variables, per signal where set (`/v1/traces` etc. appended to the base URL).
            use opentelemetry_otlp::WithExportConfig as _;
            let protocol = opentelemetry_otlp::Protocol::HttpBinary;
            if otlp.traces {
                match opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .build()
                {
                    Ok(e) => out
                        .spans
                        .push(SpanOut::Otlp(Counted::new(e, "traces", "otlp"))),
                    Err(e) => eprintln!("OTLP trace exporter not started: {e}"),
                }
            }
            if otlp.logs {
                match opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .build()
                {
                    Ok(e) => out.logs.push(LogOut::Otlp(Counted::new(e, "logs", "otlp"))),
                    Err(e) => eprintln!("OTLP log exporter not started: {e}"),
                }
            }
            if otlp.metrics {
                match opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .build()
                {
                    Ok(e) => out.metrics.otlp = Some(Counted::new(e, "metrics", "otlp")),
                    Err(e) => eprintln!("OTLP metric exporter not started: {e}"),
                }
            }
        }
        if let Some(connection) = &config.appinsights {
            match appinsights(connection.expose_secret()) {
                Ok((spans, logs, metrics)) => {
                    out.spans.push(SpanOut::AppInsights(Counted::new(
                        spans,
                        "traces",
                        "appinsights",
                    )));
                    out.logs.push(LogOut::AppInsights(Counted::new(
                        logs,
                        "logs",
                        "appinsights",
                    )));
                    out.metrics.appinsights = Some(Counted::new(metrics, "metrics", "appinsights"));
                }
                // The parser's message may quote the value: name the variable only.
                Err(()) => eprintln!(
                    "APPLICATIONINSIGHTS_CONNECTION_STRING: not a valid connection string; \
                     Application Insights export is off"
                ),
            }
        }
        out
    }
}

/// Three exporters (spans, logs, metrics) for one connection string.
fn appinsights(connection: &str) -> Result<(AppInsights, AppInsights, AppInsights), ()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(APPINSIGHTS_TIMEOUT)
        .build()
        .map_err(|_| ())?;
    let make = || {
        AppInsights::new_from_connection_string(connection, client.clone())
            .map(|e| e.with_resource_attributes_in_events_and_logs(false))
            .map_err(|_| ())
    };
    Ok((make()?, make()?, make()?))
}

/// `service.name`, `service.version`, `service.instance.id`, plus `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource(config: &TelemetryConfig, instance: &str) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", crate::VERSION),
            KeyValue::new("service.instance.id", instance.to_owned()),
        ])
        .build()
}
