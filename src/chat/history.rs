//! A conversation's earlier turns, loaded from the record store when an ask names the
//! conversation and sends no history. A store that fails costs the turn its history, not its
//! answer.

use std::time::Duration;

use tracing::Instrument;

use super::protocol::{HistoryMessage, Role};
use super::request::TurnRequest;
use crate::state::AppState;
use crate::store::{TurnRecord, TurnStatus};

/// Longest wait for a stored conversation before answering without it.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(2);
/// The same while the record store is degraded: do not make every turn wait the full timeout.
const HISTORY_TIMEOUT_DEGRADED: Duration = Duration::from_millis(300);

/// The conversation's earlier turns, oldest first, when the ask asked for them.
pub async fn stored(state: &AppState, request: &TurnRequest) -> Option<Vec<HistoryMessage>> {
    if !request.history_from_store {
        return None;
    }
    let turns = state.config.chat.max_history_messages.div_ceil(2);
    // The store's id: another principal's conversation of the same name is not this one.
    let lookup = state
        .store
        .conversation(&request.store_conversation_id, turns);
    let wait = if state.recorder.is_degraded() {
        HISTORY_TIMEOUT_DEGRADED
    } else {
        HISTORY_TIMEOUT
    };
    let t = std::time::Instant::now();
    let span = tracing::info_span!(
        "history",
        turns = turns as i64,
        found = tracing::field::Empty
    );
    let loaded = tokio::time::timeout(wait, lookup)
        .instrument(span.clone())
        .await;
    state.metrics.history_loaded(t.elapsed());
    if let Ok(Ok(records)) = &loaded {
        span.record("found", records.len() as i64);
    }
    match loaded {
        Ok(Ok(records)) => Some(from_records(records)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not load the conversation; answering without it");
            None
        }
        Err(_) => {
            tracing::warn!("the record store did not return the conversation in time");
            None
        }
    }
}

/// Newest-first records to oldest-first messages; failed turns and empty answers are skipped.
fn from_records(records: Vec<TurnRecord>) -> Vec<HistoryMessage> {
    records
        .into_iter()
        .rev()
        .filter(|r| r.status != TurnStatus::Failed && !r.answer.trim().is_empty())
        .flat_map(|r| {
            [
                HistoryMessage {
                    role: Role::User,
                    content: r.question,
                },
                HistoryMessage {
                    role: Role::Assistant,
                    content: r.answer,
                },
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;

    #[test]
    fn stored_turns_become_history_oldest_first_without_failed_or_empty_ones() {
        let mut failed = record("c", "3");
        failed.status = TurnStatus::Failed;
        let mut empty = record("c", "2");
        empty.answer = "  ".into();
        // Newest first, as the store returns them.
        let history = from_records(vec![failed, record("c", "4"), empty, record("c", "1")]);
        let contents: Vec<_> = history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            ["question 1", "answer 1", "question 4", "answer 4"]
        );
        assert_eq!(history[0].role, Role::User);
        assert_eq!(history[1].role, Role::Assistant);
    }
}
