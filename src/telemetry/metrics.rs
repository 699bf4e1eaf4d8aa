//! The service's metrics: OpenTelemetry instruments (semantic-convention names where one exists,
//! `ragchat.*` otherwise) in one meter provider per app, read by a Prometheus registry
//! (`GET /metrics`) and pushed to OTLP / Application Insights when configured. Hot-path
//! instruments (one histogram record per token) take no attributes; gauges and the record path's
//! counters are read at collection time from what the service already counts.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::export::{COUNTS, MetricExporters};
use crate::config::TelemetryConfig;
use crate::turn::{Timings, Usage};

/// Bucket bounds, in seconds, for what a turn measures: sub-millisecond (retrieval, added
/// latency), tens of milliseconds apart where models put their inter-token gaps (10–100 ms) and
/// first tokens (0.1–2 s), to a minute (whole turns). A percentile is only as fine as its bucket.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08,
    0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds for tokens per turn.
const TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// How long shutdown waits for the last metric push.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// How a turn went, for the metrics (what `done.timings_ms` and `usage` say).
pub struct TurnMetrics {
    /// `completed`, `cancelled` or `failed`.
    pub outcome: &'static str,
    /// The error code of a failed turn.
    pub error_code: Option<&'static str>,
    /// Where the time went (milliseconds).
    pub timings: Timings,
    /// Tokens, as the model reported them.
    pub usage: Usage,
}

/// A value read at collection time, with its attributes.
pub type Observed = Vec<(u64, Vec<KeyValue>)>;

/// The instruments, and the registry `/metrics` renders.
pub struct Metrics {
    provider: SdkMeterProvider,
    meter: Meter,
    registry: prometheus::Registry,
    sessions_opened: Counter<u64>,
    sessions_closed: Counter<u64>,
    turns: Counter<u64>,
    ttft: Histogram<f64>,
    token_gap: Histogram<f64>,
    turn_duration: Histogram<f64>,
    embed: Histogram<f64>,
    retrieve: Histogram<f64>,
    history: Histogram<f64>,
    rewrite: Histogram<f64>,
    tokens: Histogram<u64>,
    record_write: Histogram<f64>,
    http_duration: Histogram<f64>,
}

