//! The second phase of a turn: stream the answer from the chat model, relaying each token to the
//! client as it comes.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{Ending, TurnEvent, TurnOutput, Watch};
use crate::llm::{ChatEvent, ChatMessage, ChatStream};
use crate::state::AppState;
use crate::telemetry::Metrics;
use crate::turn::{FinishReason, Usage, ms};

/// What generation produced, however it ended.
pub struct Generation {
    /// The answer; partial when cancelled or failed mid-stream.
    pub answer: String,
    /// Token counts, as the model reported them.
    pub usage: Usage,
    /// From the ask to the first token, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// From the first token to the end, in milliseconds.
    pub generate_ms: f64,
    /// How it ended.
    pub ending: Ending,
    /// When the first token came.
    first_token: Option<Instant>,
    /// Stream events with text.
    pieces: u32,
}

/// Streams the answer to `messages`. Tokens go to `out` when `stream` is set; `started` is when
/// the ask arrived. The answer is cut (`length`) past `RAGCHAT_LLM_MAX_TOKENS` (counted here:
/// an upstream may ignore it) or `RAGCHAT_MAX_ANSWER_SECS`.
pub async fn generate(
    state: &AppState,
    messages: Vec<ChatMessage>,
    (stream, started): (bool, Instant),
    out: &mut dyn TurnOutput,
    watch: &mut Watch,
    turn: &tracing::Span,
) -> Generation {
    let mut generation = Generation {
        answer: String::new(),
        usage: Usage::default(),
        ttft_ms: None,
        generate_ms: 0.0,
        ending: Ending::Cancelled,
        first_token: None,
        pieces: 0,
    };
    let span = tracing::info_span!(
        parent: turn,
        "llm.stream",
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = state.llm.model(),
        http.response.status_code = tracing::field::Empty,
        ttft_ms = tracing::field::Empty,
        tokens = tracing::field::Empty
    );
    // Dropping the answer stream drops the upstream request at once.
    let request = state.llm.stream(messages).instrument(span.clone());
    generation.ending = match watch.guard(request).await {
        None => Ending::Cancelled,
        Some(Err(e)) => {
            span.in_scope(|| tracing::warn!(error = %e, "chat model request failed"));
            Ending::Failed(e.into())
        }
        Some(Ok(mut answer)) => {
            let caps = Caps::of(state);
            // No span is entered while tokens relay (an enter and an exit per token for
            // nothing): `llm.stream` stays open until the answer ends, and is entered only
            // around the relay's rare log lines.
            relay(
                &mut answer,
                &mut generation,
                (stream, caps),
                (started, &state.metrics),
                (out, &span),
                watch,
            )
            .await
        }
    };
    if let Some(first) = generation.first_token {
        generation.generate_ms = ms(first);
    }
    if let Some(ttft) = generation.ttft_ms {
        span.record("ttft_ms", ttft);
    }
    span.record("tokens", i64::from(generation.pieces));
    generation
}

/// Where an answer is cut whatever the model does: a little past the token limit it was sent
/// (in stream events, and in bytes for a model that sends much per event), and a duration.
struct Caps {
    pieces: u32,
    bytes: usize,
    duration: Duration,
}

impl Caps {
    fn of(state: &AppState) -> Self {
        let tokens = state.config.llm.max_tokens;
        Self {
            pieces: tokens.saturating_add(tokens / 10).saturating_add(8),
            bytes: (tokens as usize).saturating_mul(32),
            duration: state.config.limits.max_answer,
        }
    }
}

/// Reads the answer to its end, appending tokens to `generation` (and to `out` when streaming).
async fn relay(
    answer: &mut ChatStream,
    generation: &mut Generation,
    (stream, most): (bool, Caps),
    (started, metrics): (Instant, &Metrics),
    (out, span): (&mut dyn TurnOutput, &tracing::Span),
    watch: &mut Watch,
) -> Ending {
    let mut finish = FinishReason::Stop;
    let deadline = tokio::time::sleep(most.duration);
    tokio::pin!(deadline);
    let mut last = None;
    loop {
        let next = tokio::select! {
            biased;
            () = &mut deadline => None,
            event = watch.guard(answer.next()) => Some(event),
        };
        let Some(event) = next else {
            span.in_scope(|| {
                tracing::warn!(
                    secs = most.duration.as_secs(),
                    "answer cut at RAGCHAT_MAX_ANSWER_SECS"
                );
            });
            return Ending::Finished(FinishReason::Length);
        };
        let Some(event) = event else {
            return Ending::Cancelled;
        };
        match event {
            // A `ChatStream` ends with a finish reason or an error.
            None => return Ending::Finished(finish),
            Some(Ok(ChatEvent::Token(text))) => {
                let now = Instant::now();
                match last.replace(now) {
                    Some(previous) => metrics.token_gap(now - previous),
                    None => {
                        generation.first_token = Some(now);
                        generation.ttft_ms = Some(ms(started));
                    }
                }
                generation.answer.push_str(&text);
                generation.pieces += 1;
                let pieces = generation.pieces;
                if pieces > most.pieces || generation.answer.len() > most.bytes {
                    span.in_scope(|| {
                        tracing::warn!(
                            pieces,
                            "answer cut: the model went past RAGCHAT_LLM_MAX_TOKENS"
                        );
                    });
                    finish = FinishReason::Length;
                    if stream {
                        let _ = watch.guard(out.emit(TurnEvent::Token(&text))).await;
                    }
                    return Ending::Finished(finish);
                }
                // A reader that stopped reading must not hold a cancel or shutdown back.
                if stream
                    && !matches!(
                        watch.guard(out.emit(TurnEvent::Token(&text))).await,
                        Some(Ok(()))
                    )
                {
                    return Ending::Cancelled;
                }
            }
            Some(Ok(ChatEvent::Finish(reason))) => finish = reason,
            Some(Ok(ChatEvent::Usage {
                prompt_tokens,
                completion_tokens,
            })) => {
                generation.usage = Usage {
                    prompt_tokens,
                    completion_tokens,
                };
            }
            Some(Err(e)) => {
                span.in_scope(|| tracing::warn!(error = %e, "chat model stream failed"));
                return Ending::Failed(e.into());
            }
        }
    }
}
