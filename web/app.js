// The ragchat test page: one socket, one turn at a time (docs/protocol.md).
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log"), status = $("status"), question = $("question"), send = $("send"), stop = $("stop");
let ws = null, limits = null, current = null, history = [], conversationId = null, retryMs = 500;

function setStatus(text, ok) { status.textContent = text; status.className = ok ? "ok" : "bad"; }
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }

// The credential never goes in the URL (it would land in access logs): it is the first frame,
// kept in this tab's sessionStorage only. Under App Service Authentication the platform's
// cookie signs the socket in and nothing is asked here.
const TOKEN_KEY = "ragchat.token";
const authForm = $("auth"), tokenInput = $("token"), who = $("who");

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.onopen = () => {
    retryMs = 500;
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) ws.send(JSON.stringify({ type: "auth", token }));
  };
  ws.onmessage = (event) => handle(JSON.parse(event.data));
  ws.onclose = (event) => {
    send.disabled = true;
    if (current) finishTurn();
    if (event.code === 4401) {
      // Refused: ask for a credential instead of retrying with the same one.
      sessionStorage.removeItem(TOKEN_KEY);
      setStatus("sign in: this server needs an API key or token", false);
      authForm.classList.add("shown");
      tokenInput.focus();
      return;
    }
    setStatus(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}); reconnecting…`, false);
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

authForm.onsubmit = (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  tokenInput.value = "";
  authForm.classList.remove("shown");
  connect();
};

function handle(frame) {
  switch (frame.type) {
    case "ready":
      limits = frame.limits;
      setStatus(`connected · ${frame.protocol} · v${frame.version}${limits.test_mode ? " · test mode" : ""}`, true);
      who.textContent = frame.principal && frame.principal !== "anonymous" ? `as ${frame.principal}` : "";
      send.disabled = !!current;
      break;
    case "sources":
      if (current && !current.abandoned && frame.turn_id === current.id) { conversationId = frame.conversation_id; renderSources(frame.sources); }
      break;
    case "token":
      if (current && frame.turn_id === current.id) { current.text += frame.text; current.answer.textContent = current.text; scrollDown(); }
      break;
    case "done":
      if (!current || frame.turn_id !== current.id) break;
      if (current.abandoned) { finishTurn(); break; }
      conversationId = frame.conversation_id;
      if (frame.sources) renderSources(frame.sources);
      renderAnswer(frame.answer, frame.citations);
      const t = frame.timings_ms, u = frame.usage;
      current.box.append(el("div", "meta-line",
        `${frame.finish_reason} · embed ${t.embed} ms · retrieve ${t.retrieve} ms · first token ${t.ttft ?? "–"} ms · ` +
        `generate ${t.generate} ms · total ${t.total} ms · tokens ${u.prompt_tokens ?? "?"} in / ${u.completion_tokens ?? "?"} out`));
      if (frame.answer) history.push({ role: "user", content: current.question }, { role: "assistant", content: frame.answer });
      finishTurn();
      break;
    case "error":
      if (current?.abandoned && (frame.turn_id === current.id || frame.turn_id == null)) { finishTurn(); break; }
      const box = current && (frame.turn_id === current.id || frame.turn_id == null) ? current.box : log.appendChild(el("div", "turn"));
      box.append(el("div", "error", `${frame.code}: ${frame.message}${frame.retry_after_ms ? ` (retry in ${frame.retry_after_ms} ms)` : ""}`));
      if (current && (frame.turn_id === current.id || frame.turn_id == null)) finishTurn();
      break;
  }
}

function renderSources(sources) {
  current.sources = sources;
  current.list.replaceChildren(...sources.map((s) => {
    const li = el("li"); li.id = `s-${current.id}-${s.n}`;
    const d = el("details"), sum = el("summary");
    sum.append(el("span", "n", `[${s.n}] `), document.createTextNode(s.title + " "), el("span", "meta", `${s.source} · score ${s.score.toFixed(3)}`));
    d.append(sum, el("pre", null, s.text)); li.append(d);
    return li;
  }));
}

// Turns "[n]" into links to the numbered source, only for sources that exist.
function renderAnswer(text, citations) {
  const a = current.answer; a.classList.remove("streaming"); a.replaceChildren();
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(m[1]);
    if (!current.sources.some((s) => s.n === n)) continue;
    a.append(document.createTextNode(text.slice(last, m.index)));
    const link = el("a", "cite", m[0]); link.href = `#s-${current.id}-${n}`;
    link.onclick = () => { const li = $(`s-${current?.id ?? ""}-${n}`) || document.querySelector(link.getAttribute("href")); li?.querySelector("details")?.setAttribute("open", ""); };
    a.append(link); last = m.index + m[0].length;
  }
  a.append(document.createTextNode(text.slice(last)));
  for (const n of citations || []) document.getElementById(`s-${current.id}-${n}`)?.classList.add("cited");
}

function finishTurn() {
  if (current) current.answer.classList.remove("streaming");
  current = null; stop.disabled = true; send.disabled = !(ws && ws.readyState === WebSocket.OPEN); question.focus();
}
// The newest messages that fit the server's limits (oldest dropped, long ones cut), and that
// leave the frame under its byte limit with the question.
function recentHistory(questionText) {
  const most = limits?.max_history_messages ?? 20, longest = limits?.max_history_message_chars ?? 16000;
  const budget = (limits?.max_frame_bytes ?? 65536) - new TextEncoder().encode(questionText).length - 1024;
  const picked = [];
  let bytes = 0;
  for (const m of history.slice(Math.max(0, history.length - most)).reverse()) {
    const chars = Array.from(m.content);
    const message = chars.length > longest ? { role: m.role, content: chars.slice(0, longest).join("") } : m;
    bytes += new TextEncoder().encode(JSON.stringify(message)).length + 1;
    if (bytes > budget) break;
    picked.unshift(message);
  }
  // Whole question-and-answer pairs only.
  if (picked.length && picked[0].role === "assistant") picked.shift();
  return picked;
}
function scrollDown() { window.scrollTo(0, document.body.scrollHeight); }

$("ask").onsubmit = (event) => {
  event.preventDefault();
  const q = question.value.trim();
  if (!q || current || !ws || ws.readyState !== WebSocket.OPEN) return;
  const id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()));
  const box = log.appendChild(el("div", "turn"));
  const answer = el("div", "a streaming"), list = el("ol", "sources");
  box.append(el("div", "q", q), answer, list);
  current = { id, question: q, text: "", box, answer, list, sources: [] };
  const frame = { type: "ask", question: q, turn_id: id, history: recentHistory(q) };
  if (conversationId) frame.conversation_id = conversationId;
  ws.send(JSON.stringify(frame));
  question.value = ""; send.disabled = true; stop.disabled = false; scrollDown();
};
stop.onclick = () => { if (current && ws) ws.send(JSON.stringify({ type: "cancel", turn_id: current.id })); };
question.onkeydown = (event) => { if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); } };
$("new").onclick = () => {
  // A running turn is cancelled and its remaining frames ignored; the next ask waits for its end.
  if (current && !current.abandoned) { current.abandoned = true; ws?.send(JSON.stringify({ type: "cancel", turn_id: current.id })); }
  history = []; conversationId = null; log.replaceChildren();
};
connect();
