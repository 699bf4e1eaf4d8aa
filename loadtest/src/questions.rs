//! The questions clients ask: one per line from a file, or a built-in list about the test
//! corpus (tests/fixtures/corpus), handed out so that concurrent clients ask different ones.

use std::path::Path;

/// Questions about tests/fixtures/corpus, so retrieval has something to find (shared with the
/// Locust user).
const DEFAULT: &str = include_str!("../questions.txt");

/// A non-empty list of questions.
#[derive(Debug, Clone)]
pub struct Questions(Vec<String>);

impl Default for Questions {
    fn default() -> Self {
        Self::parse(DEFAULT).expect("loadtest/questions.txt lists questions")
    }
}

impl Questions {
    /// One question per line; blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Option<Self> {
        let list: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        (!list.is_empty()).then_some(Self(list))
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&text).ok_or_else(|| anyhow::anyhow!("{} has no questions", path.display()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Client `client`'s `turn`-th question: each client walks the whole list, starting at its
    /// own offset, so at any moment the clients spread over every question.
    pub fn pick(&self, client: usize, turn: u64) -> &str {
        let n = self.0.len();
        let i = (client % n + (turn % n as u64) as usize) % n;
        &self.0[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_cycles_through_every_question_from_its_own_offset() {
        let q = Questions::parse("a\nb\nc\n").unwrap_or_default();
        let walk = |client| (0..6).map(|t| q.pick(client, t)).collect::<Vec<_>>();
        assert_eq!(walk(0), ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(walk(1), ["b", "c", "a", "b", "c", "a"]);
        assert_eq!(walk(5), ["c", "a", "b", "c", "a", "b"]);
        // At any turn, consecutive clients ask different questions.
        assert_ne!(q.pick(7, 3), q.pick(8, 3));
    }

    #[test]
    fn parse_skips_blank_lines_and_comments_and_refuses_an_empty_list() {
        let q = Questions::parse("# header\n\n  first  \nsecond\n").unwrap_or_default();
        assert_eq!(q.len(), 2);
        assert_eq!(q.pick(0, 0), "first");
        assert!(Questions::parse("# only a comment\n\n").is_none());
    }

    #[test]
    fn default_list_is_not_empty() {
        assert!(!Questions::default().is_empty());
        // The shared file's first question, past its comment lines.
        assert_eq!(
            Questions::default().pick(0, 0),
            "When does the Quillon Street Bakery open?"
        );
    }
}
