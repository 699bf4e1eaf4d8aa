//! Retrieval evaluation: labelled questions (which document answers each) run through the
//! configured embedder and index, scored as recall@k and mean reciprocal rank at the document
//! level. A question may come with the conversation before it (a follow-up): it is then searched
//! as asked, or — given a chat model — as the standalone query the turn's rewrite makes of it.
//! `ragchat eval` prints the report; `make eval` runs it over the sets in `eval/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chat::protocol::HistoryMessage;
use crate::chat::rewrite;
use crate::config::RetrievalMode;
use crate::embed::{EmbedError, Embedder};
use crate::llm::ChatModel;
use crate::retrieval::{IndexError, Query, VectorIndex};

/// Cut-offs reported as recall@k.
pub const CUTOFFS: [usize; 4] = [1, 3, 5, 10];

/// Chunks retrieved per question: enough for recall@10 at the document level in most corpora.
const CHUNKS_PER_QUESTION: usize = 30;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The question set cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a labelled question.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Embedding a question failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// Searching the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// One labelled question.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The conversation before the question, oldest first (a follow-up); empty for most.
    #[serde(default)]
    pub history: Vec<HistoryMessage>,
    /// The question, as a user would type it.
    pub question: String,
    /// The document that answers it: a path, matched against the end of each hit's `source`
    /// at a `/` boundary (so `err-e4471.md` matches `eval/corpus/rare-terms/err-e4471.md`).
    pub source: String,
}

/// Reads a JSON-lines question set (blank lines and `#` comments allowed).
pub fn load(path: &Path) -> Result<Vec<Case>, EvalError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

fn parse(text: &str, name: &str) -> Result<Vec<Case>, EvalError> {
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| EvalError::Parse {
            path: name.to_owned(),
            line: i + 1,
            message,
        };
        let case: Case = serde_json::from_str(line).map_err(|e| error(e.to_string()))?;
        if case.question.trim().is_empty() || case.source.trim().is_empty() {
            return Err(error("question and source must not be empty".into()));
        }
        cases.push(case);
    }
    if cases.is_empty() {
        return Err(EvalError::Parse {
            path: name.to_owned(),
            line: 0,
            message: "no questions".into(),
        });
    }
    Ok(cases)
}

/// Does a hit's `source` name the labelled document?
fn matches(source: &str, label: &str) -> bool {
    source == label
        || source
            .strip_suffix(label)
            .is_some_and(|head| head.ends_with('/') || head.ends_with('\\'))
}

/// The 1-based rank of `label` among the distinct documents of `sources` (best first).
fn document_rank<'a>(sources: impl IntoIterator<Item = &'a str>, label: &str) -> Option<usize> {
    let mut seen: Vec<&str> = Vec::new();
    for source in sources {
        if seen.contains(&source) {
            continue;
        }
        seen.push(source);
        if matches(source, label) {
            return Some(seen.len());
        }
    }
    None
}

/// One question's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The question.
    pub question: String,
    /// What was searched, when it was not the question (a follow-up's rewrite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_query: Option<String>,
    /// The labelled document.
    pub source: String,
    /// Its rank among the retrieved documents, if retrieved.
    pub rank: Option<usize>,
    /// The best document retrieved.
    pub top: Option<String>,
}

/// The scores of one question set under one retrieval mode.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How chunks were retrieved.
    pub mode: RetrievalMode,
    /// Follow-ups searched as their rewrite (`None`: as asked): how many were rewritten, and how
    /// many fell back to the question (the model failed or answered with no query).
    pub rewrite: Option<RewriteCount>,
    /// Questions asked.
    pub questions: usize,
    /// Share of questions whose document is among the first k documents, for each cut-off.
    pub recall: BTreeMap<usize, f64>,
    /// Mean reciprocal rank (0 for a document not retrieved).
    pub mrr: f64,
    /// Median time to search the index for one question (embedding excluded), in ms.
    pub search_p50_ms: f64,
    /// Every question's outcome.
    pub outcomes: Vec<Outcome>,
}

/// What the query rewrite did over a question set.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RewriteCount {
    /// Follow-ups searched as a rewritten query.
    pub rewritten: usize,
    /// Follow-ups the model left as they were.
    pub unchanged: usize,
    /// Follow-ups searched as asked because the rewrite failed.
    pub failed: usize,
}

/// The chat model that rewrites follow-ups, and its time budget per question.
#[derive(Clone, Copy)]
pub struct Rewriter<'a> {
    /// The model.
    pub llm: &'a dyn ChatModel,
    /// Longest wait per rewrite.
    pub timeout: Duration,
}

