//! One chat turn: validate the ask, embed the question, retrieve, build the grounded prompt,
//! stream the answer, end with `done` (or `error`), record the turn.

use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::config::ChatConfig;
use crate::error::{ApiError, ErrorCode};
use crate::llm::ChatEvent;
use crate::retrieval::Query;
use crate::store::{RecordError, RecordSource, TurnRecord, TurnStatus, now_rfc3339};

pub mod prompt;
pub mod protocol;
pub mod session;

use protocol::{
    Ask, Done, ErrorFrame, FinishReason, HistoryMessage, ServerFrame, Source, Sources, Timings,
    Usage, validate_id,
};

/// A validated ask.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// Turn id (the client's, or made here).
    pub turn_id: String,
    /// Conversation id (the client's, or the socket's).
    pub conversation_id: String,
    /// The question, trimmed.
    pub question: String,
    /// Earlier messages, oldest first.
    pub history: Vec<HistoryMessage>,
    /// Load the history from the record store: the ask named a conversation and sent none.
    pub history_from_store: bool,
    /// Who asks.
    pub user: Option<String>,
    /// Whether to send `sources` and `token` frames.
    pub stream: bool,
}

impl TurnRequest {
    /// Checks an ask against the limits; `conversation_id` is used when the ask has none.
    pub fn from_ask(
        ask: Ask,
        limits: &ChatConfig,
        conversation_id: &str,
    ) -> Result<Self, (Option<String>, ApiError)> {
        let turn_id = ask.turn_id.clone();
        let fail = |e: ApiError| (turn_id.clone(), e);
        if let Some(id) = &ask.turn_id {
            validate_id("turn_id", id).map_err(|e| (None, e))?;
        }
        if let Some(id) = &ask.conversation_id {
            validate_id("conversation_id", id).map_err(fail)?;
        }
        let question = ask.question.trim();
        if question.is_empty() {
            return Err(fail(ApiError::bad_request("question is empty")));
        }
        let chars = question.chars().count();
        if chars > limits.max_question_chars {
            return Err(fail(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "question has {chars} characters; the limit is {}",
                    limits.max_question_chars
                ),
            )));
        }
        if ask.history.len() > limits.max_history_messages {
            return Err(fail(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "history has {} messages; the limit is {}",
                    ask.history.len(),
                    limits.max_history_messages
                ),
            )));
        }
        if let Some(i) = ask
            .history
            .iter()
            .position(|m| m.content.chars().count() > limits.max_history_message_chars)
        {
            return Err(fail(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "history message {i} is longer than {} characters",
                    limits.max_history_message_chars
                ),
            )));
        }
        if ask.user.as_ref().is_some_and(|u| u.chars().count() > 256) {
            return Err(fail(ApiError::bad_request(
                "user is longer than 256 characters",
            )));
        }
        let history_from_store = ask.conversation_id.is_some() && ask.history.is_empty();
        Ok(Self {
            history_from_store,
            turn_id: ask
                .turn_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            conversation_id: ask
                .conversation_id
                .unwrap_or_else(|| conversation_id.to_owned()),
            question: question.to_owned(),
            history: ask.history,
            user: ask.user,
            stream: ask.stream.unwrap_or(true) && !limits.test_mode,
        })
    }
}

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
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// How generation ended.
enum Ending {
    Finished(FinishReason),
    Cancelled,
    Failed(ApiError),
}

