//! W3C trace context: read from an incoming upgrade (a front end's trace goes on), written onto
//! outgoing LLM and embedding requests (their spans join the turn's trace), and the ids a `done`
//! frame, a record and a log line carry.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` (and `tracestate`) of `headers` as a parent context; `None` when absent or
/// malformed (the turn then starts its own trace).
pub fn parent_from(headers: &axum::http::HeaderMap) -> Option<Context> {
    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(axum::http::HeaderName::as_str).collect()
        }
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The current span's trace context as headers to send upstream (`traceparent`, `tracestate`);
/// empty outside a traced span.
pub fn inject() -> reqwest::header::HeaderMap {
    struct Headers(reqwest::header::HeaderMap);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                reqwest::header::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let mut headers = Headers(reqwest::header::HeaderMap::new());
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut headers);
    }
    headers.0
}

/// The trace id of `span` (32 hex digits), when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace and span ids of the span a log event happened in: the innermost one, whatever
/// `RAGCHAT_LOG` lets the log show (a `warn` line in a turn still names the turn's trace).
pub(super) fn ids_of_current() -> Option<(String, String)> {
    let id = tracing::Span::current().id()?;
    let cx = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(&id, dispatch)
    })?;
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_a_parent_and_a_bad_one_is_ignored() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        let cx = parent_from(&headers).expect("a parent");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        assert!(parent_from(&headers).is_none(), "an all-zero trace id");
        headers.insert("traceparent", "garbage".parse().expect("header"));
        assert!(parent_from(&headers).is_none());
        assert!(parent_from(&axum::http::HeaderMap::new()).is_none());
    }
}
