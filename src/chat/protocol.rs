//! The WebSocket protocol `ragchat.v1`: every frame a client or the server sends, as Rust types.
//! docs/protocol.md describes it; docs/protocol.schema.json is generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
pub use crate::turn::{FinishReason, Timings, Usage};

/// The protocol name sent in `ready`.
pub const PROTOCOL: &str = "ragchat.v1";

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Prove who you are: the first frame when the server needs authentication and the upgrade
    /// carried no credential (browsers cannot set `Authorization` on a WebSocket).
    Auth(Auth),
    /// Ask a question; starts a turn.
    Ask(Ask),
    /// Stop the running turn.
    Cancel(Cancel),
    /// Rate an answer: thumbs up or down, with an optional comment. Recorded on the turn.
    Feedback(Feedback),
}

/// `{"type":"feedback","turn_id":…,"rating":"up"|"down","comment":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Feedback {
    /// The turn rated: one of this socket's, or of `conversation_id`.
    pub turn_id: String,
    /// The turn's conversation. Needed only for a turn answered on an earlier socket (after a
    /// reconnect); absent, the turn is one of this socket's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Was the answer good?
    pub rating: Rating,
    /// What was good or wrong, in the user's words (at most `MAX_FEEDBACK_COMMENT_CHARS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Longest feedback comment, in characters.
pub const MAX_FEEDBACK_COMMENT_CHARS: usize = 2000;

/// A thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    /// Good answer.
    Up,
    /// Bad answer.
    Down,
}

/// `feedback_saved`: the rating is on the turn's record (journaled; the store has it soon).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeedbackSaved {
    /// The turn rated.
    pub turn_id: String,
}

/// `{"type":"auth","token":…}`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Auth {
    /// An API key, or an OIDC access token (JWT).
    pub token: String,
}

/// Never shows the token.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { token: <redacted> }")
    }
}

/// `{"type":"ask", …}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Ask {
    /// The question. Not empty, at most `limits.max_question_chars` characters.
    pub question: String,
    /// Client-chosen turn id (1–128 of `A-Z a-z 0-9 . _ : -`); the server makes one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// Conversation this turn belongs to (same charset as `turn_id`); the server makes one per
    /// socket if absent and returns it in `sources` and `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Earlier messages of the conversation, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryMessage>,
    /// Who asks (an id or email), as the client says: recorded as `user` when the service needs
    /// no authentication, else as `client_user` beside the authenticated principal. Never
    /// trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `false`: no `sources` or `token` frames; one `done` carries the answer and the sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// One earlier message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// The author of a history message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person asking.
    User,
    /// The assistant's earlier answer.
    Assistant,
}

/// `{"type":"cancel","turn_id":…}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Cancel {
    /// The turn to stop; absent means the running one. A turn that already ended is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Sent once on connect.
    Ready(Ready),
    /// The retrieved sources, before the first token.
    Sources(Sources),
    /// A piece of the answer, as the model produced it.
    Token(Token),
    /// The end of a turn.
    Done(Box<Done>),
    /// A request failed; for a turn, this ends it.
    Error(ErrorFrame),
    /// A `feedback` frame was recorded.
    FeedbackSaved(FeedbackSaved),
}

/// `ready`: the protocol and the limits this server enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Ready {
    /// Always `ragchat.v1`.
    pub protocol: String,
    /// Server version.
    pub version: String,
    /// Whom this socket acts for: `anonymous`, or the authenticated principal (`key:NAME`,
    /// `jwt:SUBJECT`, `easyauth:ID`).
    pub principal: String,
    /// What an ask may contain.
    pub limits: Limits,
}

/// Limits a client must respect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Longest question, in characters.
    pub max_question_chars: usize,
    /// Most history messages per ask.
    pub max_history_messages: usize,
    /// Longest history message, in characters.
    pub max_history_message_chars: usize,
    /// Largest frame, in bytes; bigger closes the socket with code 1009.
    pub max_frame_bytes: usize,
    /// Whether the server runs in integration-test mode (no token frames).
    pub test_mode: bool,
}

/// `sources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Sources {
    /// The turn.
    pub turn_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Numbered sources; the answer cites them as `[n]`.
    pub sources: Vec<Source>,
    /// What was searched: the question, or — for a follow-up, when `RAGCHAT_QUERY_REWRITE=auto`
    /// — the standalone query the model rewrote it into.
    pub search_query: String,
}

