//! How a turn ended, as one value ([`TurnOutcome`]) that knows the client's final frame and the
//! turn's record, so the two always agree.

use std::time::Instant;

use super::Ending;
use super::generate::Generation;
use super::protocol::{Done, ErrorFrame, ServerFrame, Source};
use super::request::TurnSummary;
use super::retrieve::Retrieved;
use crate::error::{ApiError, ErrorCode};
use crate::store::{RecordError, RecordSource, TurnRecord, TurnStatus, now_rfc3339};
use crate::telemetry::TurnMetrics;
use crate::turn::{FinishReason, Timings, Usage, ms};

/// Everything a turn produced, whether it completed, was cancelled or failed.
pub struct TurnOutcome {
    /// Who asked what, when.
    pub turn: TurnSummary,
    /// Whether the client got `sources` and `token` frames (else `done` carries the sources).
    pub streamed: bool,
    /// The sources shown to the model.
    pub sources: Vec<Source>,
    /// What was searched, once the turn got that far.
    pub search_query: Option<String>,
    /// Earlier question-and-answer pairs the prompt included.
    pub history_turns: u32,
    /// The answer, partial unless it completed.
    pub answer: String,
    /// Token counts.
    pub usage: Usage,
    /// Where the time went.
    pub timings: Timings,
    /// How it ended.
    pub ending: Ending,
    /// The turn's trace id, when it is traced.
    pub trace_id: Option<String>,
}

impl TurnOutcome {
    /// A turn that has not produced anything yet.
    pub fn new(turn: TurnSummary, streamed: bool) -> Self {
        Self {
            turn,
            streamed,
            sources: Vec::new(),
            search_query: None,
            history_turns: 0,
            answer: String::new(),
            usage: Usage::default(),
            timings: Timings::default(),
            ending: Ending::Cancelled,
            trace_id: None,
        }
    }

    /// A turn whose task failed unexpectedly (a panic): nothing it produced survives, but the
    /// client gets `internal` and the audit trail its record.
    pub fn panicked(turn: TurnSummary) -> Self {
        Self {
            ending: Ending::Failed(ApiError::new(
                ErrorCode::Internal,
                "the turn failed unexpectedly",
            )),
            ..Self::new(turn, false)
        }
    }

    /// Takes in what retrieval found.
    pub fn retrieved(&mut self, retrieved: &Retrieved) {
        self.sources.clone_from(&retrieved.sources);
        self.search_query = Some(retrieved.search_query.clone());
        self.timings.embed = retrieved.embed_ms;
        self.timings.rewrite = retrieved.rewrite_ms;
        self.timings.retrieve = retrieved.retrieve_ms;
    }

    /// Takes in what generation produced.
    pub fn generated(&mut self, generation: Generation) {
        self.answer = generation.answer;
        self.usage = generation.usage;
        self.timings.ttft = generation.ttft_ms;
        self.timings.generate = generation.generate_ms;
        self.ending = generation.ending;
    }

    /// Stops the clock: `started` is when the ask arrived.
    pub fn finish(&mut self, started: Instant) {
        self.timings.total = ms(started);
    }

    /// The source numbers the answer cites.
    fn citations(&self) -> Vec<u32> {
        super::prompt::citations(&self.answer, self.sources.len())
    }

    /// The last frame the client gets: `done`, or `error` for a failed turn.
    pub fn frame(&self) -> ServerFrame {
        let finish_reason = match &self.ending {
            Ending::Failed(e) => {
                let turn_id = Some(self.turn.turn_id.clone());
                return ServerFrame::Error(ErrorFrame {
                    trace_id: self.trace_id.clone(),
                    ..ErrorFrame::new(turn_id, e.clone())
                });
            }
            Ending::Finished(reason) => *reason,
            Ending::Cancelled => FinishReason::Cancelled,
        };
        ServerFrame::Done(Box::new(Done {
            turn_id: self.turn.turn_id.clone(),
            conversation_id: self.turn.conversation_id.clone(),
            answer: self.answer.clone(),
            citations: self.citations(),
            finish_reason,
            history_turns: self.history_turns,
            usage: self.usage,
            timings_ms: self.timings,
            sources: (!self.streamed).then(|| self.sources.clone()),
            search_query: if self.streamed {
                None
            } else {
                self.search_query.clone()
            },
            trace_id: self.trace_id.clone(),
        }))
    }

    /// What the metrics and the turn's span take from it.
    pub fn metrics(&self) -> TurnMetrics {
        TurnMetrics {
            outcome: self.status().as_str(),
            error_code: match &self.ending {
                Ending::Failed(e) => Some(e.code.as_str()),
                _ => None,
            },
            timings: self.timings,
            usage: self.usage,
        }
    }

    /// Puts how the turn ended on its `chat.turn` span (the current one).
    pub fn annotate(&self, span: &tracing::Span) {
        span.record("outcome", self.status().as_str());
        match &self.ending {
            Ending::Finished(reason) => {
                span.record("finish_reason", reason.as_str());
            }
            Ending::Cancelled => {
                span.record("finish_reason", FinishReason::Cancelled.as_str());
            }
            Ending::Failed(e) => {
                span.record("error_code", e.code.as_str());
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", e.message.as_str());
            }
        }
        if let Some(n) = self.usage.prompt_tokens {
            span.record("gen_ai.usage.input_tokens", i64::from(n));
        }
        if let Some(n) = self.usage.completion_tokens {
            span.record("gen_ai.usage.output_tokens", i64::from(n));
        }
        span.record("sources", self.sources.len() as i64);
    }

