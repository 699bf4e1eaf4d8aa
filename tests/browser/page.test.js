// The test page in a real Chromium against a real ragchat (started by scripts/test.sh with the
// fixture corpus and a real llama-server): ask, watch the answer stream in with numbered
// sources, follow up with history, stop a turn.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.RAGCHAT_TEST_BASE_URL;
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = process.env.RAGCHAT_TEST_ARTIFACTS;
let browser, page, sent;

before(async () => {
  assert.ok(base, "RAGCHAT_TEST_BASE_URL is not set: run via `make test`");
  browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage();
  sent = [];
  page.on("websocket", (ws) => ws.on("framesent", (f) => {
    try { sent.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
  }));
  await page.goto(base);
  await page.locator("#status.ok").waitFor({ timeout: 15000 });
});

after(async () => { await browser?.close(); });

async function ask(question) {
  await page.fill("#question", question);
  await page.keyboard.press("Enter");
  return page.locator(".turn").last();
}

test("an answer streams in with numbered sources and timings", async () => {
  const turn = await ask("Who is the keeper of the Zephyr lighthouse?");
  assert.equal(await turn.locator(".q").textContent(), "Who is the keeper of the Zephyr lighthouse?");
  await turn.locator(".meta-line").waitFor({ timeout: 120000 });
  const sources = await turn.locator(".sources li").allTextContents();
  assert.ok(sources.length >= 1, "sources are listed");
  assert.match(sources[0], /^\[1\] The Zephyr Lighthouse .*zephyr\.md/);
  assert.ok((await turn.locator(".a").textContent()).trim().length > 0, "the answer is shown");
  assert.match(await turn.locator(".meta-line").textContent(), /^(stop|length) · embed [\d.]+ ms/);
  // Any [n] the model wrote for an existing source is a link to it.
  for (const link of await turn.locator("a.cite").all()) {
    assert.match(await link.getAttribute("href"), /^#s-.+-\d+$/);
  }
  if (shots) await page.screenshot({ path: `${shots}/page-answer.png`, fullPage: true });
});

test("a follow-up carries the conversation so far", async () => {
  const turn = await ask("What does she keep?");
  await turn.locator(".meta-line").waitFor({ timeout: 120000 });
  const asks = sent.filter((f) => f.type === "ask");
  assert.equal(asks.length, 2);
  assert.equal(asks[1].history.length, 2, "the first question and answer are sent as history");
  assert.deepEqual(asks[1].history.map((m) => m.role), ["user", "assistant"]);
  assert.equal(asks[1].conversation_id, await page.evaluate(() => conversationId),
    "the follow-up continues the same conversation");
});

test("Stop cancels the running turn and keeps the partial answer", async () => {
  await page.evaluate(() => { history = []; });
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
