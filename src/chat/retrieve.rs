//! The first phase of a turn: embed the question (meanwhile loading a stored conversation),
//! search the index, number the hits as sources.

use std::time::Instant;

use tracing::Instrument;

use super::history;
use super::protocol::{HistoryMessage, Source};
use super::request::TurnRequest;
use super::{Ending, Watch};
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
    /// Embedding the question, in milliseconds.
    pub embed_ms: f64,
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
    let embed = tracing::info_span!("embed", embedder = %state.embedder.describe());
    let embedding = futures::future::join(
        state
            .embedder
            .embed_query(&request.question)
            .instrument(embed),
        history::stored(state, request),
    );
    let (vector, stored) = watch.guard(embedding).await.ok_or(Ending::Cancelled)?;
    let vector = vector.map_err(|e| {
        tracing::error!(error = %e, "embedding the question failed");
        Ending::Failed(ApiError::from(e))
    })?;
    let embed_ms = ms(t);

    let t = Instant::now();
    let query = Query {
        text: request.question.clone(),
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
        history: stored.unwrap_or(history),
        embed_ms,
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
            text: hit.payload.text,
            score: hit.score,
        })
        .collect()
}
