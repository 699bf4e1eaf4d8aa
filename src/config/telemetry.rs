//! Where traces, metrics and logs go. The OpenTelemetry settings are the standard `OTEL_*`
//! variables (not new names), and Application Insights is the variable Azure sets. Everything is
//! off unless named here, except the Prometheus registry behind `/metrics`, which costs nothing
//! until scraped. The SDK itself reads the finer standard variables (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`, the per-signal
//! endpoints).

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, check_url, invalid};

/// Whether one signal goes to the OTLP endpoint (`OTEL_TRACES_EXPORTER` and its siblings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalExporter {
    /// To `OTEL_EXPORTER_OTLP_ENDPOINT`, when that is set.
    Otlp,
    /// Not exported.
    None,
}

/// Telemetry settings as given.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// OTLP collector base URL (OTLP over HTTP/protobuf, e.g. http://127.0.0.1:4318). Set: traces,
    /// metrics and logs are exported there. Unset: no OTLP export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport. Only http/protobuf is built in (port 4318 on collectors).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf",
        global = true
    )]
    pub otlp_protocol: String,

    /// Traces to OTLP: otlp or none.
    #[arg(
        long,
        env = "OTEL_TRACES_EXPORTER",
        value_enum,
        default_value = "otlp",
        global = true
    )]
    pub traces_exporter: SignalExporter,

    /// Metrics to OTLP: otlp or none (Prometheus `/metrics` is always served).
    #[arg(
        long,
        env = "OTEL_METRICS_EXPORTER",
        value_enum,
        default_value = "otlp",
        global = true
    )]
    pub metrics_exporter: SignalExporter,

    /// Logs to OTLP: otlp or none (stderr always gets them).
    #[arg(
        long,
        env = "OTEL_LOGS_EXPORTER",
        value_enum,
        default_value = "otlp",
        global = true
    )]
    pub logs_exporter: SignalExporter,

    /// The `service.name` of every span, metric and log.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "ragchat",
        global = true
    )]
    pub service_name: String,

    /// Application Insights connection string (Azure sets it on the Web App). Set: traces become
    /// requests and dependencies, plus metrics and logs, sent to its IngestionEndpoint. A secret:
    /// never logged.
    #[arg(
        long,
        env = "APPLICATIONINSIGHTS_CONNECTION_STRING",
        hide_env_values = true,
        global = true
    )]
    pub appinsights_connection_string: Option<SecretString>,
}

/// Validated telemetry settings.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// The OTLP base endpoint, when OTLP export is on.
    pub otlp: Option<OtlpSignals>,
    /// `service.name`.
    pub service_name: String,
    /// The Application Insights connection string.
    pub appinsights: Option<SecretString>,
}

/// Which signals go to the OTLP endpoint.
#[derive(Debug, Clone)]
pub struct OtlpSignals {
    /// Base URL; the exporters add `/v1/traces`, `/v1/metrics`, `/v1/logs`.
    pub endpoint: String,
    /// Spans.
    pub traces: bool,
    /// Metrics.
    pub metrics: bool,
    /// Log records.
    pub logs: bool,
}

impl TelemetryArgs {
    /// Checks the endpoint, the transport and the connection string's shape.
    pub fn validate(&self) -> Result<TelemetryConfig, ConfigError> {
        let otlp = match self.otlp_endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(endpoint) => {
                check_url("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)?;
                if self.otlp_protocol != "http/protobuf" {
                    return Err(invalid(
                        "OTEL_EXPORTER_OTLP_PROTOCOL",
                        format!(
                            "{:?} is not supported; use http/protobuf (collectors listen on 4318)",
                            self.otlp_protocol
                        ),
                    ));
                }
                Some(OtlpSignals {
                    endpoint: endpoint.trim_end_matches('/').to_owned(),
                    traces: self.traces_exporter == SignalExporter::Otlp,
                    metrics: self.metrics_exporter == SignalExporter::Otlp,
                    logs: self.logs_exporter == SignalExporter::Otlp,
                })
            }
        };
        let appinsights = match &self.appinsights_connection_string {
            Some(s) if !s.expose_secret().trim().is_empty() => {
                let has = |key: &str| {
                    s.expose_secret()
                        .split(';')
                        .any(|part| part.trim().to_ascii_lowercase().starts_with(key))
                };
                if !has("instrumentationkey=") {
                    // The value itself is a secret: say what is missing, not what was given.
                    return Err(invalid(
                        "APPLICATIONINSIGHTS_CONNECTION_STRING",
                        "has no InstrumentationKey=…; copy the whole connection string from the \
                         Application Insights resource",
                    ));
                }
                Some(s.clone())
            }
            _ => None,
        };
        if self.service_name.trim().is_empty() {
            return Err(invalid("OTEL_SERVICE_NAME", "must not be empty"));
        }
        Ok(TelemetryConfig {
            otlp,
            service_name: self.service_name.trim().to_owned(),
            appinsights,
        })
    }
}

impl TelemetryConfig {
    /// Where telemetry goes, for the start-up log line (no secret).
    pub fn describe(&self) -> String {
        let mut to = vec!["prometheus(/metrics)".to_owned()];
        if let Some(otlp) = &self.otlp {
            let signals: Vec<&str> = [
                (otlp.traces, "traces"),
                (otlp.metrics, "metrics"),
                (otlp.logs, "logs"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            to.push(format!(
                "otlp({} → {})",
                signals.join(","),
                super::redact_endpoint(&otlp.endpoint)
            ));
        }
        if self.appinsights.is_some() {
            to.push("application-insights".into());
        }
        to.join(", ")
    }
}
