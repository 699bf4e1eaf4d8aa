//! Token pacing: one streamed completion as a state machine driven by one interval timer (the
//! time to first token, then one token per interval), with the faults a real server shows
//! mid-stream (stall, cut, an error event).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use super::{Fault, Sim, ms};
use crate::sse::{self, Completion, Timings, Usage, Vocab};

/// What one streamed completion sends.
pub(super) struct Plan {
    pub(super) prompt_n: u32,
    pub(super) tokens: u32,
    pub(super) reason: &'static str,
    pub(super) include_usage: bool,
    pub(super) fault_at: Option<(Fault, u32)>,
}

/// The body of one streamed completion: a state machine driven by one interval timer. Token
/// chunks go out as three shared pieces (constant head, pre-serialised token, per-completion
/// tail), so a token costs no allocation.
pub(super) struct TokenStream {
    vocab: Arc<Vocab>,
    completion: Completion,
    plan: Plan,
    tail: Bytes,
    interval: Interval,
    sent: u32,
    pending: [Option<Bytes>; 4],
    next: usize,
    finished: bool,
    stall: Option<Pin<Box<Sleep>>>,
    ttft: Duration,
    itl: Duration,
    // Held until the stream ends or the client goes away, like a llama-server slot.
    _permit: Option<OwnedSemaphorePermit>,
}

impl TokenStream {
    pub(super) fn new(
        sim: &Sim,
        completion: Completion,
        plan: Plan,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let c = &sim.0.config;
        // A zero period would panic; tokens then go out as fast as the client reads.
        let period = c.itl.max(Duration::from_micros(1));
        let mut interval = tokio::time::interval_at(Instant::now() + c.ttft, period);
        interval.set_missed_tick_behavior(if c.itl.is_zero() {
            MissedTickBehavior::Burst
        } else {
            MissedTickBehavior::Delay
        });
        Self {
            vocab: sim.0.vocab.clone(),
            tail: completion.content_tail(),
            completion,
            plan,
            interval,
            sent: 0,
            pending: Default::default(),
            next: 0,
            finished: false,
            stall: None,
            ttft: c.ttft,
            itl: c.itl,
            _permit: permit,
        }
    }

    fn push(&mut self, b: Bytes) {
        if let Some(slot) = self.pending.iter_mut().find(|s| s.is_none()) {
            *slot = Some(b);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        while self.next < self.pending.len() {
            let i = self.next;
            self.next += 1;
            if let Some(b) = self.pending[i].take() {
                return Some(b);
            }
        }
        self.next = 0;
        None
    }

    fn timings(&self) -> Timings {
        Timings::simulated(
            self.plan.prompt_n,
            ms(self.ttft),
            self.sent,
            ms(self.itl * self.sent),
        )
    }

    /// Queues what one timer tick sends; returns an error to cut the connection.
    fn tick(&mut self) -> Result<(), io::Error> {
        if let Some((fault, at)) = self.plan.fault_at
            && self.sent == at
        {
            match fault {
                Fault::Stall => {
                    self.stall = Some(Box::pin(tokio::time::sleep(Duration::from_secs(3600))));
                    return Ok(());
                }
                Fault::Cut => {
                    self.finished = true;
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "simulated cut",
                    ));
                }
                Fault::ErrorInStream => {
                    self.finished = true;
                    self.push(sse::error_event(
                        500,
                        "simulated failure inside the stream",
                        "server_error",
                    ));
                    return Ok(());
                }
                Fault::None | Fault::RateLimit => {}
            }
        }
        if self.sent == 0 {
            self.push(self.completion.role_chunk());
        }
        if self.sent < self.plan.tokens {
            self.push(sse::content_head());
            self.push(self.vocab.json(self.sent));
            self.push(self.tail.clone());
            self.sent += 1;
        } else {
            let timings = self.timings();
            if self.plan.include_usage {
                self.push(self.completion.finish_chunk(self.plan.reason, None));
                let usage = Usage::new(self.plan.prompt_n, self.sent);
                self.push(self.completion.usage_chunk(&usage, &timings));
            } else {
                self.push(
                    self.completion
                        .finish_chunk(self.plan.reason, Some(&timings)),
                );
            }
            self.push(Bytes::from_static(sse::DONE));
            self.finished = true;
        }
        Ok(())
    }
}

