// The test page in a real Chromium against a real ragchat (started by scripts/test.sh with the
// fixture corpus and a real llama-server): ask, watch the answer stream in with numbered
// sources, follow up with history, stop a turn. Each test opens its own page: none depends on
// another having run.
import { test, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.RAGCHAT_TEST_BASE_URL;
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = process.env.RAGCHAT_TEST_ARTIFACTS;
let browser, page, sent, sockets;

before(async () => {
  assert.ok(base, "RAGCHAT_TEST_BASE_URL is not set: run via `make test`");
  browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => { await browser?.close(); });

beforeEach(async () => {
  page = await browser.newPage();
  sent = [];
  sockets = [];
  page.on("websocket", (ws) => {
    sockets.push(ws.url());
    ws.on("framesent", (f) => {
      try { sent.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
    });
  });
  await page.goto(base);
  await page.locator("#status.ok").waitFor({ timeout: 15000 });
});

afterEach(async () => { await page?.close(); });

async function ask(question) {
  await page.fill("#question", question);
  await page.keyboard.press("Enter");
  return page.locator(".turn").last();
}

async function answered(turn) {
  await turn.locator(".meta-line").waitFor({ timeout: 120000 });
  return turn;
}

test("an answer streams in with numbered sources and timings", async () => {
  const turn = await ask("Who is the keeper of the Zephyr lighthouse?");
  assert.equal(await turn.locator(".q").textContent(), "Who is the keeper of the Zephyr lighthouse?");
  await answered(turn);
  const sources = await turn.locator(".sources li").allTextContents();
  assert.ok(sources.length >= 1, "sources are listed");
  assert.match(sources[0], /^\[1\] The Zephyr Lighthouse .*zephyr\.md/);
  assert.ok((await turn.locator(".a").textContent()).trim().length > 0, "the answer is shown");
  assert.match(await turn.locator(".meta-line").textContent(), /^(stop|length) · embed [\d.]+ ms/);
  if (shots) await page.screenshot({ path: `${shots}/page-answer.png`, fullPage: true });
  // Served over https (through Caddy in `make test`), the page opens its socket over wss.
  const scheme = new URL(base).protocol === "https:" ? "wss:" : "ws:";
  assert.ok(sockets.length > 0 && sockets.every((u) => new URL(u).protocol === scheme), `${scheme} sockets: ${sockets}`);
});

test("[n] in an answer links to source n, and only to sources that exist", async () => {
  const turn = await answered(await ask("Who is the keeper of the Zephyr lighthouse?"));
  // Whatever the small model wrote, the page's own renderer decides what becomes a link: give
  // it an answer that cites a listed source and one that does not exist.
  const links = await page.evaluate(() => {
    const box = document.querySelector(".turn:last-child");
    current = { id: "t-cite", box, answer: box.querySelector(".a"), list: box.querySelector(".sources"), sources: [] };
    renderSources([{ n: 1, chunk_id: "c1", source: "docs/a.md", title: "A", text: "alpha", score: 0.5 }]);
    renderAnswer("Alpha [1]. Beta [9].", [1]);
    const out = [...current.answer.querySelectorAll("a.cite")].map((a) => [a.textContent, a.getAttribute("href")]);
    finishTurn();
    return out;
  });
  assert.deepEqual(links, [["[1]", "#s-t-cite-1"]]);
  assert.match(await turn.locator(".a").textContent(), /Beta \[9\]\./, "a missing source stays text");
  assert.equal(await turn.locator(".sources li.cited").count(), 1);
});

test("a follow-up carries the conversation so far", async () => {
  await answered(await ask("Who is the keeper of the Zephyr lighthouse?"));
  await answered(await ask("What does she keep?"));
  const asks = sent.filter((f) => f.type === "ask");
  assert.equal(asks.length, 2);
  assert.equal(asks[0].history.length, 0, "the first question has no history");
  assert.equal(asks[1].history.length, 2, "the first question and answer are sent as history");
  assert.deepEqual(asks[1].history.map((m) => m.role), ["user", "assistant"]);
  assert.equal(asks[1].history[0].content, "Who is the keeper of the Zephyr lighthouse?");
  assert.equal(asks[1].conversation_id, await page.evaluate(() => conversationId),
    "the follow-up continues the same conversation");
});

test("Stop cancels the running turn and keeps the partial answer", async () => {
  const turn = await ask("Write a very long poem about the Zephyr lighthouse, its keeper and her cats.");
  await page.waitForFunction(() => document.querySelector(".turn:last-child .a").textContent.length > 0,
    null, { timeout: 120000 });
  await page.click("#stop");
  const meta = turn.locator(".meta-line");
  await meta.waitFor({ timeout: 30000 });
  assert.match(await meta.textContent(), /^cancelled ·/);
  assert.ok(sent.some((f) => f.type === "cancel"));
  assert.equal(await page.isDisabled("#stop"), true);
  assert.equal(await page.isDisabled("#send"), false, "ready for the next question");
  if (shots) await page.screenshot({ path: `${shots}/page-cancelled.png`, fullPage: true });
});
