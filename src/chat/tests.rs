//! A turn's phases over fake backends: what each failure tells the client and the record, and
//! how a stored conversation reaches the prompt.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::fakes::{self, FakeApp, FakeEmbedder, FakeIndex, FakeLlm, Step, tokens};
use super::protocol::{Ask, ServerFrame};
use super::{OutputGone, TurnEvent, TurnOutput, TurnRequest, run_turn};
use crate::error::ErrorCode;
use crate::store::{RecordStore, TurnRecord, TurnStatus};
use crate::turn::FinishReason;

/// Every frame a turn emits, as the client would see it.
#[derive(Default)]
struct Frames(Vec<ServerFrame>);

#[async_trait]
impl TurnOutput for Frames {
    async fn emit(&mut self, event: TurnEvent<'_>) -> Result<(), OutputGone> {
        self.0.push(match event {
            TurnEvent::Sources(s) => ServerFrame::Sources(s.clone()),
            TurnEvent::Token(t) => ServerFrame::Token(super::protocol::Token {
                turn_id: String::new(),
                text: t.to_owned(),
            }),
            TurnEvent::Final(f) => f.clone(),
        });
        Ok(())
    }
}

/// Runs one turn of `ask` on `app`; its frames and its record.
async fn turn(app: FakeApp, ask: Ask) -> (Vec<ServerFrame>, TurnRecord) {
    let principal = crate::auth::Principal::anonymous();
    let chat = &app.state.config.chat;
    let request = TurnRequest::from_ask(ask, chat, "socket-conv", principal, 1_000).expect("valid");
    let turn_id = request.turn_id.clone();
    let mut frames = Frames::default();
    let cancel = CancellationToken::new();
    let span = super::turn_span(&request, app.state.llm.model());
    run_turn(
        &app.state,
        request,
        Instant::now(),
        cancel,
        &mut frames,
        &span,
    )
    .await;
    let FakeApp {
        state,
        store,
        recorder,
        ..
    } = app;
    drop(state);
    recorder.finish().await;
    (frames.0, store.get(&turn_id).expect("recorded"))
}

fn ask(question: &str) -> Ask {
    Ask {
        question: question.into(),
        turn_id: Some("t".into()),
        ..Ask::default()
    }
}

