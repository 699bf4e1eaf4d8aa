//! One chat turn, as a short sequence of phases: `retrieve` (embed the question, load the
//! conversation, search) → the `sources` frame → [`prompt`] → `generate` (stream the answer) → a
//! [`TurnOutcome`] that gives the client its final frame and the record path its record. Also the
//! wire protocol and the per-socket session that runs turns.

use std::pin::Pin;
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;
use crate::turn::FinishReason;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fakes;
pub mod feedback;
mod generate;
mod history;
pub mod prompt;
pub mod protocol;
mod record;
mod request;
mod retrieve;
pub mod rewrite;
pub mod session;

pub use record::TurnOutcome;
pub use request::{TurnRequest, TurnSummary};

use protocol::{ServerFrame, Sources};

/// What a turn produces, in order: sources, tokens, then one final frame.
pub enum TurnEvent<'a> {
    /// The retrieved sources (streaming turns only).
    Sources(&'a Sources),
    /// A piece of the answer (streaming turns only).
    Token(&'a str),
    /// `done` or `error`: the last frame of the turn.
    Final(&'a ServerFrame),
}

/// The receiving end has gone away (socket closed); the turn stops generating.
#[derive(Debug)]
pub struct OutputGone;

/// Where a turn's frames go: a WebSocket, or the terminal for `ragchat ask`.
#[async_trait]
pub trait TurnOutput: Send {
    /// Delivers one event.
    async fn emit(&mut self, event: TurnEvent<'_>) -> Result<(), OutputGone>;

    /// The turn's record, before its final frame goes out (a session keeps its recent ones, so
    /// that `feedback` on them can be recorded).
    fn recorded(&mut self, _record: &crate::store::TurnRecord) {}
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The model finished its answer (stop or length).
    Finished(FinishReason),
    /// The client, its socket or shutdown cancelled it.
    Cancelled,
    /// An error ended it; the client gets this error.
    Failed(ApiError),
}

/// The turn's cancellation, checked at every step. One future for the whole turn: a fresh one
/// per token would register and unregister a waiter each time.
pub struct Watch {
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Watch {
    /// Watches `token`.
    pub fn new(token: &CancellationToken) -> Self {
        Self {
            cancelled: Box::pin(token.clone().cancelled_owned()),
        }
    }

    /// What `step` returns, or `None` when the turn is cancelled first.
    pub async fn guard<F: Future>(&mut self, step: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = &mut self.cancelled => None,
            output = step => Some(output),
        }
    }
}

/// The turn's root span, `chat.turn`; how it ended is recorded on it at the end.
pub fn turn_span(request: &TurnRequest, model: &str) -> tracing::Span {
    tracing::info_span!("chat.turn",
        otel.kind = "server",
        turn_id = %request.turn_id,
        conversation_id = %request.conversation_id,
        user = request.user.as_deref(),
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        outcome = tracing::field::Empty,
        finish_reason = tracing::field::Empty,
        error_code = tracing::field::Empty,
        sources = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty)
}

/// Runs one turn to its end and queues its record. `started` is when the ask arrived; `span` is
/// the turn's [`turn_span`]. The span is entered around each phase, not around the whole turn:
/// the answer's relay polls once or twice per token, and an enter and exit there (which the
/// OpenTelemetry bridge turns into a lock and a clock read) would be paid per token. Returns
/// the completion tokens it spent (as the model reported them, else estimated from the answer),
/// which count against the day's allowance.
pub async fn run_turn(
    state: &AppState,
    mut request: TurnRequest,
    started: Instant,
    cancel: CancellationToken,
    out: &mut dyn TurnOutput,
    span: &tracing::Span,
) -> u64 {
    let mut watch = Watch::new(&cancel);
    let history = std::mem::take(&mut request.history);
    let mut outcome = TurnOutcome::new(TurnSummary::from(&request), request.stream);
    outcome.trace_id = crate::telemetry::trace_id(span);
    let retrieved = retrieve::retrieve(state, &request, history, &mut watch)
        .instrument(span.clone())
        .await;
    match retrieved {
        Err(ending) => outcome.ending = ending,
        Ok(retrieved) => {
            outcome.retrieved(&retrieved);
            if request.stream && !send_sources(&request, &outcome, out, &mut watch).await {
                outcome.ending = Ending::Cancelled;
            } else {
                let prompt = prompt::for_turn(
                    &state.config.chat,
                    &outcome.sources,
                    &retrieved.history,
                    &request.question,
                );
                outcome.history_turns = prompt.history_turns;
                let generation = generate::generate(
                    state,
                    prompt.messages,
                    (request.stream, started),
                    out,
                    &mut watch,
                    span,
                )
                .await;
                outcome.generated(generation);
            }
        }
    }
    outcome.finish(started);
    let frame = outcome.frame();
    span.in_scope(|| outcome.log());
    outcome.annotate(span);
    state.metrics.turn_ended(&outcome.metrics());
    let spent = outcome
        .usage
        .completion_tokens
        .map_or_else(|| prompt::cost_tokens(&outcome.answer) as u64, u64::from);
    // The record first — on disk when the journal is on (a few milliseconds; the store is not
    // waited for) — then the client hears the end: a crash after `done` cannot lose the turn.
    // A closed socket does not stop the record.
    let record = outcome.record(state.llm.model());
    out.recorded(&record);
    state.recorder.record(record).instrument(span.clone()).await;
    let _ = out.emit(TurnEvent::Final(&frame)).await;
    spent
}

/// Sends the `sources` frame; false when the turn was cancelled or the client is gone.
async fn send_sources(
    request: &TurnRequest,
    outcome: &TurnOutcome,
    out: &mut dyn TurnOutput,
    watch: &mut Watch,
) -> bool {
    let frame = Sources {
        turn_id: request.turn_id.clone(),
        conversation_id: request.conversation_id.clone(),
        sources: outcome.sources.clone(),
        search_query: outcome.search_query.clone().unwrap_or_default(),
    };
    matches!(
        watch.guard(out.emit(TurnEvent::Sources(&frame))).await,
        Some(Ok(()))
    )
}

#[cfg(test)]
mod tests;
