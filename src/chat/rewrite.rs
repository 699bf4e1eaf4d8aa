//! Follow-up questions as standalone search queries. "When was it first lit?" after a turn about
//! the Saltmere lighthouse searches for whatever matches "first lit"; asked to rewrite it with
//! the conversation in view, the chat model gives "When was the Saltmere lighthouse first lit?",
//! which retrieves. One short, non-streamed call with its own prompt and a tight budget; any
//! failure falls back to the question as asked (the caller logs it and counts it).

use std::time::Duration;

use super::protocol::{HistoryMessage, Role};
use crate::llm::{ChatMessage, ChatModel, LlmError};

/// Most tokens the rewritten query may take.
const MAX_TOKENS: u32 = 48;

/// History messages shown to the rewrite: the last two turns are what a follow-up refers to.
const RECENT_MESSAGES: usize = 4;

/// Characters kept of each history message (answers can be long; their start names the topic).
const MESSAGE_CHARS: usize = 600;

/// Longest query accepted back, in characters; a longer one is an answer, not a query.
const MAX_QUERY_CHARS: usize = 400;

const INSTRUCTIONS: &str = "You rewrite the user's last question into a standalone search query \
for a document search engine. Use the conversation only to resolve what the question refers to \
(pronouns like it, they, that, and omitted subjects). Keep the user's own words and any names, \
numbers or codes. Do not answer the question. Reply with the query only, on one line.";

/// Why the rewrite did not produce a query.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The model failed or timed out.
    #[error(transparent)]
    Model(#[from] LlmError),
    /// The model answered with something that is not a query (empty, or too long).
    #[error("the model's rewrite is not a query: {0:?}")]
    Unusable(String),
}

impl RewriteError {
    /// A short label for the metric: `timeout`, `error` or `unusable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Model(LlmError::Unavailable(m)) if m.starts_with("no answer within") => "timeout",
            Self::Model(_) => "error",
            Self::Unusable(_) => "unusable",
        }
    }
}

/// The prompt: instructions, the recent conversation as a transcript, the question.
pub fn prompt(history: &[HistoryMessage], question: &str) -> Vec<ChatMessage> {
    let mut transcript = String::new();
    let start = history.len().saturating_sub(RECENT_MESSAGES);
    for m in &history[start..] {
        let who = match m.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        let text: String = m.content.chars().take(MESSAGE_CHARS).collect();
        transcript.push_str(&format!("{who}: {}\n", text.trim()));
    }
    vec![
        ChatMessage {
            role: "system",
            content: INSTRUCTIONS.into(),
        },
        ChatMessage {
            role: "user",
            content: format!(
                "Conversation:\n{transcript}\nLast question: {}\n\nStandalone search query:",
                question.trim()
            ),
        },
    ]
}

/// The query in a model's reply: its first non-empty line, without a `Query:` or speaker label,
/// quotes or markdown emphasis around it. Small models also answer with chat-template tokens or
/// bare numbers: not a query.
pub fn clean(reply: &str) -> Result<String, RewriteError> {
    let unusable = || RewriteError::Unusable(reply.chars().take(120).collect());
    let line = reply
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut query = line;
    for label in [
        "standalone search query:",
        "search query:",
        "query:",
        "rewritten question:",
        "user:",
        "assistant:",
    ] {
        if query.len() >= label.len()
            && query.is_char_boundary(label.len())
            && query[..label.len()].eq_ignore_ascii_case(label)
        {
            query = query[label.len()..].trim();
        }
    }
    let query = query
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '*' | '“' | '”'))
        .trim();
    let template = [
        "<|",
        "|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "</s>",
        "[INST]",
    ];
    if query.is_empty()
        || query.chars().count() > MAX_QUERY_CHARS
        || !query.chars().any(char::is_alphabetic)
        || template.iter().any(|t| query.contains(t))
    {
        return Err(unusable());
    }
    Ok(query.to_owned())
}

/// Asks `llm` for a standalone query for `question` given `history` (which must not be empty),
/// within `timeout`.
pub async fn standalone_query(
    llm: &dyn ChatModel,
    history: &[HistoryMessage],
    question: &str,
    timeout: Duration,
) -> Result<String, RewriteError> {
    let reply = llm
        .complete(prompt(history, question), MAX_TOKENS, timeout)
        .await?;
    clean(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str) -> HistoryMessage {
        HistoryMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn the_prompt_shows_the_last_two_turns_and_the_question() {
        let history: Vec<HistoryMessage> = (0..6)
            .map(|i| {
                message(
                    if i % 2 == 0 {
                        Role::User
                    } else {
                        Role::Assistant
                    },
                    &format!("m{i}"),
                )
            })
            .collect();
        let prompt = prompt(&history, " When was it first lit? ");
        assert_eq!(prompt.len(), 2);
        assert_eq!(prompt[0].role, "system");
        let body = &prompt[1].content;
        assert!(!body.contains("m0") && !body.contains("m1"), "{body}");
        assert!(body.contains("User: m2\nAssistant: m3\nUser: m4\nAssistant: m5\n"));
        assert!(body.contains("Last question: When was it first lit?\n"));
    }

    #[test]
    fn long_history_messages_are_cut() {
        let long = "x".repeat(5000);
        let prompt = prompt(&[message(Role::Assistant, &long)], "q");
        assert!(prompt[1].content.len() < MESSAGE_CHARS + 200);
    }

    #[test]
    fn a_reply_is_cleaned_to_its_query() {
        for (reply, want) in [
            (
                "When was the Saltmere lighthouse first lit?",
                "When was the Saltmere lighthouse first lit?",
            ),
            (
                "\n  Query: \"Saltmere lighthouse first lit\"\nExplanation: …",
                "Saltmere lighthouse first lit",
            ),
            ("Standalone search query: **E-4471 fix**", "E-4471 fix"),
            ("“gateway osprey firmware”", "gateway osprey firmware"),
            (
                "User: What does error E-4471 mean?",
                "What does error E-4471 mean?",
            ),
            ("E-4417: [1]", "E-4417: [1]"),
        ] {
            assert_eq!(clean(reply).expect(reply), want);
        }
        assert!(matches!(clean("   \n"), Err(RewriteError::Unusable(_))));
        for junk in ["1. 1.", "<|im_end|>user", "Query: <start_of_turn>model"] {
            assert!(
                matches!(clean(junk), Err(RewriteError::Unusable(_))),
                "{junk}"
            );
        }
        assert!(matches!(
            clean(&"word ".repeat(200)),
            Err(RewriteError::Unusable(_))
        ));
    }

    #[test]
    fn failures_have_a_metric_label() {
        let timeout = RewriteError::Model(LlmError::Unavailable("no answer within 4s".into()));
        assert_eq!(timeout.kind(), "timeout");
        let down = RewriteError::Model(LlmError::Unavailable("connection refused".into()));
        assert_eq!(down.kind(), "error");
        assert_eq!(RewriteError::Unusable(String::new()).kind(), "unusable");
    }
}