impl Metrics {
    /// A meter provider read by Prometheus and pushed by `exporters`.
    pub fn new(
        config: &TelemetryConfig,
        instance: &str,
        exporters: MetricExporters,
    ) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()?;
        let mut provider = SdkMeterProvider::builder()
            .with_resource(super::export::resource(config, instance))
            .with_reader(prometheus);
        if let Some(otlp) = exporters.otlp {
            provider = provider.with_reader(PeriodicReader::builder(otlp).build());
        }
        if let Some(appinsights) = exporters.appinsights {
            provider = provider.with_reader(PeriodicReader::builder(appinsights).build());
        }
        let provider = provider.build();
        let meter = provider.meter("ragchat");
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(SECONDS.to_vec())
                .build()
        };
        let metrics = Self {
            sessions_opened: meter
                .u64_counter("ragchat.sessions.opened")
                .with_unit("{session}")
                .with_description("WebSocket sessions opened")
                .build(),
            sessions_closed: meter
                .u64_counter("ragchat.sessions.closed")
                .with_unit("{session}")
                .with_description("WebSocket sessions closed, by close code (none: no close sent)")
                .build(),
            turns: meter
                .u64_counter("ragchat.turns")
                .with_unit("{turn}")
                .with_description("Turns ended, by outcome and error code")
                .build(),
            ttft: seconds(
                "gen_ai.server.time_to_first_token",
                "From the ask to the first answer token sent",
            ),
            token_gap: seconds(
                "gen_ai.server.time_per_output_token",
                "Gap between consecutive answer tokens (inter-token latency)",
            ),
            turn_duration: seconds("ragchat.turn.duration", "From the ask to the final frame"),
            embed: seconds("ragchat.embed.duration", "Embedding the question"),
            retrieve: seconds("ragchat.retrieve.duration", "Searching the index"),
            history: seconds(
                "ragchat.history.duration",
                "Loading a stored conversation (alongside the embedding)",
            ),
            rewrite: seconds(
                "ragchat.rewrite.duration",
                "Rewriting a follow-up into a standalone search query, by outcome \
                 (rewritten, unchanged, timeout, error, unusable)",
            ),
            record_write: seconds(
                "ragchat.record.duration",
                "From queueing a turn's record to the store (or spool) taking it",
            ),
            http_duration: seconds(
                "http.server.request.duration",
                "HTTP requests other than the WebSocket upgrade, by route and status",
            ),
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Tokens per turn, by gen_ai.token.type (input, output)")
                .with_boundaries(TOKENS.to_vec())
                .build(),
            provider,
            meter,
            registry,
        };
        metrics.observe_exports();
        metrics.observe_process();
        Ok(metrics)
    }

    /// A registry only, for the test doubles.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn local() -> Self {
        Self::new(
            &TelemetryConfig {
                service_name: "ragchat".into(),
                ..TelemetryConfig::default()
            },
            "local",
            MetricExporters::default(),
        )
        .unwrap_or_else(|e| panic!("a Prometheus registry builds: {e}"))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }

    /// Flushes the push exporters (bounded) and stops the readers.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_BOUND) {
            tracing::warn!(error = %e, "metric export did not finish");
        }
    }

    /// A socket was upgraded.
    pub fn session_opened(&self) {
        self.sessions_opened.add(1, &[]);
    }

    /// A session ended with `code` sent (or none).
    pub fn session_closed(&self, code: Option<u16>) {
        let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        self.sessions_closed
            .add(1, &[KeyValue::new("close_code", code)]);
    }

    /// The gap since the previous token of an answer.
    pub fn token_gap(&self, gap: Duration) {
        self.token_gap.record(gap.as_secs_f64(), &[]);
    }

    /// A turn ended.
    pub fn turn_ended(&self, turn: &TurnMetrics) {
        let outcome = KeyValue::new("outcome", turn.outcome);
        self.turns.add(
            1,
            &[
                outcome.clone(),
                KeyValue::new("error_code", turn.error_code.unwrap_or("")),
            ],
        );
        let t = &turn.timings;
        self.turn_duration
            .record(t.total / 1e3, std::slice::from_ref(&outcome));
        if let Some(ttft) = t.ttft {
            self.ttft.record(ttft / 1e3, &[]);
        }
        if t.embed > 0.0 || t.retrieve > 0.0 {
            self.embed.record(t.embed / 1e3, &[]);
            self.retrieve.record(t.retrieve / 1e3, &[]);
        }
        for (tokens, kind) in [
            (turn.usage.prompt_tokens, "input"),
            (turn.usage.completion_tokens, "output"),
        ] {
            if let Some(n) = tokens {
                self.tokens
                    .record(u64::from(n), &[KeyValue::new("gen_ai.token.type", kind)]);
            }
        }
    }

    /// Loading a stored conversation took `took`.
    pub fn history_loaded(&self, took: Duration) {
        self.history.record(took.as_secs_f64(), &[]);
    }

    /// A follow-up's query rewrite ended with `outcome` after `took` (a fallback to the
    /// question as asked is `timeout`, `error` or `unusable`).
    pub fn query_rewritten(&self, outcome: &'static str, took: Duration) {
        self.rewrite
            .record(took.as_secs_f64(), &[KeyValue::new("outcome", outcome)]);
    }

    /// The record path's latency histogram, for the recorder.
    pub fn record_latency(&self) -> Histogram<f64> {
        self.record_write.clone()
    }

    /// An HTTP request on `route` answered `status` after `took`.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }

    /// A gauge read at collection time.
    pub fn gauge(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        read: impl Fn() -> Observed + Send + Sync + 'static,
    ) {
        self.meter
            .u64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| {
                for (value, attributes) in read() {
                    o.observe(value, &attributes);
                }
            })
            .build();
    }

    /// A monotonic count kept elsewhere, read at collection time.
    pub fn counter(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        read: impl Fn() -> Observed + Send + Sync + 'static,
    ) {
        self.meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| {
                for (value, attributes) in read() {
                    o.observe(value, &attributes);
                }
            })
            .build();
    }

    fn observe_exports(&self) {
        let read = |dropped: bool| {
            move || {
                COUNTS
                    .iter()
                    .map(|c| {
                        let n = if dropped { &c.dropped } else { &c.exported };
                        (
                            n.load(std::sync::atomic::Ordering::Relaxed),
                            vec![
                                KeyValue::new("signal", c.signal),
                                KeyValue::new("exporter", c.exporter),
                            ],
                        )
                    })
                    .filter(|(n, _)| *n > 0)
                    .collect()
            }
        };
        self.counter(
            "ragchat.telemetry.exported",
            "{item}",
            "Spans, log records and metric batches exported",
            read(false),
        );
        self.counter(
            "ragchat.telemetry.dropped",
            "{item}",
            "Spans, log records and metric batches whose export failed (collector unreachable)",
            read(true),
        );
    }

    fn observe_process(&self) {
        self.meter
            .f64_observable_counter("process.cpu.time")
            .with_unit("s")
            .with_description("CPU time of this process, user and system")
            .with_callback(|o| {
                if let Some((user, system)) = process::cpu() {
                    o.observe(user, &[KeyValue::new("cpu.mode", "user")]);
                    o.observe(system, &[KeyValue::new("cpu.mode", "system")]);
                }
            })
            .build();
        self.gauge(
            "process.memory.usage",
            "By",
            "Resident memory of this process",
            || {
                process::rss()
                    .map(|b| vec![(b, Vec::new())])
                    .unwrap_or_default()
            },
        );
    }
}

