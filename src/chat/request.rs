//! An ask, validated into a [`TurnRequest`]: ids checked or made, the question trimmed, the
//! limits enforced.

use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::config::ChatConfig;
use crate::error::{ApiError, ErrorCode};
use crate::store::now_rfc3339;

use super::prompt::cost_tokens;
use super::protocol::{Ask, HistoryMessage, validate_id};

/// Longest `user` an ask may name, in characters.
const MAX_USER_CHARS: usize = 256;

/// A validated ask.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// Turn id (the client's, or made here).
    pub turn_id: String,
    /// Conversation id (the client's, or the socket's), as the client sees it.
    pub conversation_id: String,
    /// The conversation as the store keeps it: the client's id when everyone is anonymous;
    /// prefixed with the principal's digest otherwise, so each principal has its own
    /// conversations and no id can reach (or overwrite) another's.
    pub store_conversation_id: String,
    /// The question, trimmed.
    pub question: String,
    /// Earlier messages, oldest first.
    pub history: Vec<HistoryMessage>,
    /// Load the history from the record store: the ask named a conversation and sent none.
    pub history_from_store: bool,
    /// Who asks, as recorded: the principal, or (anonymous service) what the client said.
    pub user: Option<String>,
    /// What the client said it is, beside an authenticated principal; never trusted.
    pub client_user: Option<String>,
    /// Whether to send `sources` and `token` frames.
    pub stream: bool,
}

/// An ask that failed validation: the error, and the turn it names when its id was valid.
pub type Refused = (Option<String>, ApiError);

fn too_large(message: String) -> ApiError {
    ApiError::new(ErrorCode::TooLarge, message)
}

impl TurnRequest {
    /// Checks an ask against the limits (`question_tokens`: the question's budget in estimated
    /// model tokens); `conversation_id` is used when the ask has none; `principal` asks.
    pub fn from_ask(
        ask: Ask,
        limits: &ChatConfig,
        conversation_id: &str,
        principal: Principal,
        question_tokens: usize,
    ) -> Result<Self, Refused> {
        if let Some(id) = &ask.turn_id {
            validate_id("turn_id", id).map_err(|e| (None, e))?;
        }
        check(&ask, limits, question_tokens).map_err(|e| (ask.turn_id.clone(), e))?;
        let history_from_store = ask.conversation_id.is_some() && ask.history.is_empty();
        let conversation_id = ask
            .conversation_id
            .unwrap_or_else(|| conversation_id.to_owned());
        let store_conversation_id = store_conversation_id(&principal, &conversation_id);
        let (user, client_user) = if principal.is_anonymous() {
            (ask.user, None)
        } else {
            (Some(principal.id().to_owned()), ask.user)
        };
        Ok(Self {
            history_from_store,
            turn_id: ask
                .turn_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            conversation_id,
            store_conversation_id,
            question: ask.question.trim().to_owned(),
            history: ask.history,
            user,
            client_user,
            stream: ask.stream.unwrap_or(true) && !limits.test_mode,
        })
    }
}

/// The conversation as the store keeps it: the client's id when everyone is anonymous, else
/// prefixed with [`owner_prefix`], so no principal reaches another's conversation.
pub fn store_conversation_id(principal: &Principal, conversation_id: &str) -> String {
    if principal.is_anonymous() {
        conversation_id.to_owned()
    } else {
        format!("{}.{conversation_id}", owner_prefix(principal))
    }
}

