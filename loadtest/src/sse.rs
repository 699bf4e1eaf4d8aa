//! The llama-server streaming dialect (tests/fixtures/llama-server): chunk frames built once per
//! completion, token frames assembled from shared pieces so that sending a token allocates
//! nothing, and an incremental SSE reader for the client side.

use bytes::Bytes;
use serde::Serialize;

/// The stream's last event.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Everything of a content chunk before the token's JSON string.
const CONTENT_HEAD: &[u8] =
    br#"data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"#;

/// Answer words, cycled. Some carry citations so ragchat's citation parser has work to do.
const WORDS: &[&str] = &[
    "The", " answer", " is", " in", " the", " sources", " [1]", ".", " It", " says", " that",
    " the", " keeper", " lives", " by", " the", " light", " [2]", ",", " and", " more", "\n",
];

/// Pre-serialised token texts, shared by every completion.
#[derive(Debug)]
pub struct Vocab {
    words: Vec<&'static str>,
    json: Vec<Bytes>,
}

impl Default for Vocab {
    fn default() -> Self {
        Self::new(WORDS)
    }
}

impl Vocab {
    pub fn new(words: &[&'static str]) -> Self {
        let json = words.iter().map(|w| Bytes::from(json_string(w))).collect();
        Self {
            words: words.to_vec(),
            json,
        }
    }

    /// The `i`-th token's text.
    pub fn word(&self, i: u32) -> &'static str {
        self.words[i as usize % self.words.len()]
    }

    /// The `i`-th token's text as a JSON string literal.
    pub fn json(&self, i: u32) -> Bytes {
        self.json[i as usize % self.json.len()].clone()
    }

    /// The answer of `n` tokens, for non-streamed completions.
    pub fn answer(&self, n: u32) -> String {
        (0..n).map(|i| self.word(i)).collect()
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// llama-server's non-standard `timings` object, in its field order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Timings {
    pub cache_n: u32,
    pub prompt_n: u32,
    pub prompt_ms: f64,
    pub prompt_per_token_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: u32,
    pub predicted_ms: f64,
    pub predicted_per_token_ms: f64,
    pub predicted_per_second: f64,
}

impl Timings {
    /// Timings for a simulated completion.
    pub fn simulated(prompt_n: u32, prompt_ms: f64, predicted_n: u32, predicted_ms: f64) -> Self {
        let per = |ms: f64, n: u32| if n == 0 { 0.0 } else { ms / f64::from(n) };
        let rate = |ms: f64, n: u32| {
            if ms <= 0.0 {
                0.0
            } else {
                1000.0 * f64::from(n) / ms
            }
        };
        Self {
            cache_n: 0,
            prompt_n,
            prompt_ms,
            prompt_per_token_ms: per(prompt_ms, prompt_n),
            prompt_per_second: rate(prompt_ms, prompt_n),
            predicted_n,
            predicted_ms,
            predicted_per_token_ms: per(predicted_ms, predicted_n),
            predicted_per_second: rate(predicted_ms, predicted_n),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

/// `usage` as llama-server reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Usage {
    pub completion_tokens: u32,
    pub prompt_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            completion_tokens,
            prompt_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 0 },
        }
    }
}