/// One retrieved chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    /// Its number in the prompt, from 1.
    pub n: u32,
    /// Index point id of the chunk.
    pub chunk_id: String,
    /// Path of the document it comes from.
    pub source: String,
    /// Title of the document.
    pub title: String,
    /// The page of a PDF the chunk starts on, from 1; absent for other documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The chunk's text.
    pub text: String,
    /// Relevance to the question, higher is better: cosine similarity with dense retrieval, the
    /// Reciprocal Rank Fusion score (k = 60, at most 2/60) with hybrid retrieval.
    pub score: f32,
}

/// `token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Token {
    /// The turn.
    pub turn_id: String,
    /// The next piece of the answer.
    pub text: String,
}

/// `done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Done {
    /// The turn.
    pub turn_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The full answer: exactly the concatenated `token` texts.
    pub answer: String,
    /// Source numbers the answer cites as `[n]`, ascending, only ones that exist.
    pub citations: Vec<u32>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Earlier turns (question and answer pairs) the prompt included: from the ask's `history`,
    /// or loaded from the record store when the ask named a `conversation_id` and sent none.
    pub history_turns: u32,
    /// Token counts.
    pub usage: Usage,
    /// Timings.
    pub timings_ms: Timings,
    /// The sources, only when the turn did not stream (test mode or `stream:false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Source>>,
    /// What was searched (as in `sources`), only when the turn did not stream and got as far
    /// as searching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_query: Option<String>,
    /// The turn's OpenTelemetry trace id (32 hex digits): quote it in a bug report, an operator
    /// finds the turn's trace and record with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorFrame {
    /// The turn it ends, or null when the frame could not be tied to a turn.
    pub turn_id: Option<String>,
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// When to retry, for rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The trace id of the turn it ends, when a turn ran (as in `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The turn whose `feedback` frame this refuses (the refusal ends no turn: its `turn_id`
    /// is null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_for: Option<String>,
}

impl ErrorFrame {
    /// The frame for an error, tied to a turn or not.
    pub fn new(turn_id: Option<String>, error: ApiError) -> Self {
        Self {
            turn_id,
            code: error.code,
            message: error.message,
            retry_after_ms: error.retry_after_ms,
            trace_id: None,
            feedback_for: None,
        }
    }
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: no maps with non-string keys, no
        // fallible Serialize impls. Fall back to an internal error frame all the same.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","turn_id":null,"code":"internal","message":"serialisation failed"}"#
                .to_owned()
        })
    }
}

/// A token frame straight from borrowed parts: the hot path writes one per token, and this
/// avoids building an owned `ServerFrame` for each.
pub fn token_json(turn_id: &str, text: &str) -> String {
    #[derive(Serialize)]
    struct TokenRef<'a> {
        r#type: &'static str,
        turn_id: &'a str,
        text: &'a str,
    }
    serde_json::to_string(&TokenRef {
        r#type: "token",
        turn_id,
        text,
    })
    .unwrap_or_default()
}

/// Parses a client text frame, telling malformed JSON (`bad_request`) from an unknown frame type
/// (`unsupported`) and invalid fields (`bad_request`).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ApiError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let e: String = e.to_string().chars().take(300).collect();
        ApiError::bad_request(format!("malformed JSON: {e}"))
    })?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("a frame must be an object with a string \"type\""))?;
    if !matches!(kind.as_str(), "ask" | "cancel" | "auth" | "feedback") {
        let shown: String = kind.chars().take(40).collect();
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "unknown frame type {shown:?}; expected \"ask\", \"cancel\", \"feedback\" \
                 or \"auth\""
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let e: String = e.to_string().chars().take(300).collect();
        ApiError::bad_request(format!("invalid {kind} frame: {e}"))
    })
}

/// Checks a client-supplied id (turn or conversation): it becomes a record id and a partition
/// key, so it must be short and plain.
pub fn validate_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        )))
    }
}