impl Stream for TokenStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.pop() {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(stall) = this.stall.as_mut() {
                ready!(stall.as_mut().poll(cx));
                this.finished = true;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "stalled for an hour",
                ))));
            }
            ready!(this.interval.poll_tick(cx));
            if let Err(e) = this.tick() {
                return Poll::Ready(Some(Err(e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn sim(config: super::super::SimConfig) -> Sim {
        Sim::new(config)
    }

    async fn collect(stream: TokenStream) -> (String, Option<io::ErrorKind>) {
        let mut out = Vec::new();
        let mut stream = Box::pin(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (String::from_utf8_lossy(&out).into(), Some(e.kind())),
            }
        }
        (String::from_utf8_lossy(&out).into(), None)
    }
    fn fast() -> super::super::SimConfig {
        super::super::SimConfig {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            ..Default::default()
        }
    }
    fn plan(tokens: u32, include_usage: bool, fault_at: Option<(Fault, u32)>) -> Plan {
        Plan {
            prompt_n: 10,
            tokens,
            reason: "stop",
            include_usage,
            fault_at,
        }
    }
    fn completion() -> Completion {
        Completion {
            id: "chatcmpl-x".into(),
            created: 1,
            model: "smollm2".into(),
        }
    }

    #[tokio::test]
    async fn stream_paces_tokens_and_ends_with_usage_then_done() {
        let s = sim(super::super::SimConfig {
            ttft: Duration::from_millis(40),
            itl: Duration::from_millis(20),
            ..Default::default()
        });
        let start = Instant::now();
        let (body, err) = collect(TokenStream::new(
            &s,
            completion(),
            plan(4, true, None),
            None,
        ))
        .await;
        assert_eq!(err, None);
        // Role + first token at the TTFT, then three more tokens, then the finish one interval later.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(40 + 4 * 20), "{took:?}");
        assert!(took < Duration::from_millis(40 + 4 * 20 + 200), "{took:?}");
        let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 1 + 4 + 2 + 1);
        assert!(events[0].contains(r#""delta":{"role":"assistant","content":null}"#));
        assert!(events[1].contains(r#""delta":{"content":"The"}"#));
        assert!(events[5].contains(r#""finish_reason":"stop""#) && !events[5].contains("timings"));
        assert!(
            events[6].starts_with(r#"data: {"choices":[],"#)
                && events[6].contains(r#""completion_tokens":4"#)
        );
        assert_eq!(events[7], "data: [DONE]");
        for e in &events[..7] {
            let v: serde_json::Value =
                serde_json::from_str(e.trim_start_matches("data: ")).unwrap_or_default();
            assert_eq!(v["object"], "chat.completion.chunk", "{e}");
        }
    }

    #[tokio::test]
    async fn error_in_stream_fault_sends_an_error_event_and_no_done() {
        let s = sim(fast());
        let p = plan(6, false, Some((Fault::ErrorInStream, 3)));
        let (body, err) = collect(TokenStream::new(&s, completion(), p, None)).await;
        assert_eq!(err, None);
        assert_eq!(body.matches(r#""delta":{"content""#).count(), 3);
        assert!(body.ends_with("data: {\"error\":{\"code\":500,\"message\":\"simulated failure inside the stream\",\"type\":\"server_error\"}}\n\n"));
    }

    #[tokio::test]
    async fn cut_fault_errors_the_body_mid_stream() {
        let s = sim(fast());
        let p = plan(6, false, Some((Fault::Cut, 2)));
        let (body, err) = collect(TokenStream::new(&s, completion(), p, None)).await;
        assert_eq!(err, Some(io::ErrorKind::ConnectionReset));
        assert_eq!(body.matches(r#""delta":{"content""#).count(), 2);
    }
}