/// Runs one turn to its end and queues its record. `started` is when the ask arrived.
pub async fn run_turn(
    state: &AppState,
    mut request: TurnRequest,
    started: Instant,
    cancel: CancellationToken,
    out: &mut dyn TurnOutput,
) {
    let created_at = now_rfc3339();
    let mut timings = Timings::default();
    let mut usage = Usage::default();
    let mut answer = String::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut first_token: Option<Instant> = None;
    let mut history = std::mem::take(&mut request.history);
    let mut history_turns = 0;
    // One cancellation future for the whole turn, polled at every step: a fresh one per token
    // would register and unregister a waiter each time.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);

    let ending = 'turn: {
        // 1. Embed the question; meanwhile, load the conversation when the store keeps it.
        let t = Instant::now();
        let (vector, stored) = tokio::select! {
            biased;
            _ = &mut cancelled => break 'turn Ending::Cancelled,
            v = futures::future::join(
                state.embedder.embed_query(&request.question),
                stored_history(state, &request),
            ) => v,
        };
        if let Some(stored) = stored {
            history = stored;
        }
        let vector = {
            match vector {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "embedding the question failed");
                    break 'turn Ending::Failed(ApiError::new(
                        ErrorCode::EmbeddingUnavailable,
                        "the question could not be embedded; try again shortly",
                    ));
                }
            }
        };
        timings.embed = ms(t);

        // 2. Retrieve.
        let t = Instant::now();
        let hits = tokio::select! {
            biased;
            _ = &mut cancelled => break 'turn Ending::Cancelled,
            h = state.index.search(
                Query {
                    text: request.question.clone(),
                    vector,
                    mode: state.config.index.retrieval,
                },
                state.config.chat.top_k,
            ) => match h {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "retrieval failed");
                    break 'turn Ending::Failed(ApiError::new(
                        ErrorCode::RetrievalUnavailable,
                        "the document index could not be searched; try again shortly",
                    ));
                }
            },
        };
        timings.retrieve = ms(t);
        sources = hits
            .into_iter()
            .zip(1u32..)
            .map(|(hit, n)| Source {
                n,
                chunk_id: hit.id,
                source: hit.payload.source,
                title: hit.payload.title,
                text: hit.payload.text,
                score: hit.score,
            })
            .collect();

        if request.stream {
            let frame = Sources {
                turn_id: request.turn_id.clone(),
                conversation_id: request.conversation_id.clone(),
                sources: sources.clone(),
            };
            let sent = tokio::select! {
                biased;
                _ = &mut cancelled => break 'turn Ending::Cancelled,
                sent = out.emit(TurnEvent::Sources(&frame)) => sent,
            };
            if sent.is_err() {
                break 'turn Ending::Cancelled;
            }
        }

        // 3. Prompt.
        let history = prompt::fit_history(&history, state.config.chat.history_tokens);
        history_turns = history
            .iter()
            .filter(|m| m.role == protocol::Role::User)
            .count() as u32;
        let instructions = state
            .config
            .chat
            .system_prompt
            .as_deref()
            .unwrap_or(prompt::DEFAULT_INSTRUCTIONS);
        let messages = prompt::build(instructions, &sources, history, &request.question);

        // 4. Stream the answer. Dropping `stream` drops the upstream request at once.
        let mut stream = tokio::select! {
            biased;
            _ = &mut cancelled => break 'turn Ending::Cancelled,
            s = state.llm.stream(messages) => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "chat model request failed");
                    break 'turn Ending::Failed(e.into());
                }
            },
        };
        let mut finish = None;
        loop {
            let event = tokio::select! {
                biased;
                _ = &mut cancelled => break 'turn Ending::Cancelled,
                event = stream.next() => event,
            };
            match event {
                None => break,
                Some(Ok(ChatEvent::Token(text))) => {
                    if first_token.is_none() {
                        first_token = Some(Instant::now());
                        timings.ttft = Some(ms(started));
                    }
                    answer.push_str(&text);
                    if request.stream {
                        // A reader that stopped reading must not hold a cancel or shutdown back.
                        let sent = tokio::select! {
                            biased;
                            _ = &mut cancelled => break 'turn Ending::Cancelled,
                            sent = out.emit(TurnEvent::Token(&text)) => sent,
                        };
                        if sent.is_err() {
                            break 'turn Ending::Cancelled;
                        }
                    }
                }
                Some(Ok(ChatEvent::Finish(reason))) => {
                    finish = Some(if reason == "length" {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    });
                }
                Some(Ok(ChatEvent::Usage {
                    prompt_tokens,
                    completion_tokens,
                })) => {
                    usage = Usage {
                        prompt_tokens,
                        completion_tokens,
                    };
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "chat model stream failed");
                    break 'turn Ending::Failed(e.into());
                }
            }
        }
        match finish {
            Some(reason) => Ending::Finished(reason),
            // Every compatible server ends with a finish reason; without one the stream was cut.
            None => {
                tracing::warn!("chat model stream ended without a finish reason");
                Ending::Failed(
                    crate::llm::LlmError::Unavailable("stream ended early".into()).into(),
                )
            }
        }
    };

    if let Some(first) = first_token {
        timings.generate = ms(first);
    }
    timings.total = ms(started);
    let citations = prompt::citations(&answer, sources.len());
    let (status, finish_reason, error) = match &ending {
        Ending::Finished(reason) => (TurnStatus::Completed, Some(*reason), None),
        Ending::Cancelled => (TurnStatus::Cancelled, Some(FinishReason::Cancelled), None),
        Ending::Failed(e) => (TurnStatus::Failed, None, Some(e.clone())),
    };

    let final_frame = match (&error, finish_reason) {
        (Some(e), _) => {
            ServerFrame::Error(ErrorFrame::new(Some(request.turn_id.clone()), e.clone()))
        }
        (None, reason) => ServerFrame::Done(Box::new(Done {
            turn_id: request.turn_id.clone(),
            conversation_id: request.conversation_id.clone(),
            answer: answer.clone(),
            citations: citations.clone(),
            finish_reason: reason.unwrap_or(FinishReason::Stop),
            history_turns,
            usage,
            timings_ms: timings,
            sources: (!request.stream).then(|| sources.clone()),
        })),
    };
    // The client hears first; the record is queued after, off its path. A closed socket does
    // not stop the record.
    let _ = out.emit(TurnEvent::Final(&final_frame)).await;

    tracing::info!(
        status = ?status,
        embed_ms = timings.embed,
        retrieve_ms = timings.retrieve,
        ttft_ms = timings.ttft,
        total_ms = timings.total,
        completion_tokens = usage.completion_tokens,
        "turn ended"
    );
    let record = TurnRecord {
        id: request.turn_id,
        conversation_id: request.conversation_id,
        user: request.user,
        question: request.question,
        answer,
        status,
        error: error.map(|e| RecordError {
            code: e.code.as_str().to_owned(),
            message: e.message,
        }),
        finish_reason: finish_reason.map(|r| {
            match r {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::Cancelled => "cancelled",
            }
            .to_owned()
        }),
        sources: sources
            .iter()
            .map(|s| RecordSource {
                n: s.n,
                chunk_id: s.chunk_id.clone(),
                source: s.source.clone(),
                score: (f64::from(s.score) * 1e6).round() / 1e6,
            })
            .collect(),
        citations,
        model: state.llm.model().to_owned(),
        usage,
        timings_ms: timings,
        created_at,
        completed_at: now_rfc3339(),
        app_version: crate::VERSION.to_owned(),
    };
    state.recorder.record(record).await;
}

