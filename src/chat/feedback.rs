//! A user's rating of an answer (`feedback` frame): found among the socket's recent turns, or
//! in the record store for a turn of an earlier socket, and written back as the whole record
//! with its `feedback` set — through the recorder, so it takes the turn's own durable path
//! (journal, retries, spool) and lands as an idempotent upsert of the same document.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::protocol::{Feedback, MAX_FEEDBACK_COMMENT_CHARS, validate_id};
use super::request::store_conversation_id;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::store::{TurnFeedback, TurnRecord, now_rfc3339};

/// Records a socket keeps for feedback without asking the store.
const RECENT_TURNS: usize = 32;

/// Turns a socket's conversation loads at most, looking for an older turn.
const LOOKUP_TURNS: usize = 200;

/// Longest wait for the store when the turn is not among the recent ones.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The records of a socket's last turns, newest last.
#[derive(Default)]
pub struct RecentTurns(Mutex<VecDeque<TurnRecord>>);

impl RecentTurns {
    /// Keeps `record` (a turn just ended, or one just rated), forgetting the oldest past the cap.
    pub fn keep(&self, record: &TurnRecord) {
        let mut turns = self.0.lock().unwrap_or_else(|e| e.into_inner());
        turns.retain(|r| !(r.id == record.id && r.conversation_id == record.conversation_id));
        if turns.len() == RECENT_TURNS {
            turns.pop_front();
        }
        turns.push_back(record.clone());
    }

    /// The newest recent turn `turn_id`, in `store_conversation` when one is named.
    fn find(&self, store_conversation: Option<&str>, turn_id: &str) -> Option<TurnRecord> {
        let turns = self.0.lock().unwrap_or_else(|e| e.into_inner());
        turns
            .iter()
            .rev()
            .find(|r| r.id == turn_id && store_conversation.is_none_or(|c| r.conversation_id == c))
            .cloned()
    }
}

/// Who rates, and where their turns are.
pub struct Rater<'a> {
    /// The socket's principal: only its own turns can be rated.
    pub principal: &'a Principal,
    /// The socket's conversation, for a frame that names none.
    pub conversation_id: &'a str,
    /// The turn still running on the socket, which cannot be rated yet.
    pub running: Option<&'a str>,
    /// The socket's recent turns.
    pub recent: &'a RecentTurns,
}

/// Puts `frame`'s rating on its turn's record and hands the record to the recorder.
pub async fn record(state: &AppState, rater: &Rater<'_>, frame: Feedback) -> Result<(), ApiError> {
    validate_id("turn_id", &frame.turn_id)?;
    if let Some(id) = &frame.conversation_id {
        validate_id("conversation_id", id)?;
    }
    let comment = frame
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(comment) = comment
        && comment.chars().count() > MAX_FEEDBACK_COMMENT_CHARS
    {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("a feedback comment is at most {MAX_FEEDBACK_COMMENT_CHARS} characters"),
        ));
    }
    if rater.running == Some(frame.turn_id.as_str()) {
        return Err(ApiError::bad_request(format!(
            "turn {:?} is still running; rate it after its done frame",
            frame.turn_id
        )));
    }
    // A turn of this socket is found by its id alone; an older one in the store, under the
    // named conversation (or the socket's).
    let conversation = frame
        .conversation_id
        .as_deref()
        .unwrap_or(rater.conversation_id);
    let store_conversation = store_conversation_id(rater.principal, conversation);
    let named = frame
        .conversation_id
        .as_ref()
        .map(|_| store_conversation.as_str());
    let found = match rater.recent.find(named, &frame.turn_id) {
        Some(record) => Some(record),
        None => stored(state, &store_conversation, &frame.turn_id).await?,
    };
    let Some(mut record) = found else {
        return Err(ApiError::bad_request(format!(
            "no turn {:?} in conversation {conversation:?}",
            frame.turn_id
        )));
    };
    record.feedback = Some(TurnFeedback {
        rating: frame.rating,
        comment: comment.map(str::to_owned),
        at: now_rfc3339(),
    });
    rater.recent.keep(&record);
    tracing::info!(turn_id = %record.id, rating = ?frame.rating, "feedback");
    state.recorder.record(record).await;
    Ok(())
}

/// The turn's record from the store (a turn of an earlier socket).
async fn stored(
    state: &AppState,
    store_conversation: &str,
    turn_id: &str,
) -> Result<Option<TurnRecord>, ApiError> {
    let lookup = state.store.conversation(store_conversation, LOOKUP_TURNS);
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(records)) => Ok(records.into_iter().find(|r| r.id == turn_id)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not look up the rated turn");
            Err(unavailable())
        }
        Err(_) => {
            tracing::warn!("the record store did not find the rated turn in time");
            Err(unavailable())
        }
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::Busy,
        "the turn could not be looked up just now; send the feedback again shortly",
    )
}
