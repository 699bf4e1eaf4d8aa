// Smoke test of a running ragchat over ws:// or wss://: readiness, then one real turn in
// integration-test mode (`stream:false`): `ready`, then one `done` with an answer and sources.
// With SMOKE_API_KEY set, the key goes first, as an `auth` frame (docs/security.md).
// Exits 0 on success, 1 with a reason otherwise. No dependencies (Node >= 22, or Node 20 with
// --experimental-websocket).
//
//   SMOKE_API_KEY=… node --experimental-websocket scripts/smoke.mjs wss://APP.azurewebsites.net/ws ["question"]
const [url, question = "What is ragchat and how do I run it?"] = process.argv.slice(2);
if (!url || !/^wss?:\/\//.test(url)) {
  console.error("usage: smoke.mjs ws[s]://HOST/ws [question]");
  process.exit(2);
}
if (typeof WebSocket !== "function") {
  console.error("this Node has no WebSocket: use Node >= 22 or pass --experimental-websocket");
  process.exit(2);
}
const fail = (why) => {
  console.error(`smoke: FAILED: ${why}`);
  process.exit(1);
};
const base = url.replace(/^ws/, "http").replace(/\/ws$/, "");
const deadline = Date.now() + Number(process.env.SMOKE_READY_TIMEOUT_MS ?? 300_000);

// Readiness first: a slot that was just deployed may still be pulling its image.
for (;;) {
  try {
    const r = await fetch(`${base}/health/ready`, { signal: AbortSignal.timeout(10_000) });
    if (r.ok) break;
    console.error(`smoke: ${base}/health/ready answered ${r.status}; waiting`);
  } catch (e) {
    console.error(`smoke: ${base}/health/ready: ${e.message}; waiting`);
  }
  if (Date.now() > deadline) fail("not ready in time");
  await new Promise((r) => setTimeout(r, 5_000));
}

const ws = new WebSocket(url);
const timer = setTimeout(() => fail("no done within 120 s"), 120_000);
const turnId = `smoke-${Date.now()}`;
let ready = false;
ws.onerror = (e) => fail(`socket error: ${e.message ?? e.type}`);
ws.onopen = () => {
  if (process.env.SMOKE_API_KEY) ws.send(JSON.stringify({ type: "auth", token: process.env.SMOKE_API_KEY }));
};
ws.onclose = (e) => { if (ready !== "done") fail(`socket closed (${e.code} ${e.reason})`); };
ws.onmessage = (event) => {
  const frame = JSON.parse(event.data);
  if (frame.type === "ready") {
    if (frame.protocol !== "ragchat.v1") fail(`unexpected protocol ${frame.protocol}`);
    if (process.env.SMOKE_API_KEY && frame.principal === "anonymous") fail("the key was not asked for");
    ready = true;
    ws.send(JSON.stringify({ type: "ask", question, turn_id: turnId, stream: false, user: "smoke-test" }));
  } else if (frame.type === "done") {
    if (frame.turn_id !== turnId) fail(`done for another turn: ${frame.turn_id}`);
    if (!frame.answer) fail("empty answer");
    if (!Array.isArray(frame.sources) || frame.sources.length === 0) fail("no sources: is the index empty?");
    ready = "done";
    clearTimeout(timer);
    console.log(JSON.stringify({
      ok: true, answer: frame.answer.slice(0, 120), sources: frame.sources.map((s) => s.source),
      timings_ms: frame.timings_ms,
    }));
    ws.close(1000);
  } else if (frame.type === "error") {
    fail(`error frame ${frame.code}: ${frame.message}`);
  } else if (frame.type === "token" || frame.type === "sources") {
    fail(`got a ${frame.type} frame for a stream:false turn`);
  }
};