    /// One line in the log for the operator.
    pub fn log(&self) {
        tracing::info!(
            status = ?self.status(),
            embed_ms = self.timings.embed,
            retrieve_ms = self.timings.retrieve,
            ttft_ms = self.timings.ttft,
            total_ms = self.timings.total,
            completion_tokens = self.usage.completion_tokens,
            "turn ended"
        );
    }

    fn status(&self) -> TurnStatus {
        match self.ending {
            Ending::Finished(_) => TurnStatus::Completed,
            Ending::Cancelled => TurnStatus::Cancelled,
            Ending::Failed(_) => TurnStatus::Failed,
        }
    }

    /// The turn's record, as the client saw the turn; `model` answered it.
    pub fn record(self, model: &str) -> TurnRecord {
        let citations = self.citations();
        let status = self.status();
        let (finish_reason, error) = match self.ending {
            Ending::Finished(reason) => (Some(reason), None),
            Ending::Cancelled => (Some(FinishReason::Cancelled), None),
            Ending::Failed(e) => (
                None,
                Some(RecordError {
                    code: e.code,
                    message: e.message,
                }),
            ),
        };
        TurnRecord {
            id: self.turn.turn_id,
            conversation_id: self.turn.store_conversation_id,
            user: self.turn.user,
            client_user: self.turn.client_user,
            question: self.turn.question,
            answer: self.answer,
            status,
            error,
            finish_reason,
            sources: self.sources.iter().map(record_source).collect(),
            search_query: self.search_query,
            citations,
            model: model.to_owned(),
            usage: self.usage,
            timings_ms: self.timings,
            created_at: self.turn.created_at,
            completed_at: now_rfc3339(),
            app_version: crate::VERSION.to_owned(),
            trace_id: self.trace_id,
            feedback: None,
        }
    }
}

/// A source as recorded: no text (the index keeps it), the score to 6 decimals.
fn record_source(s: &Source) -> RecordSource {
    RecordSource {
        n: s.n,
        chunk_id: s.chunk_id.clone(),
        source: s.source.clone(),
        page: s.page,
        score: (f64::from(s.score) * 1e6).round() / 1e6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> TurnSummary {
        TurnSummary {
            turn_id: "t1".into(),
            conversation_id: "c1".into(),
            question: "q".into(),
            user: None,
            client_user: None,
            store_conversation_id: "c1".into(),
            created_at: now_rfc3339(),
        }
    }

    fn outcome(ending: Ending) -> TurnOutcome {
        TurnOutcome {
            sources: vec![Source {
                n: 1,
                chunk_id: "id1".into(),
                source: "docs/a.md".into(),
                title: "A".into(),
                page: None,
                text: "alpha".into(),
                score: 0.123_456_79,
            }],
            answer: "Alpha [1] and [2].".into(),
            ending,
            ..TurnOutcome::new(summary(), true)
        }
    }

    #[test]
    fn the_frame_and_the_record_agree_for_every_ending() {
        let failed = ApiError::new(ErrorCode::LlmUnavailable, "down");
        let cases = [
            (
                Ending::Finished(FinishReason::Length),
                TurnStatus::Completed,
            ),
            (Ending::Cancelled, TurnStatus::Cancelled),
            (Ending::Failed(failed), TurnStatus::Failed),
        ];
        for (ending, status) in cases {
            let outcome = outcome(ending);
            let frame = outcome.frame();
            let record = outcome.record("m");
            assert_eq!(record.status, status);
            match frame {
                ServerFrame::Done(done) => {
                    assert_eq!(Some(done.finish_reason), record.finish_reason);
                    assert_eq!(done.citations, record.citations);
                    assert_eq!(done.citations, [1], "only sources that exist");
                    assert_eq!(done.answer, record.answer);
                    assert!(done.sources.is_none(), "a streamed turn sent them already");
                    assert!(record.error.is_none());
                }
                ServerFrame::Error(e) => {
                    let error = record.error.expect("a failed record says why");
                    assert_eq!((e.code, e.message), (error.code, error.message));
                    assert_eq!(e.turn_id.as_deref(), Some("t1"));
                    assert_eq!(record.finish_reason, None);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(record.sources[0].score, 0.123457, "scores to 6 decimals");
        }
    }

    #[test]
    fn metric_and_span_names_are_the_wire_names() {
        for reason in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Cancelled,
            FinishReason::ContentFilter,
        ] {
            assert_eq!(serde_json::json!(reason), reason.as_str());
        }
        for status in [
            TurnStatus::Completed,
            TurnStatus::Cancelled,
            TurnStatus::Failed,
        ] {
            assert_eq!(serde_json::json!(status), status.as_str());
        }
    }

    #[test]
    fn a_panicked_turn_is_an_internal_error_with_nothing_produced() {
        let outcome = TurnOutcome::panicked(summary());
        assert!(matches!(
            outcome.frame(),
            ServerFrame::Error(ErrorFrame {
                code: ErrorCode::Internal,
                ..
            })
        ));
        let record = outcome.record("m");
        assert_eq!(record.status, TurnStatus::Failed);
        assert!(record.answer.is_empty() && record.sources.is_empty());
    }
}