/// The conversation's earlier turns from the record store, oldest first, when the ask asked for
/// them. A store that fails costs the turn its history, not its answer.
async fn stored_history(state: &AppState, request: &TurnRequest) -> Option<Vec<HistoryMessage>> {
    if !request.history_from_store {
        return None;
    }
    let turns = state.config.chat.max_history_messages.div_ceil(2);
    let lookup = state.store.conversation(&request.conversation_id, turns);
    // While the store fails, do not make every turn wait the full timeout for it.
    let wait = if state.recorder.status().state == "ok" {
        HISTORY_TIMEOUT
    } else {
        HISTORY_TIMEOUT_DEGRADED
    };
    let records = match tokio::time::timeout(wait, lookup).await {
        Ok(Ok(records)) => records,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not load the conversation; answering without it");
            return None;
        }
        Err(_) => {
            tracing::warn!("the record store did not return the conversation in time");
            return None;
        }
    };
    Some(history_from_records(records))
}

/// Longest wait for a stored conversation before answering without it.
const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The same while the record store is degraded.
const HISTORY_TIMEOUT_DEGRADED: std::time::Duration = std::time::Duration::from_millis(300);

/// Newest-first records to oldest-first messages; failed turns and empty answers are skipped.
fn history_from_records(records: Vec<TurnRecord>) -> Vec<HistoryMessage> {
    records
        .into_iter()
        .rev()
        .filter(|r| r.status != TurnStatus::Failed && !r.answer.trim().is_empty())
        .flat_map(|r| {
            [
                HistoryMessage {
                    role: protocol::Role::User,
                    content: r.question,
                },
                HistoryMessage {
                    role: protocol::Role::Assistant,
                    content: r.answer,
                },
            ]
        })
        .collect()
}

