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
  if (shots) {
    await page.screenshot({ path: `${shots}/page-answer.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.evaluate(() => openSource([...turns.values()].pop(), 1));
    await page.screenshot({ path: `${shots}/page-desktop.png` });
  }
  // Served over https (through Caddy in `make test`), the page opens its socket over wss.
  const scheme = new URL(base).protocol === "https:" ? "wss:" : "ws:";
  assert.ok(sockets.length > 0 && sockets.every((u) => new URL(u).protocol === scheme), `${scheme} sockets: ${sockets}`);
});

test("[n] in an answer opens source n in the side panel, and only sources that exist", async () => {
  const turn = await answered(await ask("Who is the keeper of the Zephyr lighthouse?"));
  // Whatever the small model wrote, the page's own renderer decides what becomes a citation:
  // give it an answer that cites a listed source and one that does not exist.
  await page.evaluate(() => {
    const box = document.querySelector(".turn:last-child");
    current = { id: "t-cite", box, answer: box.querySelector(".a"), list: box.querySelector(".sources"), sources: [] };
    turns.set("t-cite", current);
    renderSources([{ n: 1, chunk_id: "c1", source: "docs/handbook.pdf", page: 12, title: "Handbook", text: "alpha chunk", score: 0.5 }]);
    renderAnswer("Alpha [1]. Beta [9].", [1]);
    finishTurn();
  });
  const cites = turn.locator(".a button.cite");
  assert.deepEqual(await cites.allTextContents(), ["[1]"]);
  assert.match(await turn.locator(".a").textContent(), /Beta \[9\]\./, "a missing source stays text");
  assert.equal(await turn.locator(".sources li.cited").count(), 1);
  assert.equal(await page.isVisible("#panel"), false);
  await cites.first().click();
  assert.equal(await page.isVisible("#panel"), true);
  assert.equal(await page.textContent("#panel-title"), "[1] Handbook");
  assert.match(await page.textContent("#panel-meta"), /^docs\/handbook\.pdf p\. 12 · score 0\.500$/);
  assert.equal(await page.textContent("#panel-text"), "alpha chunk");
  await page.keyboard.press("Escape");
  assert.equal(await page.isVisible("#panel"), false, "Esc closes the panel");
});

test("answers render as markdown: emphasis, lists, tables, code (citations not in code)", async () => {
  const turn = await answered(await ask("Who is the keeper of the Zephyr lighthouse?"));
  await page.evaluate(() => {
    const box = document.querySelector(".turn:last-child");
    current = { id: "t-md", box, answer: box.querySelector(".a"), list: box.querySelector(".sources"), sources: [] };
    renderSources([{ n: 1, chunk_id: "c1", source: "a.md", title: "A", text: "a", score: 0.5 }]);
    renderAnswer("**Mara Quill** keeps it [1]:\n\n- lamps\n- cats\n\n| year | keeper |\n|---|---|\n| 1911 | Mara |\n\n```\nlist[1]\n```", [1]);
    finishTurn();
  });
  const a = turn.locator(".a");
  assert.equal(await a.locator("strong").textContent(), "Mara Quill");
  assert.deepEqual(await a.locator("li").allTextContents(), ["lamps", "cats"]);
  assert.equal(await a.locator("table td").first().textContent(), "1911");
  assert.equal(await a.locator("pre code").textContent(), "list[1]\n");
  assert.equal(await a.locator("button.cite").count(), 1, "[1] in code stays code");
});

test("raw HTML in an answer or a document never runs: no handlers, no javascript: links", async () => {
  // The hostile document (tests/fixtures/hostile/gallery.md) is in the index: retrieve it.
  const turn = await answered(await ask("When does the Vexmoor gallery open, and where is its visitor page?"));
  const sources = await turn.locator(".sources li").allTextContents();
  assert.ok(sources.some((s) => s.includes("gallery.md")), `the hostile document is a source: ${sources}`);
  // An answer that echoes it, rendered by the page's own renderer, and its chunk in the panel.
  await page.evaluate(() => {
    const box = document.querySelector(".turn:last-child");
    const turn = turns.get([...turns.keys()].pop());
    current = turn; current.box = box;
    const hostile = "Open at nine [1]. <img src=x onerror=\"window.__xss='img'\"> <script>window.__xss='script'</script>" +
      " [visit](javascript:window.__xss='link') <a href=\"javascript:window.__xss='a'\">page</a> " +
      "<iframe src=\"javascript:window.__xss='iframe'\"></iframe> [ok](https://example.org/gallery)";
    renderAnswer(hostile, [1]);
    finishTurn();
  });
  const a = turn.locator(".a");
  assert.equal(await a.locator("img, script, iframe, [onerror], [onclick]").count(), 0, await a.innerHTML());
  const hrefs = await a.locator("a").evaluateAll((links) => links.map((l) => l.getAttribute("href")));
  assert.ok(hrefs.every((h) => h === null || /^https:/.test(h)), `only https links survive: ${hrefs}`);
  assert.ok(hrefs.includes("https://example.org/gallery"));
  assert.equal(await a.locator("a[href^='https']").getAttribute("rel"), "noopener noreferrer");
  // The document's own chunk, shown in the panel, is text.
  const n = await page.evaluate(() => {
    const t = turns.get([...turns.keys()].pop());
    return t.sources.find((s) => s.source.endsWith("gallery.md"))?.n;
  });
  await page.evaluate((n) => openSource(turns.get([...turns.keys()].pop()), n), n);
  assert.match(await page.textContent("#panel-text"), /<img src=x onerror=/, "shown as text");
  assert.equal(await page.locator("#panel img, #panel script, #panel a").count(), 0);
  await page.waitForTimeout(300);
  assert.equal(await page.evaluate(() => window.__xss), undefined, "nothing ran");
});

test("thumbs down with a comment is sent as feedback and confirmed; copy copies the answer", async () => {
  const context = await browser.newContext({ permissions: ["clipboard-read", "clipboard-write"] });
  const p = await context.newPage();
  const frames = [];
  p.on("websocket", (ws) => ws.on("framesent", (f) => { try { frames.push(JSON.parse(f.payload)); } catch { /* not JSON */ } }));
  await p.goto(base);
  await p.locator("#status.ok").waitFor({ timeout: 15000 });
  await p.fill("#question", "Who is the keeper of the Zephyr lighthouse?");
  await p.keyboard.press("Enter");
  const turn = p.locator(".turn").last();
  await turn.locator(".actions").waitFor({ timeout: 120000 });
  await turn.locator("button.copy").click();
  const answer = await p.evaluate(() => [...turns.values()].pop().text);
  assert.equal(await p.evaluate(() => navigator.clipboard.readText()), answer);
  await turn.locator("button.down").click();
  await turn.locator(".note", { hasText: "Thanks" }).waitFor({ timeout: 10000 });
  assert.equal(await turn.locator("button.down").getAttribute("aria-pressed"), "true");
  await turn.locator("input.comment").fill("The keeper's name is wrong.");
  await turn.locator("input.comment").press("Enter");
  await p.waitForFunction(() => document.querySelector(".turn:last-child .note").textContent.startsWith("Thanks"));
  const feedback = frames.filter((f) => f.type === "feedback");
  assert.equal(feedback.length, 2);
  assert.equal(feedback[1].rating, "down");
  assert.equal(feedback[1].comment, "The keeper's name is wrong.");
  assert.equal(feedback[1].turn_id, frames.find((f) => f.type === "ask").turn_id);
  await context.close();
});

test("on a phone-width screen nothing overflows and the panel covers the page", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  const turn = await answered(await ask("Who is the keeper of the Zephyr lighthouse?"));
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), "no horizontal scrolling");
  if (shots) await page.screenshot({ path: `${shots}/page-phone.png` });
  await page.evaluate(() => openSource([...turns.values()].pop(), 1));
  const box = await page.locator("#panel").boundingBox();
  assert.ok(box && box.x === 0 && box.width >= 370, `panel full width: ${JSON.stringify(box)}`);
  if (shots) await page.screenshot({ path: `${shots}/page-phone-source.png` });
  assert.ok(turn);
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

test("Esc stops the running turn like the Stop button", async () => {
  const turn = await ask("Write a very long poem about the Zephyr lighthouse and the sea.");
  await page.waitForFunction(() => document.querySelector(".turn:last-child .a").textContent.length > 0,
    null, { timeout: 120000 });
  await page.keyboard.press("Escape");
  await turn.locator(".meta-line").waitFor({ timeout: 30000 });
  assert.match(await turn.locator(".meta-line").textContent(), /^cancelled ·/);
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
