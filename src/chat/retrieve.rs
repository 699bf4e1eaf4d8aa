//! The first phase of a turn: embed the question (meanwhile loading a stored conversation),
//! rewrite a follow-up into a standalone search query (see [`super::rewrite`]), search the
//! index, number the hits as sources.

use std::time::Instant;

use tracing::Instrument;

use super::protocol::{HistoryMessage, Source};
use super::request::TurnRequest;
use super::{Ending, Watch};
use super::{history, rewrite};
use crate::config::QueryRewrite;
use crate::error::ApiError;
use crate::retrieval::{Hit, Query};
use crate::state::AppState;
use crate::turn::ms;

/// What retrieval found for a turn.
pub struct Retrieved {
    /// The numbered sources, best first.
    pub sources: Vec<Source>,
    /// The conversation so far: the ask's, or the stored one.
    pub history: Vec<HistoryMessage>,
    /// What was searched: the question, or its standalone rewrite.
    pub search_query: String,
    /// Embedding the question (and the rewrite), in milliseconds.
    pub embed_ms: f64,
    /// Rewriting the question, in milliseconds, when it was tried.
    pub rewrite_ms: Option<f64>,
    /// Searching the index, in milliseconds.
    pub retrieve_ms: f64,
}

/// Embeds, loads the conversation when asked, and searches. `history` is the ask's own.
pub async fn retrieve(
    state: &AppState,
    request: &TurnRequest,
    history: Vec<HistoryMessage>,
    watch: &mut Watch,
) -> Result<Retrieved, Ending> {
    let t = Instant::now();
    let rewrites = state.config.chat.query_rewrite == QueryRewrite::Auto;
    // A follow-up whose history came with the ask is rewritten before anything is embedded;
    // otherwise the question is embedded while the stored conversation loads (most turns have
    // none: they pay nothing for the rewrite), and embedded again only if it is rewritten.
    let known_follow_up = rewrites && !history.is_empty();
    let embed = tracing::info_span!("embed", embedder = %state.embedder.describe());
    let embedding = futures::future::join(
        async {
            if known_follow_up {
                return None;
            }
            Some(
                state
                    .embedder
                    .embed_query(&request.question)
                    .instrument(embed)
                    .await,
            )
        },
        history::stored(state, request),
    );
    let (vector, stored) = watch.guard(embedding).await.ok_or(Ending::Cancelled)?;
    let history = stored.unwrap_or(history);
    let mut embed_ms = ms(t);

    let (mut search_query, mut rewrite_ms) = (request.question.clone(), None);
    if rewrites && !history.is_empty() {
        let t = Instant::now();
        let timeout = std::time::Duration::from_millis(state.config.chat.query_rewrite_timeout_ms);
        let span = tracing::info_span!("rewrite", outcome = tracing::field::Empty);
        let rewritten = watch
            .guard(
                rewrite::standalone_query(state.llm.as_ref(), &history, &request.question, timeout)
                    .instrument(span.clone()),
            )
            .await
            .ok_or(Ending::Cancelled)?;
        let outcome = match rewritten {
            Ok(query) if query == request.question.trim() => "unchanged",
            Ok(query) => {
                search_query = query;
                "rewritten"
            }
            Err(e) => {
                span.in_scope(|| {
                    tracing::warn!(error = %e, "query rewrite failed; searching the question as asked");
                });
                e.kind()
            }
        };
        span.record("outcome", outcome);
        state.metrics.query_rewritten(outcome, t.elapsed());
        rewrite_ms = Some(ms(t));
    }
    let vector = match vector {
        Some(vector) if search_query == request.question => vector,
        _ => {
            let t = Instant::now();
            let embed = tracing::info_span!("embed", embedder = %state.embedder.describe());
            let vector = watch
                .guard(state.embedder.embed_query(&search_query).instrument(embed))
                .await
                .ok_or(Ending::Cancelled)?;
            embed_ms += ms(t);
            vector
        }
    };
    let vector = vector.map_err(|e| {
        tracing::error!(error = %e, "embedding the question failed");
        Ending::Failed(ApiError::from(e))
    })?;

    let t = Instant::now();
    let query = Query {
        text: search_query.clone(),
        vector,
        mode: state.config.index.retrieval,
    };
    let k = state.config.chat.top_k;
    let span = tracing::info_span!("retrieve",
        backend = %state.index.describe(),
        k = k as i64,
        mode = ?query.mode,
        hits = tracing::field::Empty);
    let search = state.index.search(query, k).instrument(span.clone());
    let hits = watch
        .guard(search)
        .await
        .ok_or(Ending::Cancelled)?
        .map_err(|e| {
            tracing::error!(error = %e, "retrieval failed");
            Ending::Failed(ApiError::from(e))
        })?;
    span.record("hits", hits.len() as i64);
    Ok(Retrieved {
        sources: numbered(hits),
        history,
        search_query,
        embed_ms,
        rewrite_ms,
        retrieve_ms: ms(t),
    })
}

/// Hits as the sources the prompt and the client see, numbered from 1.
fn numbered(hits: Vec<Hit>) -> Vec<Source> {
    hits.into_iter()
        .zip(1u32..)
        .map(|(hit, n)| Source {
            n,
            chunk_id: hit.id,
            source: hit.payload.source,
            title: hit.payload.title,
            page: hit.payload.page,
            text: hit.payload.text,
            score: hit.score,
        })
        .collect()
}
