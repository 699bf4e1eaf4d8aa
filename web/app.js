// The ragchat test page: one socket, one turn at a time (docs/protocol.md). Answers are rendered
// as markdown by the vendored marked, then sanitized by the vendored DOMPurify before they touch
// the DOM (web/vendor/README.md); source text is only ever set as text.
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log"), status = $("status"), question = $("question"), send = $("send"), stop = $("stop");
const panel = $("panel");
let ws = null, limits = null, current = null, history = [], conversationId = null, retryMs = 500;
// Turns by id: their sources (the citation panel) and feedback.
const turns = new Map();

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
      if (current && !current.abandoned && frame.turn_id === current.id) {
        conversationId = frame.conversation_id;
        showSearched(frame.search_query);
        renderSources(frame.sources);
      }
      break;
    case "token":
      if (current && frame.turn_id === current.id) { current.text += frame.text; scheduleRender(); }
      break;
    case "done":
      if (!current || frame.turn_id !== current.id) break;
      if (current.abandoned) { finishTurn(); break; }
      conversationId = frame.conversation_id;
      if (frame.sources) { showSearched(frame.search_query); renderSources(frame.sources); }
      renderAnswer(frame.answer, frame.citations);
      current.text = frame.answer;
      if (frame.finish_reason === "content_filter") {
        current.box.append(el("div", "error filtered", "The provider's content filter stopped this answer; what came before it is shown."));
      }
      const t = frame.timings_ms, u = frame.usage;
      current.box.append(el("div", "meta-line",
        `${frame.finish_reason} · embed ${t.embed} ms · retrieve ${t.retrieve} ms · first token ${t.ttft ?? "–"} ms · ` +
        `generate ${t.generate} ms · total ${t.total} ms · tokens ${u.prompt_tokens ?? "?"} in / ${u.completion_tokens ?? "?"} out`));
      if (frame.answer) history.push({ role: "user", content: current.question }, { role: "assistant", content: frame.answer });
      if (frame.finish_reason !== "cancelled" && frame.answer) addActions(current);
      finishTurn();
      break;
    case "feedback_saved": {
      const t = turns.get(frame.turn_id);
      if (t?.note) t.note.textContent = "Thanks: your feedback is recorded.";
      break;
    }
    case "error":
      if (frame.feedback_for) {
        // A refused feedback frame: it ends no turn.
        const t = turns.get(frame.feedback_for);
        if (t?.note) { t.note.textContent = `${frame.code}: ${frame.message}`; t.note.className = "note error"; }
        break;
      }
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
    sum.append(el("span", "n", `[${s.n}] `), document.createTextNode(s.title + " "), el("span", "meta", `${where(s)} · score ${s.score.toFixed(3)}`));
    d.append(sum, el("pre", null, s.text)); li.append(d);
    return li;
  }));
}

// "handbook.pdf p. 12", or the path.
function where(s) { return s.page ? `${s.source} p. ${s.page}` : s.source; }

// What was searched, when it was not the question as typed (a follow-up's rewrite).
function showSearched(query) {
  if (!query || query === current.question) return;
  current.box.insertBefore(el("div", "searched", `searched: ${query}`), current.answer);
}

// Markdown → HTML → sanitized DOM. No raw HTML survives, no script, no event handler, no
// javascript: URL; links open in a new tab without a referrer.
const SANITIZE = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
  FORBID_ATTR: ["style", "class", "id"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
});
function markdown(text) {
  return DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: true, async: false }), SANITIZE);
}

// Turns "[n]" in the answer's text (not in code or links) into buttons that open source n in the
// side panel, only for sources that exist.
function linkCitations(root, turn) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => n.parentElement?.closest("code, pre, a") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
  });
  const texts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) texts.push(n);
  for (const node of texts) {
    const text = node.nodeValue, parts = [];
    let last = 0;
    for (const m of text.matchAll(/\[(\d+)\]/g)) {
      const n = Number(m[1]);
      if (!turn.sources.some((s) => s.n === n)) continue;
      parts.push(document.createTextNode(text.slice(last, m.index)));
      const cite = el("button", "cite", m[0]); cite.type = "button";
      cite.title = "Show source " + n;
      cite.onclick = () => openSource(turn, n);
      parts.push(cite); last = m.index + m[0].length;
    }
    if (!parts.length) continue;
    parts.push(document.createTextNode(text.slice(last)));
    node.replaceWith(...parts);
  }
}

