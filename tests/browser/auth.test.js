// The test page against a ragchat that wants API keys (RAGCHAT_AUTH=api_key): the page asks for
// a key when the server closes with 4401, keeps it in the tab's sessionStorage only, sends it as
// the socket's first frame (never in the URL), and then chats as that principal.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.RAGCHAT_TEST_AUTH_BASE_URL;
const key = process.env.RAGCHAT_TEST_API_KEY;
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = process.env.RAGCHAT_TEST_ARTIFACTS;
let browser;

before(async () => {
  assert.ok(base && key, "RAGCHAT_TEST_AUTH_BASE_URL / RAGCHAT_TEST_API_KEY are not set: run via `make test`");
  browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => { await browser?.close(); });

test("the page asks for a key, signs in with it, and chats as its principal", async () => {
  const page = await browser.newPage();
  const sockets = [];
  const sent = [];
  page.on("websocket", (ws) => {
    sockets.push(ws.url());
    ws.on("framesent", (f) => { try { sent.push(JSON.parse(f.payload)); } catch { /* not JSON */ } });
  });
  await page.goto(base);
  // No key yet: the server closes with 4401 and the page asks for one.
  await page.locator("#auth.shown").waitFor({ timeout: 15000 });
  assert.match(await page.locator("#status").textContent(), /sign in/);
  if (shots) await page.screenshot({ path: `${shots}/page-sign-in.png` });

  await page.fill("#token", "k-wrong-0123456789abcdefghij");
  await page.click("#auth button");
  await page.locator("#auth.shown").waitFor({ timeout: 15000 });
  assert.equal(await page.evaluate(() => sessionStorage.getItem("ragchat.token")), null,
    "a refused key is forgotten");

  await page.fill("#token", key);
  await page.click("#auth button");
  await page.locator("#status.ok").waitFor({ timeout: 15000 });
  assert.equal(await page.locator("#who").textContent(), "as key:tester");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("ragchat.token")), key);
  assert.ok(sockets.every((url) => !url.includes(key)), "the key is never in a URL");
  assert.deepEqual(sent.filter((f) => f.type === "auth").at(-1), { type: "auth", token: key });

  await page.fill("#question", "Who is the keeper of the Zephyr lighthouse?");
  await page.keyboard.press("Enter");
  const turn = page.locator(".turn").last();
  await turn.locator(".meta-line").waitFor({ timeout: 120000 });
  assert.ok((await turn.locator(".a").textContent()).trim().length > 0, "answered");

  // A reload in the same tab signs in again by itself.
  await page.reload();
  await page.locator("#status.ok").waitFor({ timeout: 15000 });
  assert.equal(await page.locator("#who").textContent(), "as key:tester");
  await page.close();
});