/// The JSON Schema of every frame, as checked in at docs/protocol.schema.json.
pub fn json_schema() -> serde_json::Value {
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    #[serde(untagged)]
    enum RagchatV1 {
        Client(ClientFrame),
        Server(ServerFrame),
    }
    let mut schema = serde_json::to_value(schemars::schema_for!(RagchatV1)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), PROTOCOL.into());
        obj.insert(
            "description".into(),
            "Every frame of the ragchat.v1 WebSocket protocol (client frames, then server frames). \
             Generated from src/chat/protocol.rs by `ragchat schema`."
                .into(),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_frames() -> Vec<ServerFrame> {
        let source = Source {
            n: 1,
            chunk_id: "6f1c0b1e-0000-5000-8000-000000000000".into(),
            source: "docs/a.md".into(),
            title: "A".into(),
            page: Some(3),
            text: "text \"quoted\" ünïcode".into(),
            score: 0.5,
        };
        vec![
            ServerFrame::Ready(Ready {
                protocol: PROTOCOL.into(),
                version: "0.1.0".into(),
                principal: "key:alice".into(),
                limits: Limits {
                    max_question_chars: 4000,
                    max_history_messages: 50,
                    max_history_message_chars: 16000,
                    max_frame_bytes: 1 << 20,
                    test_mode: false,
                },
            }),
            ServerFrame::Sources(Sources {
                turn_id: "t1".into(),
                conversation_id: "c1".into(),
                sources: vec![source.clone()],
                search_query: "When was it first lit?".into(),
            }),
            ServerFrame::Token(Token {
                turn_id: "t1".into(),
                text: " Paris".into(),
            }),
            ServerFrame::Done(Box::new(Done {
                turn_id: "t1".into(),
                conversation_id: "c1".into(),
                answer: "Paris [1].".into(),
                citations: vec![1],
                finish_reason: FinishReason::Stop,
                history_turns: 0,
                usage: Usage {
                    prompt_tokens: Some(10),
                    completion_tokens: None,
                },
                timings_ms: Timings {
                    embed: 1.5,
                    rewrite: Some(310.0),
                    retrieve: 0.25,
                    ttft: Some(12.0),
                    generate: 100.0,
                    total: 120.0,
                },
                sources: Some(vec![source]),
                search_query: Some("When was the Saltmere lighthouse first lit?".into()),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            })),
            ServerFrame::Error(ErrorFrame {
                turn_id: None,
                code: ErrorCode::Busy,
                message: "a turn is running".into(),
                retry_after_ms: Some(1000),
                trace_id: None,
                feedback_for: None,
            }),
            ServerFrame::Error(ErrorFrame {
                feedback_for: Some("t1".into()),
                ..ErrorFrame::new(None, ApiError::bad_request("no turn \"t1\""))
            }),
            ServerFrame::FeedbackSaved(FeedbackSaved {
                turn_id: "t1".into(),
            }),
        ]
    }

    #[test]
    fn every_server_frame_round_trips() {
        for frame in sample_frames() {
            let json = frame.to_json();
            let back: ServerFrame = serde_json::from_str(&json).expect("parses back");
            assert_eq!(back, frame, "{json}");
        }
    }

    #[test]
    fn every_client_frame_round_trips() {
        let frames = [
            ClientFrame::Ask(Ask {
                question: "q".into(),
                turn_id: Some("t".into()),
                conversation_id: Some("c".into()),
                history: vec![HistoryMessage {
                    role: Role::Assistant,
                    content: "a".into(),
                }],
                user: Some("u@example.com".into()),
                stream: Some(false),
            }),
            ClientFrame::Ask(Ask {
                question: "minimal".into(),
                ..Ask::default()
            }),
            ClientFrame::Cancel(Cancel {
                turn_id: Some("t".into()),
            }),
            ClientFrame::Cancel(Cancel::default()),
            ClientFrame::Auth(Auth {
                token: "k-0123456789".into(),
            }),
        ];
        for frame in frames {
            let json = serde_json::to_string(&frame).expect("serialises");
            assert_eq!(parse_client_frame(&json).expect("parses"), frame, "{json}");
        }
    }

    #[test]
    fn token_json_matches_the_typed_frame() {
        let json = token_json("t\"1", "a\nb");
        let frame: ServerFrame = serde_json::from_str(&json).expect("parses");
        assert_eq!(
            frame,
            ServerFrame::Token(Token {
                turn_id: "t\"1".into(),
                text: "a\nb".into()
            })
        );
    }

    #[test]
    fn parse_errors_have_the_right_codes() {
        let cases = [
            ("{not json", ErrorCode::BadRequest),
            ("[1,2]", ErrorCode::BadRequest),
            (r#"{"type":7}"#, ErrorCode::BadRequest),
            (r#"{"type":"subscribe"}"#, ErrorCode::Unsupported),
            (r#"{"type":"ask"}"#, ErrorCode::BadRequest),
            (r#"{"type":"ask","question":5}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"ask","question":"q","history":[{"role":"system","content":"x"}]}"#,
                ErrorCode::BadRequest,
            ),
        ];
        for (text, code) in cases {
            let err = parse_client_frame(text).expect_err(text);
            assert_eq!(err.code, code, "{text}: {}", err.message);
        }
    }

    mod any_input {
        use proptest::prelude::*;

        use super::*;

        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(Into::into),
                any::<f64>()
                    .prop_map(|f| serde_json::Number::from_f64(f)
                        .map_or(serde_json::Value::Null, Into::into)),
                any::<i64>().prop_map(Into::into),
                ".{0,40}".prop_map(serde_json::Value::String),
                prop_oneof![Just("ask"), Just("cancel"), Just("auth"), Just("question")]
                    .prop_map(|s| serde_json::Value::String(s.into())),
            ];
            leaf.prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("type".to_owned()),
                            Just("question".to_owned()),
                            Just("history".to_owned()),
                            Just("turn_id".to_owned()),
                            Just("token".to_owned()),
                            ".{0,12}",
                        ],
                        inner,
                        0..6
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn ask() -> impl Strategy<Value = Ask> {
            (
                ".{1,60}",
                proptest::option::of("[A-Za-z0-9._:-]{1,20}"),
                proptest::option::of("[A-Za-z0-9._:-]{1,20}"),
                prop::collection::vec(
                    (any::<bool>(), ".{0,30}").prop_map(|(user, content)| HistoryMessage {
                        role: if user { Role::User } else { Role::Assistant },
                        content,
                    }),
                    0..4,
                ),
                proptest::option::of(".{0,20}"),
                proptest::option::of(any::<bool>()),
            )
                .prop_map(
                    |(question, turn_id, conversation_id, history, user, stream)| Ask {
                        question,
                        turn_id,
                        conversation_id,
                        history,
                        user,
                        stream,
                    },
                )
        }

        proptest! {
            #[test]
            fn any_bytes_are_a_frame_or_a_typed_error(
                bytes in prop::collection::vec(any::<u8>(), 0..512)
            ) {
                let text = String::from_utf8_lossy(&bytes);
                if let Err(e) = parse_client_frame(&text) {
                    prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::Unsupported));
                    prop_assert!(e.message.len() < 2048, "bounded message: {}", e.message.len());
                }
            }

            #[test]
            fn any_json_is_a_frame_or_a_typed_error(value in json()) {
                if let Err(e) = parse_client_frame(&value.to_string()) {
                    prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::Unsupported));
                }
            }

            #[test]
            fn valid_asks_round_trip(ask in ask()) {
                let frame = ClientFrame::Ask(ask);
                let json = serde_json::to_string(&frame).expect("serialises");
                prop_assert_eq!(parse_client_frame(&json).expect("parses"), frame);
            }
        }
    }

    #[test]
    fn hostile_json_gets_a_clear_code() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let nested_ask = format!(
            r#"{{"type":"ask","question":"q","history":{}{}}}"#,
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        let long = "x".repeat(70_000);
        let cases = [
            (deep, ErrorCode::BadRequest),
            (nested_ask, ErrorCode::BadRequest),
            (
                r#"{"type":"ask","question":1e999}"#.to_owned(),
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"ask","question":"q","stream":123456789012345678901234567890}"#
                    .to_owned(),
                ErrorCode::BadRequest,
            ),
            (format!(r#"{{"type":"{long}"}}"#), ErrorCode::Unsupported),
            (
                r#"{"type":"ask","question":"\ud800"}"#.to_owned(),
                ErrorCode::BadRequest,
            ),
            ("\u{0}\u{1}\u{2}".to_owned(), ErrorCode::BadRequest),
        ];
        for (text, code) in cases {
            let shown: String = text.chars().take(60).collect();
            let err = parse_client_frame(&text).expect_err(&shown);
            assert_eq!(err.code, code, "{shown}: {}", err.message);
            assert!(
                err.message.len() < 2048,
                "{shown}: the message does not echo it all"
            );
        }
        // Control characters are text like any other in a question.
        let ask =
            parse_client_frame(r#"{"type":"ask","question":"a\u0000b\u001fc"}"#).expect("parses");
        assert!(matches!(ask, ClientFrame::Ask(a) if a.question == "a\u{0}b\u{1f}c"));
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("turn_id", "abc-123_x.y:z").is_ok());
        for bad in ["", "has space", "a/b", "ü", &"x".repeat(129)] {
            assert!(validate_id("turn_id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checked_in_schema_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.schema.json");
        let checked_in: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path).expect("docs/protocol.schema.json exists"),
        )
        .expect("valid JSON");
        assert_eq!(
            checked_in,
            json_schema(),
            "docs/protocol.schema.json is stale: run `cargo run -- schema > docs/protocol.schema.json`"
        );
    }
}