/// What the kernel says about this process (Linux; nothing elsewhere).
mod process {
    /// User and system CPU seconds, from `/proc/self/stat`.
    pub fn cpu() -> Option<(f64, f64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let mut fields = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let hz = rustix::param::clock_ticks_per_second() as f64;
        Some((utime as f64 / hz, stime as f64 / hz))
    }

    /// Resident bytes, from `/proc/self/statm`.
    pub fn rss() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * rustix::param::page_size() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_shows_in_the_exposition_with_units_and_buckets() {
        let metrics = Metrics::local();
        metrics.session_opened();
        metrics.turn_ended(&TurnMetrics {
            outcome: "completed",
            error_code: None,
            timings: Timings {
                embed: 12.0,
                rewrite: None,
                retrieve: 0.4,
                ttft: Some(250.0),
                generate: 900.0,
                total: 1200.0,
            },
            usage: Usage {
                prompt_tokens: Some(300),
                completion_tokens: Some(40),
            },
        });
        metrics.token_gap(Duration::from_micros(300));
        let text = metrics.render();
        assert!(text.contains("ragchat_turns_total{"), "{text}");
        assert!(text.contains("outcome=\"completed\""), "{text}");
        assert!(
            text.contains("gen_ai_server_time_to_first_token_seconds_bucket{le=\"0.25\""),
            "TTFT in seconds with sub-second buckets: {text}"
        );
        assert!(
            text.contains("gen_ai_server_time_per_output_token_seconds_bucket{le=\"0.0005\"} 1"),
            "a 0.3 ms gap lands in the 0.5 ms bucket: {text}"
        );
        assert!(text.contains("gen_ai_token_type=\"output\""), "{text}");
        assert!(text.contains("ragchat_sessions_opened_total 1"), "{text}");
        assert!(text.contains("process_memory_usage_bytes"), "{text}");
        assert!(
            text.contains("service_name=\"ragchat\""),
            "target_info: {text}"
        );
    }
}