impl Report {
    fn score(
        mode: RetrievalMode,
        rewrite: Option<RewriteCount>,
        outcomes: Vec<Outcome>,
        mut ms: Vec<f64>,
    ) -> Self {
        let n = outcomes.len().max(1) as f64;
        let recall = CUTOFFS
            .iter()
            .map(|&k| {
                let hits = outcomes
                    .iter()
                    .filter(|o| o.rank.is_some_and(|r| r <= k))
                    .count();
                (k, hits as f64 / n)
            })
            .collect();
        let mrr = outcomes
            .iter()
            .map(|o| o.rank.map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / n;
        ms.sort_by(f64::total_cmp);
        let search_p50_ms = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
        Self {
            mode,
            rewrite,
            questions: outcomes.len(),
            recall,
            mrr,
            search_p50_ms,
            outcomes,
        }
    }
}

/// Asks every question of `cases` under each of `modes` (embedding each question once) and
/// scores where its document ranks. With a `rewriter`, a question that has history is searched
/// as its standalone rewrite (the question itself when the rewrite fails, as in a turn). One
/// report per mode, in order.
pub async fn run(
    cases: &[Case],
    embedder: &dyn Embedder,
    index: &dyn VectorIndex,
    modes: &[RetrievalMode],
    rewriter: Option<Rewriter<'_>>,
) -> Result<Vec<Report>, EvalError> {
    let mut outcomes = vec![Vec::with_capacity(cases.len()); modes.len()];
    let mut ms = vec![Vec::with_capacity(cases.len()); modes.len()];
    let mut count = RewriteCount::default();
    for case in cases {
        let mut search_query = None;
        if let Some(r) = rewriter.filter(|_| !case.history.is_empty()) {
            match rewrite::standalone_query(r.llm, &case.history, &case.question, r.timeout).await {
                Ok(q) if q == case.question.trim() => count.unchanged += 1,
                Ok(q) => {
                    count.rewritten += 1;
                    search_query = Some(q);
                }
                Err(e) => {
                    tracing::warn!(error = %e, question = %case.question, "rewrite failed");
                    count.failed += 1;
                }
            }
        }
        let text = search_query.as_deref().unwrap_or(&case.question);
        let vector = embedder.embed_query(text).await?;
        for (i, &mode) in modes.iter().enumerate() {
            let query = Query {
                text: text.to_owned(),
                vector: vector.clone(),
                mode,
            };
            let started = Instant::now();
            let hits = index.search(query, CHUNKS_PER_QUESTION).await?;
            ms[i].push(started.elapsed().as_secs_f64() * 1e3);
            let sources = hits.iter().map(|h| h.payload.source.as_str());
            outcomes[i].push(Outcome {
                question: case.question.clone(),
                search_query: search_query.clone(),
                source: case.source.clone(),
                rank: document_rank(sources, &case.source),
                top: hits.first().map(|h| h.payload.source.clone()),
            });
        }
    }
    let rewrite = rewriter.map(|_| count);
    Ok(modes
        .iter()
        .zip(outcomes.into_iter().zip(ms))
        .map(|(&mode, (outcomes, ms))| Report::score(mode, rewrite, outcomes, ms))
        .collect())
}

/// Does the set hold follow-ups (questions with history)?
pub fn has_follow_ups(cases: &[Case]) -> bool {
    cases.iter().any(|c| !c.history.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_whole_path_components_only() {
        assert!(matches("eval/corpus/a/err-e4471.md", "err-e4471.md"));
        assert!(matches("err-e4471.md", "err-e4471.md"));
        assert!(matches("docs/protocol.md", "docs/protocol.md"));
        assert!(!matches("eval/corpus/a/xerr-e4471.md", "err-e4471.md"));
        assert!(!matches("eval/corpus/a/err-e4417.md", "err-e4471.md"));
    }

    #[test]
    fn rank_counts_documents_not_chunks() {
        let hits = ["a.md", "a.md", "b.md", "a.md", "c.md"];
        assert_eq!(document_rank(hits, "a.md"), Some(1));
        assert_eq!(document_rank(hits, "b.md"), Some(2));
        assert_eq!(document_rank(hits, "c.md"), Some(3));
        assert_eq!(document_rank(hits, "d.md"), None);
    }

    #[test]
    fn recall_and_mrr() {
        let outcome = |rank| Outcome {
            question: String::new(),
            search_query: None,
            source: String::new(),
            rank,
            top: None,
        };
        let report = Report::score(
            RetrievalMode::Dense,
            None,
            vec![
                outcome(Some(1)),
                outcome(Some(2)),
                outcome(Some(4)),
                outcome(None),
            ],
            vec![1.0, 2.0, 3.0, 4.0],
        );
        assert_eq!(report.recall[&1], 0.25);
        assert_eq!(report.recall[&3], 0.5);
        assert_eq!(report.recall[&5], 0.75);
        assert_eq!(report.recall[&10], 0.75);
        assert!((report.mrr - (1.0 + 0.5 + 0.25) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn question_sets_parse_with_line_numbers_on_errors() {
        let ok = parse(
            "# comment\n\n{\"question\":\"q\",\"source\":\"a.md\"}\n",
            "set.jsonl",
        )
        .expect("parses");
        assert_eq!(ok.len(), 1);
        let err = parse("{\"question\":\"q\"}\n", "set.jsonl").expect_err("no source");
        assert!(err.to_string().starts_with("set.jsonl:1:"), "{err}");
        let err = parse("{\"question\":\" \",\"source\":\"a\"}", "s").expect_err("blank");
        assert!(err.to_string().contains("must not be empty"), "{err}");
        assert!(parse("\n# nothing\n", "s").is_err());
    }

    #[test]
    fn the_shipped_sets_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval");
        let repo = root.parent().expect("repo root");
        let sets = [
            ("docs.jsonl", repo.to_owned()),
            ("rare-terms.jsonl", root.join("corpus/rare-terms")),
            ("follow-ups.jsonl", root.join("corpus/rare-terms")),
        ];
        for (set, corpus) in sets {
            let cases = load(&root.join(set)).expect("parses");
            assert!(cases.len() >= 20, "{set}: {} questions", cases.len());
            if set == "follow-ups.jsonl" {
                assert!(
                    cases.iter().all(|c| !c.history.is_empty()),
                    "{set}: all follow-ups"
                );
            }
            for case in cases {
                // A renamed document must not silently turn its questions into misses.
                assert!(
                    corpus.join(&case.source).is_file(),
                    "{set}: {} does not exist",
                    case.source
                );
            }
        }
    }
}