/// The identity every chunk of one completion repeats.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Completion {
    /// `"created":…,"id":…,"model":…,"system_fingerprint":…,"object":"chat.completion.chunk"`
    fn meta(&self) -> String {
        format!(
            r#""created":{},"id":{},"model":{},"system_fingerprint":"b0-unknown","object":"chat.completion.chunk""#,
            self.created,
            json_string(&self.id),
            json_string(&self.model)
        )
    }

    /// The first chunk: role, `content:null`.
    pub fn role_chunk(&self) -> Bytes {
        Bytes::from(format!(
            r#"data: {{"choices":[{{"finish_reason":null,"index":0,"delta":{{"role":"assistant","content":null}}}}],{}}}

"#,
            self.meta()
        ))
    }

    /// What follows a token's JSON string in a content chunk. A content chunk is
    /// [`content_head`] + token JSON + this.
    pub fn content_tail(&self) -> Bytes {
        Bytes::from(format!("}}}}],{}}}\n\n", self.meta()))
    }

    /// One whole content chunk (tests and slow paths; the stream sends the three pieces).
    pub fn content_chunk(&self, text: &str) -> Bytes {
        let mut v = Vec::from(CONTENT_HEAD);
        v.extend_from_slice(json_string(text).as_bytes());
        v.extend_from_slice(&self.content_tail());
        Bytes::from(v)
    }

    /// The finish chunk. llama-server puts `timings` here only when no usage chunk follows.
    pub fn finish_chunk(&self, reason: &str, timings: Option<&Timings>) -> Bytes {
        let timings = timings
            .map(|t| format!(r#","timings":{}"#, to_json(t)))
            .unwrap_or_default();
        Bytes::from(format!(
            "data: {{\"choices\":[{{\"finish_reason\":{},\"index\":0,\"delta\":{{}}}}],{}{timings}}}\n\n",
            json_string(reason),
            self.meta()
        ))
    }

    /// The `choices:[]` chunk sent when the request asked for `stream_options.include_usage`.
    pub fn usage_chunk(&self, usage: &Usage, timings: &Timings) -> Bytes {
        Bytes::from(format!(
            "data: {{\"choices\":[],{},\"usage\":{},\"timings\":{}}}\n\n",
            self.meta(),
            to_json(usage),
            to_json(timings)
        ))
    }
}

/// The constant start of every content chunk.
pub fn content_head() -> Bytes {
    Bytes::from_static(CONTENT_HEAD)
}

/// An error event inside a 200 stream, as some llama-server builds send it.
pub fn error_event(code: u16, message: &str, kind: &str) -> Bytes {
    Bytes::from(format!("data: {}\n\n", error_body(code, message, kind)))
}

/// An OpenAI-shaped error body: `{"error":{"code":…,"message":…,"type":…}}`.
pub fn error_body(code: u16, message: &str, kind: &str) -> String {
    format!(
        r#"{{"error":{{"code":{code},"message":{},"type":{}}}}}"#,
        json_string(message),
        json_string(kind)
    )
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// Splits a byte stream into SSE `data:` payloads, however the bytes are cut into pieces.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
}

impl SseReader {
    /// Feeds bytes; calls `on_data` with each complete event's `data` (lines joined by `\n`).
    pub fn feed(&mut self, bytes: &[u8], mut on_data: impl FnMut(&str)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = find_event_end(&self.buf[start..]) {
            let event = &self.buf[start..start + end.0];
            if let Ok(text) = std::str::from_utf8(event) {
                let mut data = String::new();
                let mut any = false;
                for line in text.split('\n') {
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    if let Some(rest) = line.strip_prefix("data:") {
                        if any {
                            data.push('\n');
                        }
                        data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                        any = true;
                    }
                }
                if any {
                    on_data(&data);
                }
            }
            start += end.0 + end.1;
        }
        self.buf.drain(..start);
    }
}

/// (length of the event, length of the blank-line separator) for the first complete event.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if buf[i] == b'\n' && buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
            return Some((i, 3));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = include_str!("../../tests/fixtures/llama-server/stream-basic.sse");
    const USAGE_LENGTH: &str =
        include_str!("../../tests/fixtures/llama-server/stream-usage-length.sse");

    /// The fixture's `created` ticks over mid-stream; ours is fixed per completion.
    fn normalise_created(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(pos) = rest.find("\"created\":") {
            let after = pos + "\"created\":".len();
            out.push_str(&rest[..after]);
            out.push('0');
            rest = rest[after..].trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out.push_str(rest);
        out
    }

    fn fixture_value(fixture: &str, line: usize, pointer: &str) -> serde_json::Value {
        let data = fixture
            .split("\n\n")
            .nth(line)
            .and_then(|e| e.strip_prefix("data: "))
            .unwrap_or("null");
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        v.pointer(pointer).cloned().unwrap_or_default()
    }

    fn timings_of(v: &serde_json::Value) -> Timings {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX) as u32;
        Timings {
            cache_n: n("cache_n"),
            prompt_n: n("prompt_n"),
            prompt_ms: f("prompt_ms"),
            prompt_per_token_ms: f("prompt_per_token_ms"),
            prompt_per_second: f("prompt_per_second"),
            predicted_n: n("predicted_n"),
            predicted_ms: f("predicted_ms"),
            predicted_per_token_ms: f("predicted_per_token_ms"),
            predicted_per_second: f("predicted_per_second"),
        }
    }

    fn assert_same_stream(ours: &str, fixture: &str) {
        let (ours, fixture) = (normalise_created(ours), normalise_created(fixture));
        let a: Vec<&str> = ours.split("\n\n").collect();
        let b: Vec<&str> = fixture.split("\n\n").collect();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            // Byte for byte up to `timings`, whose floats llama.cpp prints with 17 digits where
            // serde_json prints the shortest form of the same double.
            let (xp, xt) = x.split_once(r#","timings":"#).unwrap_or((x, ""));
            let (yp, yt) = y.split_once(r#","timings":"#).unwrap_or((y, ""));
            assert_eq!(xp, yp, "event {i}");
            let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
            assert_eq!(parse(xt), parse(yt), "event {i} timings");
            assert!(xt.len().abs_diff(yt.len()) <= 4, "event {i}: {xt} vs {yt}");
        }
    }

    fn stream_of(c: &Completion, words: &[&str], tail: &[Bytes]) -> String {
        let mut all = Vec::new();
        all.extend_from_slice(&c.role_chunk());
        for w in words {
            // Assemble from the same three pieces the simulator sends.
            all.extend_from_slice(&content_head());
            all.extend_from_slice(json_string(w).as_bytes());
            all.extend_from_slice(&c.content_tail());
        }
        for t in tail {
            all.extend_from_slice(t);
        }
        all.extend_from_slice(DONE);
        String::from_utf8(all).unwrap_or_default()
    }

    #[test]
    fn stream_without_usage_matches_the_llama_server_fixture() {
        let c = Completion {
            id: "chatcmpl-zAHamgmpmmrIBMhowFUyAlId5Oeouebo".into(),
            created: 1795312851,
            model: "smollm2".into(),
        };
        let timings = timings_of(&fixture_value(BASIC, 8, "/timings"));
        let words = ["The", " capital", " of", " France", " is", " Paris", "."];
        let ours = stream_of(&c, &words, &[c.finish_chunk("stop", Some(&timings))]);
        assert_same_stream(&ours, BASIC);
    }

    #[test]
    fn stream_with_usage_and_length_matches_the_llama_server_fixture() {
        let c = Completion {
            id: "chatcmpl-MVwChHitma5YoYTsvzHFPmazck16qYzN".into(),
            created: 1795312858,
            model: "smollm2".into(),
        };
        let timings = timings_of(&fixture_value(USAGE_LENGTH, 14, "/timings"));
        let usage = Usage::new(38, 12);
        let words = [
            "In", " the", " depths", " of", " the", " ocean", ",", " where", " shadows", " play",
            ",", "\n",
        ];
        let tail = [
            c.finish_chunk("length", None),
            c.usage_chunk(&usage, &timings),
        ];
        let ours = stream_of(&c, &words, &tail);
        assert_same_stream(&ours, USAGE_LENGTH);
    }

    #[test]
    fn error_body_matches_the_bad_request_fixture() {
        let fixture = include_str!("../../tests/fixtures/llama-server/error-bad-request.txt");
        let body = error_body(
            400,
            "Expected 'messages' to be an array",
            "invalid_request_error",
        );
        assert_eq!(fixture.lines().next(), Some(body.as_str()));
    }

    #[test]
    fn reader_yields_each_data_payload_however_the_bytes_are_split() {
        for cut in [1, 2, 3, 7, 64, 10_000] {
            let mut reader = SseReader::default();
            let mut got = Vec::new();
            for piece in BASIC.as_bytes().chunks(cut) {
                reader.feed(piece, |d| got.push(d.to_owned()));
            }
            assert_eq!(got.len(), 10, "cut {cut}");
            assert!(got[0].starts_with(r#"{"choices":[{"finish_reason":null"#));
            assert_eq!(got[9], "[DONE]");
        }
    }

    #[test]
    fn reader_accepts_crlf_and_multiline_data() {
        let mut reader = SseReader::default();
        let mut got = Vec::new();
        reader.feed(b"event: x\r\ndata: a\r\ndata: b\r\n\r\ndata:c\n\n", |d| {
            got.push(d.to_owned())
        });
        assert_eq!(got, ["a\nb", "c"]);
    }

    #[test]
    fn vocab_cycles_and_escapes() {
        let v = Vocab::new(&["a", "\"q\"\n"]);
        assert_eq!(v.word(3), "\"q\"\n");
        assert_eq!(&v.json(1)[..], br#""\"q\"\n""#);
        assert_eq!(v.answer(3), "a\"q\"\na");
    }
}