fn error_of(frames: &[ServerFrame]) -> (ErrorCode, String) {
    match frames.last() {
        Some(ServerFrame::Error(e)) => (e.code, e.message.clone()),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn an_embedder_that_fails_ends_the_turn_with_embedding_unavailable() {
    let embedder = FakeEmbedder {
        fail: true,
        ..FakeEmbedder::default()
    };
    let app = fakes::app_over(
        embedder,
        FakeIndex::default(),
        FakeLlm::new(tokens(1, Duration::ZERO)),
        &[],
    );
    let (frames, record) = turn(app, ask("q")).await;
    assert_eq!(frames.len(), 1, "no sources, no tokens: {frames:?}");
    let (code, message) = error_of(&frames);
    assert_eq!(code, ErrorCode::EmbeddingUnavailable);
    assert!(
        !message.contains("connection refused"),
        "no internals: {message}"
    );
    assert_eq!(record.status, TurnStatus::Failed);
    assert_eq!(
        record.error.map(|e| e.code),
        Some(ErrorCode::EmbeddingUnavailable)
    );
}

#[tokio::test]
async fn an_index_that_fails_ends_the_turn_with_retrieval_unavailable_and_no_path() {
    let index = FakeIndex {
        fail: true,
        ..FakeIndex::default()
    };
    let app = fakes::app_over(
        FakeEmbedder::default(),
        index,
        FakeLlm::new(tokens(1, Duration::ZERO)),
        &[],
    );
    let (frames, record) = turn(app, ask("q")).await;
    let (code, message) = error_of(&frames);
    assert_eq!(code, ErrorCode::RetrievalUnavailable);
    assert!(
        !message.contains("/srv/secret"),
        "no server paths: {message}"
    );
    assert_eq!(
        record.error.map(|e| e.code),
        Some(ErrorCode::RetrievalUnavailable)
    );
}

#[tokio::test]
async fn an_answer_cut_off_mid_stream_is_llm_unavailable_and_keeps_the_partial_answer() {
    let script = vec![Step::Token("Mara ".into()), Step::Token("Quill".into())];
    let app = fakes::app(FakeLlm::new(script), &[]);
    let (frames, record) = turn(app, ask("q")).await;
    assert!(matches!(frames[0], ServerFrame::Sources(_)));
    assert_eq!(error_of(&frames).0, ErrorCode::LlmUnavailable);
    assert_eq!(record.status, TurnStatus::Failed);
    assert_eq!(
        record.answer, "Mara Quill",
        "the record keeps what was said"
    );
    assert_eq!(record.finish_reason, None);
}

#[tokio::test]
async fn a_named_conversation_without_history_continues_from_the_store() {
    let llm = FakeLlm::new(tokens(2, Duration::ZERO));
    let prompts = llm.prompts.clone();
    let app = fakes::app(llm, &[]);
    for (id, question) in [("a", "Who keeps the lighthouse?"), ("b", "Since when?")] {
        let mut record = crate::store::tests::record("conv-1", id);
        record.question = question.into();
        app.store.put(&record).await.expect("stored");
    }
    let other = crate::store::tests::record("conv-2", "x");
    app.store.put(&other).await.expect("stored");
    let ask = Ask {
        conversation_id: Some("conv-1".into()),
        ..ask("And her cats?")
    };
    let (frames, record) = turn(app, ask).await;
    let ServerFrame::Done(done) = frames.last().expect("frames") else {
        panic!("{frames:?}");
    };
    assert_eq!(done.history_turns, 2);
    assert_eq!(done.finish_reason, FinishReason::Stop);
    let prompt = prompts.lock().expect("lock")[0].clone();
    let said: Vec<&str> = prompt.iter().map(|m| m.content.as_str()).collect();
    // System, then the stored turns oldest first, then the sources and the question; nothing
    // of conv-2.
    assert_eq!(
        &said[1..5],
        [
            "Who keeps the lighthouse?",
            "answer a",
            "Since when?",
            "answer b"
        ]
    );
    assert!(said[5].ends_with("Question: And her cats?"), "{}", said[5]);
    assert_eq!(said.len(), 6);
    assert_eq!(record.conversation_id, "conv-1");
}

/// A stored conversation `conv-1` about the lighthouse keeper, and an ask that follows it up.
async fn follow_up(app: &FakeApp) -> Ask {
    for (id, question) in [("a", "Who keeps the Zephyr lighthouse?")] {
        let mut record = crate::store::tests::record("conv-1", id);
        record.question = question.into();
        record.answer = "Mara Quill keeps it [1].".into();
        app.store.put(&record).await.expect("stored");
    }
    Ask {
        conversation_id: Some("conv-1".into()),
        ..ask("Since when?")
    }
}

fn sources_of(frames: &[ServerFrame]) -> &super::protocol::Sources {
    match frames.first() {
        Some(ServerFrame::Sources(s)) => s,
        other => panic!("expected sources first, got {other:?}"),
    }
}

#[tokio::test]
async fn a_follow_up_is_searched_as_the_standalone_query_the_model_rewrites_it_into() {
    const REWRITTEN: &str = "Since when has Mara Quill kept the Zephyr lighthouse?";
    let llm =
        FakeLlm::new(tokens(2, Duration::ZERO)).completing(&format!("Query: \"{REWRITTEN}\""));
    let completions = llm.completions.clone();
    let embedder = FakeEmbedder::default();
    let embedded = embedder.seen.clone();
    let index = FakeIndex::default();
    let searched = index.queries.clone();
    let app = fakes::app_over(embedder, index, llm, &[]);
    let ask = follow_up(&app).await;
    let (frames, record) = turn(app, ask).await;

    assert_eq!(sources_of(&frames).search_query, REWRITTEN);
    assert_eq!(*searched.lock().expect("lock"), [REWRITTEN]);
    assert_eq!(
        embedded.lock().expect("lock").last().map(String::as_str),
        Some(REWRITTEN),
        "the rewrite is what is embedded"
    );
    let rewrite_prompt = completions.lock().expect("lock")[0].clone();
    assert!(
        rewrite_prompt[1]
            .content
            .contains("User: Who keeps the Zephyr lighthouse?")
            && rewrite_prompt[1]
                .content
                .contains("Last question: Since when?"),
        "{rewrite_prompt:?}"
    );
    assert_eq!(record.search_query.as_deref(), Some(REWRITTEN));
    assert_eq!(
        record.question, "Since when?",
        "the record keeps what was asked"
    );
    assert_eq!(record.status, TurnStatus::Completed);
}

#[tokio::test]
async fn a_failed_rewrite_searches_the_question_as_asked_and_is_counted() {
    // `FakeLlm` without a completion fails the rewrite call (as a refused connection).
    let index = FakeIndex::default();
    let searched = index.queries.clone();
    let app = fakes::app_over(
        FakeEmbedder::default(),
        index,
        FakeLlm::new(tokens(2, Duration::ZERO)),
        &[],
    );
    let metrics = std::sync::Arc::clone(&app.state.metrics);
    let ask = follow_up(&app).await;
    let (frames, record) = turn(app, ask).await;
    assert_eq!(sources_of(&frames).search_query, "Since when?");
    assert!(
        matches!(frames.last(), Some(ServerFrame::Done(_))),
        "no error frame: {frames:?}"
    );
    assert_eq!(*searched.lock().expect("lock"), ["Since when?"]);
    assert_eq!(record.status, TurnStatus::Completed);
    let exposition = metrics.render();
    assert!(
        exposition
            .lines()
            .any(|l| l.starts_with("ragchat_rewrite_duration_seconds_count")
                && l.contains("outcome=\"error\"")
                && l.ends_with(" 1")),
        "{exposition}"
    );
}

#[tokio::test]
async fn no_history_or_rewrite_off_means_no_extra_model_call() {
    let llm = FakeLlm::new(tokens(1, Duration::ZERO)).completing("never used");
    let completions = llm.completions.clone();
    let (frames, record) = turn(fakes::app(llm, &[]), ask("Who keeps the lighthouse?")).await;
    assert!(completions.lock().expect("lock").is_empty());
    assert_eq!(
        sources_of(&frames).search_query,
        "Who keeps the lighthouse?"
    );
    assert_eq!(record.timings_ms.rewrite, None);

    let llm = FakeLlm::new(tokens(1, Duration::ZERO)).completing("never used");
    let completions = llm.completions.clone();
    let app = fakes::app(llm, &["--query-rewrite", "off"]);
    let ask = follow_up(&app).await;
    let (frames, _) = turn(app, ask).await;
    assert!(completions.lock().expect("lock").is_empty());
    assert_eq!(sources_of(&frames).search_query, "Since when?");
}

#[tokio::test]
async fn a_follow_up_with_its_history_in_the_ask_embeds_only_the_rewrite() {
    let llm = FakeLlm::new(tokens(1, Duration::ZERO)).completing("Mara Quill keeper since");
    let embedder = FakeEmbedder::default();
    let embedded = embedder.seen.clone();
    let app = fakes::app_over(embedder, FakeIndex::default(), llm, &[]);
    let history = vec![
        super::protocol::HistoryMessage {
            role: super::protocol::Role::User,
            content: "Who keeps the Zephyr lighthouse?".into(),
        },
        super::protocol::HistoryMessage {
            role: super::protocol::Role::Assistant,
            content: "Mara Quill [1].".into(),
        },
    ];
    let ask = Ask {
        history,
        ..ask("Since when?")
    };
    let (frames, _) = turn(app, ask).await;
    assert_eq!(sources_of(&frames).search_query, "Mara Quill keeper since");
    assert_eq!(*embedded.lock().expect("lock"), ["Mara Quill keeper since"]);
}
