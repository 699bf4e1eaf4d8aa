"""Locust users for ragchat over its WebSocket (ws:// or wss://), the seeds' load tool.

Each user opens /ws, waits for `ready`, then asks questions one turn at a time and reports these
Locust request events (request_type "WS"):

  connect     socket open -> `ready` frame
  ttft        `ask` sent -> first `token` frame (time to first token)
  pace        a turn's mean gap between token frames (its inter-token pace)
  gap (max)   a turn's longest gap between token frames (a stall shows here)
  answer      `ask` sent -> `done` frame (full-answer time; response_length = answer bytes)

A turn that ends with an `error` frame fails its `answer` event with the frame's `code`, so the
failures table groups errors by code. Run headless, for example:

  locust -f loadtest/locustfile.py --headless -u 200 -r 50 -t 60s --host ws://127.0.0.1:8000

Extra options: --questions FILE (one per line), --cancel-share 0.1 (cancel that share of turns
after the first token), --turn-timeout 120 (seconds without a frame before giving up),
--api-key KEY (or RAGCHAT_API_KEY: sent as the first frame, for RAGCHAT_AUTH=api_key). Over wss
with a private CA, point WEBSOCKET_CLIENT_CA_BUNDLE at its certificate (`make locust` does, for
Caddy's).
"""

import json
import os
import random
import time
import uuid

import websocket
from locust import User, constant, events, task

# Shared with loadgen (loadtest/questions.txt): questions about tests/fixtures/corpus.
QUESTIONS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "questions.txt")


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--questions", default="", help="file of questions, one per line")
    parser.add_argument("--cancel-share", type=float, default=0.0, help="share of turns to cancel")
    parser.add_argument("--turn-timeout", type=float, default=120.0, help="seconds without a frame")
    parser.add_argument(
        "--api-key", default=os.environ.get("RAGCHAT_API_KEY", ""), help="API key (auth frame)"
    )


class TurnError(Exception):
    """A turn that ended with an `error` frame, a timeout or a lost connection."""


def _load_questions(path):
    with open(path or QUESTIONS_FILE, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path or QUESTIONS_FILE} has no questions")
    return lines


class RagchatUser(User):
    """One chat client: one socket, one turn at a time."""

    wait_time = constant(0)

    def on_start(self):
        opts = self.environment.parsed_options
        self.questions = _load_questions(getattr(opts, "questions", ""))
        self.cancel_share = float(getattr(opts, "cancel_share", 0.0) or 0.0)
        self.timeout = float(getattr(opts, "turn_timeout", 120.0) or 120.0)
        self.api_key = getattr(opts, "api_key", "") or ""
        host = (self.host or "ws://127.0.0.1:8000").rstrip("/")
        self.url = host if host.endswith("/ws") else host + "/ws"
        self.ws = None
        self._connect()

    def on_stop(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None

    def _fire(self, name, started, length=0, exception=None):
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
        )

    def _pace(self, gaps):
        """The turn's inter-token pace: its mean and its longest gap between token frames."""
        if not gaps:
            return
        for name, seconds in (("pace", sum(gaps) / len(gaps)), ("gap (max)", max(gaps))):
            self.environment.events.request.fire(
                request_type="WS",
                name=name,
                response_time=seconds * 1000.0,
                response_length=0,
                exception=None,
                context={},
            )

    def _connect(self):
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(self.url, timeout=self.timeout)
            if self.api_key:
                ws.send(json.dumps({"type": "auth", "token": self.api_key}))
            while True:
                frame = json.loads(ws.recv())
                if frame.get("type") == "ready":
                    break
            self.ws = ws
            self._fire("connect", started)
        except Exception as e:  # noqa: BLE001 - every failure is a failed connect event
            self.ws = None
            self._fire("connect", started, exception=e)

    def _drop(self):
        try:
            if self.ws is not None:
                self.ws.close()
        except Exception:
            pass
        self.ws = None

    @task
    def ask(self):
        if self.ws is None:
            self._connect()
            if self.ws is None:
                time.sleep(1)
                return
        turn_id = "locust-" + uuid.uuid4().hex[:16]
        cancel = random.random() < self.cancel_share
        question = random.choice(self.questions)
        started = time.perf_counter()
        first = True
        answer_bytes = 0
        last_token = None
        gaps = []
        try:
            self.ws.send(json.dumps({"type": "ask", "question": question, "turn_id": turn_id}))
            while True:
                raw = self.ws.recv()
                if not raw:
                    raise TurnError("connection closed")
                frame = json.loads(raw)
                kind = frame.get("type")
                if frame.get("turn_id") not in (None, turn_id):
                    continue
                if kind == "token":
                    answer_bytes += len(frame.get("text", "").encode())
                    now = time.perf_counter()
                    if last_token is not None:
                        gaps.append(now - last_token)
                    last_token = now
                    if first:
                        first = False
                        self._fire("ttft", started)
                        if cancel:
                            self.ws.send(json.dumps({"type": "cancel", "turn_id": turn_id}))
                elif kind == "done":
                    self._pace(gaps)
                    name = "answer (cancelled)" if frame.get("finish_reason") == "cancelled" else "answer"
                    self._fire(name, started, length=answer_bytes)
                    return
                elif kind == "error":
                    self._fire("answer", started, exception=TurnError(frame.get("code", "unknown")))
                    return
        except TurnError as e:
            self._fire("answer", started, exception=e)
            self._drop()
        except websocket.WebSocketTimeoutException:
            self._fire("answer", started, exception=TurnError("timeout"))
            self._drop()
        except Exception as e:  # noqa: BLE001 - the socket broke: count it and reconnect
            self._fire("answer", started, exception=TurnError(f"connection: {e}"))
            self._drop()