function render(turn, text) {
  const fragment = markdown(text);
  linkCitations(fragment, turn);
  turn.answer.replaceChildren(fragment);
}

// Tokens re-render the answer at most once a frame.
function scheduleRender() {
  const turn = current;
  if (turn.pending) return;
  turn.pending = requestAnimationFrame(() => { turn.pending = 0; if (turn === current) { render(turn, turn.text); scrollDown(); } });
}

function renderAnswer(text, citations) {
  if (current.pending) { cancelAnimationFrame(current.pending); current.pending = 0; }
  current.answer.classList.remove("streaming");
  render(current, text);
  for (const n of citations || []) document.getElementById(`s-${current.id}-${n}`)?.classList.add("cited");
}

// The side panel: the cited chunk with its document's title, path and page. Text only.
function openSource(turn, n) {
  const s = turn.sources.find((x) => x.n === n);
  if (!s) return;
  $("panel-title").textContent = `[${s.n}] ${s.title}`;
  $("panel-meta").textContent = `${where(s)} · score ${s.score.toFixed(3)}`;
  $("panel-text").textContent = s.text;
  panel.hidden = false;
  panel.focus();
}
function closePanel() { panel.hidden = true; question.focus(); }
$("panel-close").onclick = closePanel;

// Copy, thumbs up/down with an optional comment (a `feedback` frame).
function addActions(turn) {
  const bar = el("div", "actions");
  const copy = el("button", "secondary copy", "Copy"); copy.type = "button";
  copy.onclick = async () => {
    try { await navigator.clipboard.writeText(turn.text); copy.textContent = "Copied"; }
    catch { copy.textContent = "Copy failed"; }
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  };
  const up = el("button", "secondary up", "Good answer"), down = el("button", "secondary down", "Bad answer");
  up.title = "Rate this answer up"; down.title = "Rate this answer down (you can say why)";
  for (const b of [up, down]) { b.type = "button"; b.setAttribute("aria-pressed", "false"); }
  const comment = el("input", "comment"); comment.placeholder = "What was good or wrong? (optional, Enter to send)";
  comment.maxLength = 2000; comment.hidden = true;
  const note = el("span", "note");
  turn.note = note;
  const rate = (value) => {
    turn.rating = value;
    up.setAttribute("aria-pressed", String(value === "up")); down.setAttribute("aria-pressed", String(value === "down"));
    sendFeedback(turn);
    comment.hidden = false; comment.focus();
  };
  up.onclick = () => rate("up"); down.onclick = () => rate("down");
  comment.onkeydown = (event) => {
    if (event.key === "Enter") { event.preventDefault(); turn.comment = comment.value.trim(); sendFeedback(turn); comment.hidden = true; }
  };
  bar.append(copy, up, down, comment, note);
  turn.box.append(bar);
}

function sendFeedback(turn) {
  if (!ws || ws.readyState !== WebSocket.OPEN) { turn.note.textContent = "not connected; try again"; return; }
  const frame = { type: "feedback", turn_id: turn.id, rating: turn.rating, conversation_id: turn.conversationId };
  if (turn.comment) frame.comment = turn.comment;
  turn.note.className = "note"; turn.note.textContent = "sending…";
  ws.send(JSON.stringify(frame));
}

function finishTurn() {
  if (current) {
    if (current.pending) { cancelAnimationFrame(current.pending); current.pending = 0; }
    current.answer.classList.remove("streaming");
    current.conversationId = conversationId;
  }
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
  current = { id, question: q, text: "", box, answer, list, sources: [], pending: 0 };
  turns.set(id, current);
  const frame = { type: "ask", question: q, turn_id: id, history: recentHistory(q) };
  if (conversationId) frame.conversation_id = conversationId;
  ws.send(JSON.stringify(frame));
  question.value = ""; send.disabled = true; stop.disabled = false; scrollDown();
};
stop.onclick = () => { if (current && ws) ws.send(JSON.stringify({ type: "cancel", turn_id: current.id })); };
question.onkeydown = (event) => { if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); } };
// Esc closes the source panel, else stops the running turn.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (!panel.hidden) closePanel();
  else if (current && !current.abandoned) stop.click();
});
$("new").onclick = () => {
  // A running turn is cancelled and its remaining frames ignored; the next ask waits for its end.
  if (current && !current.abandoned) { current.abandoned = true; ws?.send(JSON.stringify({ type: "cancel", turn_id: current.id })); }
  history = []; conversationId = null; log.replaceChildren(); turns.clear(); closePanel();
};
connect();