/// `p` and 16 hex digits of the principal's SHA-256: a conversation-id prefix of the id
/// charset, fixed per principal, that names nobody.
fn owner_prefix(principal: &Principal) -> String {
    let digest = Sha256::digest(principal.id().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("p{hex}")
}

/// Every limit an ask must respect (its turn id already checked).
fn check(ask: &Ask, limits: &ChatConfig, question_tokens: usize) -> Result<(), ApiError> {
    if let Some(id) = &ask.conversation_id {
        validate_id("conversation_id", id)?;
    }
    let question = ask.question.trim();
    if question.is_empty() {
        return Err(ApiError::bad_request("question is empty"));
    }
    let chars = question.chars().count();
    if chars > limits.max_question_chars {
        return Err(too_large(format!(
            "question has {chars} characters; the limit is {}",
            limits.max_question_chars
        )));
    }
    let cost = cost_tokens(question);
    if cost > question_tokens {
        return Err(too_large(format!(
            "question is about {cost} model tokens; the limit is {question_tokens}"
        )));
    }
    if ask.history.len() > limits.max_history_messages {
        return Err(too_large(format!(
            "history has {} messages; the limit is {}",
            ask.history.len(),
            limits.max_history_messages
        )));
    }
    if let Some(i) = ask
        .history
        .iter()
        .position(|m| m.content.chars().count() > limits.max_history_message_chars)
    {
        return Err(too_large(format!(
            "history message {i} is longer than {} characters",
            limits.max_history_message_chars
        )));
    }
    if ask
        .user
        .as_ref()
        .is_some_and(|u| u.chars().count() > MAX_USER_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "user is longer than {MAX_USER_CHARS} characters"
        )));
    }
    Ok(())
}

/// Who asked what, when: what a turn's record keeps of its request, and what the session keeps
/// outside the turn's task to record the turn even if the task fails.
#[derive(Debug, Clone)]
pub struct TurnSummary {
    /// Turn id.
    pub turn_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The question.
    pub question: String,
    /// Who asked, as recorded.
    pub user: Option<String>,
    /// What the client said it is, beside an authenticated principal.
    pub client_user: Option<String>,
    /// The conversation as the store keeps it.
    pub store_conversation_id: String,
    /// When the ask arrived (RFC 3339).
    pub created_at: String,
}

impl From<&TurnRequest> for TurnSummary {
    fn from(r: &TurnRequest) -> Self {
        Self {
            turn_id: r.turn_id.clone(),
            conversation_id: r.conversation_id.clone(),
            question: r.question.clone(),
            user: r.user.clone(),
            client_user: r.client_user.clone(),
            store_conversation_id: r.store_conversation_id.clone(),
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
            query_rewrite: crate::config::QueryRewrite::Auto,
            query_rewrite_timeout_ms: 4000,
        }
    }

    fn request(ask: Ask, limits: &ChatConfig) -> Result<TurnRequest, Refused> {
        TurnRequest::from_ask(ask, limits, "conv", Principal::anonymous(), 1_000)
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
        let code = |a: Ask| request(a, &l).err().map(|(_, e)| e.code);
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
        let long_user = Ask {
            user: Some("u".repeat(257)),
            ..ask("q")
        };
        assert_eq!(code(long_user), Some(ErrorCode::BadRequest));
    }

    #[test]
    fn a_refusal_names_the_turn_only_when_its_id_is_valid() {
        let l = limits();
        let refused = |a: Ask| request(a, &l).err().map(|(id, _)| id);
        let named = Ask {
            turn_id: Some("t1".into()),
            ..ask("   ")
        };
        assert_eq!(refused(named), Some(Some("t1".into())));
        let bad = Ask {
            turn_id: Some("t 1".into()),
            ..ask("q")
        };
        assert_eq!(refused(bad), Some(None));
    }

    #[test]
    fn ask_defaults_are_filled_in() {
        let mut l = limits();
        let r = request(ask("  q  "), &l).expect("valid");
        assert_eq!(r.question, "q");
        assert_eq!(r.conversation_id, "conv");
        assert!(uuid::Uuid::parse_str(&r.turn_id).is_ok());
        assert!(r.stream);
        assert!(!r.history_from_store, "no conversation named");
        l.test_mode = true;
        let r = request(ask("q"), &l).expect("valid");
        assert!(!r.stream, "test mode turns streaming off");
        let named = Ask {
            conversation_id: Some("c1".into()),
            ..ask("q")
        };
        let r = request(named, &l).expect("valid");
        assert!(
            r.history_from_store,
            "a named conversation without history is loaded"
        );
    }
}
