//! The second phase of a turn: stream the answer from the chat model, relaying each token to the
//! client as it comes.

use std::time::Instant;

use super::{Ending, TurnEvent, TurnOutput, Watch};
use crate::llm::{ChatEvent, ChatMessage, ChatStream};
use crate::state::AppState;
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
}

/// Streams the answer to `messages`. Tokens go to `out` when `stream` is set; `started` is when
/// the ask arrived.
pub async fn generate(
    state: &AppState,
    messages: Vec<ChatMessage>,
    stream: bool,
    started: Instant,
    out: &mut dyn TurnOutput,
    watch: &mut Watch,
) -> Generation {
    let mut generation = Generation {
        answer: String::new(),
        usage: Usage::default(),
        ttft_ms: None,
        generate_ms: 0.0,
        ending: Ending::Cancelled,
        first_token: None,
    };
    // Dropping the answer stream drops the upstream request at once.
    generation.ending = match watch.guard(state.llm.stream(messages)).await {
        None => Ending::Cancelled,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "chat model request failed");
            Ending::Failed(e.into())
        }
        Some(Ok(mut answer)) => {
            relay(&mut answer, &mut generation, stream, started, out, watch).await
        }
    };
    if let Some(first) = generation.first_token {
        generation.generate_ms = ms(first);
    }
    generation
}

/// Reads the answer to its end, appending tokens to `generation` (and to `out` when streaming).
async fn relay(
    answer: &mut ChatStream,
    generation: &mut Generation,
    stream: bool,
    started: Instant,
    out: &mut dyn TurnOutput,
    watch: &mut Watch,
) -> Ending {
    let mut finish = FinishReason::Stop;
    loop {
        let Some(event) = watch.guard(answer.next()).await else {
            return Ending::Cancelled;
        };
        match event {
            // A `ChatStream` ends with a finish reason or an error.
            None => return Ending::Finished(finish),
            Some(Ok(ChatEvent::Token(text))) => {
                if generation.first_token.is_none() {
                    generation.first_token = Some(Instant::now());
                    generation.ttft_ms = Some(ms(started));
                }
                generation.answer.push_str(&text);
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
                tracing::warn!(error = %e, "chat model stream failed");
                return Ending::Failed(e.into());
            }
        }
    }
}