/// The record of a turn whose task panicked: nothing it produced survives, but the turn is not
/// lost from the audit trail.
pub fn failed_record(model: &str, request: &TurnSummary, error: &ApiError) -> TurnRecord {
    let now = now_rfc3339();
    TurnRecord {
        id: request.turn_id.clone(),
        conversation_id: request.conversation_id.clone(),
        user: request.user.clone(),
        question: request.question.clone(),
        answer: String::new(),
        status: TurnStatus::Failed,
        error: Some(RecordError {
            code: error.code.as_str().to_owned(),
            message: error.message.clone(),
        }),
        finish_reason: None,
        sources: Vec::new(),
        citations: Vec::new(),
        model: model.to_owned(),
        usage: Usage::default(),
        timings_ms: Timings::default(),
        created_at: request.created_at.clone(),
        completed_at: now,
        app_version: crate::VERSION.to_owned(),
    }
}

/// What is kept of a request outside its turn task, to record it if the task fails.
#[derive(Debug, Clone)]
pub struct TurnSummary {
    /// Turn id.
    pub turn_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The question.
    pub question: String,
    /// Who asked.
    pub user: Option<String>,
    /// When the ask arrived.
    pub created_at: String,
}

impl From<&TurnRequest> for TurnSummary {
    fn from(r: &TurnRequest) -> Self {
        Self {
            turn_id: r.turn_id.clone(),
            conversation_id: r.conversation_id.clone(),
            question: r.question.clone(),
            user: r.user.clone(),
            created_at: now_rfc3339(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::protocol::Role;

    fn limits() -> ChatConfig {
        ChatConfig {
            test_mode: false,
            top_k: 4,
            max_question_chars: 10,
            max_history_messages: 2,
            max_history_message_chars: 5,
            history_tokens: 100,
            system_prompt: None,
        }
    }

    fn ask(question: &str) -> Ask {
        Ask {
            question: question.into(),
            ..Ask::default()
        }
    }

    #[test]
    fn ask_validation_codes() {
        let l = limits();
        let code = |a: Ask| TurnRequest::from_ask(a, &l, "c").err().map(|(_, e)| e.code);
        assert_eq!(code(ask("   ")), Some(ErrorCode::BadRequest));
        assert_eq!(code(ask("01234567890")), Some(ErrorCode::TooLarge));
        assert_eq!(code(ask("0123456789")), None);
        let history = |n: usize, len: usize| Ask {
            history: vec![
                HistoryMessage {
                    role: Role::User,
                    content: "x".repeat(len)
                };
                n
            ],
            ..ask("q")
        };
        assert_eq!(code(history(3, 1)), Some(ErrorCode::TooLarge));
        assert_eq!(code(history(1, 6)), Some(ErrorCode::TooLarge));
        assert_eq!(code(history(2, 5)), None);
        let bad_id = Ask {
            turn_id: Some("no spaces".into()),
            ..ask("q")
        };
        assert_eq!(code(bad_id), Some(ErrorCode::BadRequest));
    }

    #[test]
    fn ask_defaults_are_filled_in() {
        let mut l = limits();
        let r = TurnRequest::from_ask(ask("  q  "), &l, "conv").expect("valid");
        assert_eq!(r.question, "q");
        assert_eq!(r.conversation_id, "conv");
        assert!(uuid::Uuid::parse_str(&r.turn_id).is_ok());
        assert!(r.stream);
        l.test_mode = true;
        let r = TurnRequest::from_ask(ask("q"), &l, "conv").expect("valid");
        assert!(!r.stream, "test mode turns streaming off");
    }
}
