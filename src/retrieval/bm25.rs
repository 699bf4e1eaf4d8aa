//! BM25 keyword vectors for hybrid retrieval, made by qdrant-edge's `EdgeBm25` (the tokenizer,
//! stop words and stemmer of Qdrant's own full-text index, English by default). Every backend
//! stores the same sparse vectors under the same name, so the engine's IDF modifier scores them
//! the same way in the embedded index and on a Qdrant server.

use qdrant_edge::SparseVector;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

use super::IndexError;

/// Name of the sparse BM25 vector in every point.
pub const SPARSE: &str = "bm25";

/// Turns chunk and question text into BM25 term vectors.
#[derive(Debug)]
pub struct Bm25(EdgeBm25);

impl Bm25 {
    /// The model with Qdrant's defaults (k1 1.2, b 0.75, English stop words and stemming), as a
    /// Qdrant server configures BM25 when nothing is set.
    pub fn new() -> Result<Self, IndexError> {
        EdgeBm25::new(EdgeBm25Config::default())
            .map(Self)
            .map_err(|e| IndexError::Engine(format!("BM25: {e}")))
    }

    /// A chunk's term vector (term frequencies, length-normalised).
    pub fn document(&self, text: &str) -> SparseVector {
        self.0.embed_document(text)
    }

    /// A question's term vector (each term once; the engine weighs them by IDF).
    pub fn query(&self, text: &str) -> SparseVector {
        self.0.embed_query(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_become_terms_and_stop_words_do_not() {
        let bm25 = Bm25::new().expect("model");
        let doc = bm25.document("Error E-4471 means the battery cells are imbalanced.");
        assert!(!doc.indices.is_empty());
        let same = bm25.query("what does E-4471 mean");
        let other = bm25.query("what does E-4417 mean");
        let shared =
            |q: &SparseVector| q.indices.iter().filter(|i| doc.indices.contains(i)).count();
        // "4471" (and "mean") match; the other code shares only "mean".
        assert!(shared(&same) > shared(&other), "{same:?} vs {other:?}");
        assert!(bm25.query("the of and").indices.is_empty());
    }
}
