// The chat page (examples/chat) in headless Chromium, one page per worker of a
// 2-worker cluster: messages, the Disconnect/Connect toggle (missed messages
// once), reload (history), typing, the online list, private messages; then
// once more with --per-message-deflate (Chromium always offers it): messages
// flow, and one over the 1024-byte threshold arrives intact.
// Screenshots go to target/screenshots/.
//
//   cargo build --example chat && (cd tests/browser && npm ci) && node --test tests/browser/chat.browser.mjs
//
// Needs Debian's Chromium at /usr/bin/chromium (CHROMIUM overrides; `scripts/setup`
// installs it) and playwright-core from tests/browser/package-lock.json. Binary:
// RSIO_CHAT_BIN, else target/debug/examples/chat.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { SHOTS, launchChromium, skipReason } from "./harness.mjs";
import { startChat } from "../js/chat-cluster.mjs";

const WAIT = 8000;

// ---- page helpers (run in the browser) ------------------------------------------

/** How many message lines contain `text`. */
function countLines(page, text) {
  return page.evaluate(
    (t) => [...document.querySelectorAll("#messages > li")].filter((li) => li.textContent.includes(t)).length,
    text,
  );
}

function waitForLine(page, text, cls) {
  return page.waitForFunction(
    ([t, c]) =>
      [...document.querySelectorAll("#messages > li")].some(
        (li) => li.textContent.includes(t) && (!c || li.classList.contains(c)),
      ),
    [text, cls],
    { timeout: WAIT },
  );
}

function waitForUsers(page, nicks) {
  return page.waitForFunction(
    (ns) => {
      const shown = [...document.querySelectorAll("#users > li")].map((li) => li.firstChild.textContent);
      return ns.every((n) => shown.includes(n));
    },
    nicks,
    { timeout: WAIT },
  );
}

function waitForText(page, selector, text) {
  return page.waitForFunction(
    ([s, t]) => document.querySelector(s)?.textContent.includes(t),
    [selector, text],
    { timeout: WAIT },
  );
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("chat page in Chromium (2 workers)", { skip: skipReason(), timeout: 90_000 }, () => {
  let chat;
  let tmp;
  let browser;
  const errors = [];
  const pages = [];

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "rsio-chat-browser-"));
    mkdirSync(SHOTS, { recursive: true });
    chat = await startChat(path.join(tmp, "chat.db"));
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (chat) {
      const res = await chat.stop();
      assert.equal(res.code, 0, `chat exit status; stderr:\n${chat.stderr().slice(-2000)}`);
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A page in its own browser context (own localStorage) on worker `index`, named `nick`. */
  async function open(index, nick) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`${nick}: ${e.message}`));
    page.on("response", (r) => {
      if (r.status() >= 400) errors.push(`${nick}: ${r.status()} for ${r.url()}`);
    });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`${nick} console: ${m.text()}`);
    });
    await page.goto(chat.urls[index], { timeout: WAIT });
    await waitForText(page, "#status", `worker ${index}`);
    await page.fill("#nick", nick);
    await page.press("#nick", "Enter");
    await waitForText(page, "#status", `connected as ${nick} · worker ${index}`);
    pages.push(page);
    return page;
  }

  it("two workers: messages, typing, online list, offline toggle, reload, private messages", async () => {
    const alice = await open(0, "alice");
    const bob = await open(1, "bob");

    // the online list spans both workers
    await waitForUsers(alice, ["alice", "bob"]);
    await waitForUsers(bob, ["alice", "bob"]);
    const bobSees = await bob.$$eval("#users > li", (lis) => lis.map((li) => li.textContent));
    assert.ok(bobSees.some((t) => t.startsWith("alice") && t.includes("w0")), JSON.stringify(bobSees));
    assert.ok(bobSees.some((t) => t.startsWith("bob") && t.includes("w1") && t.includes("(you)")));

    // typing on worker 0 shows on worker 1
    await alice.click("#input");
    await alice.keyboard.type("hello from alice", { delay: 10 });
    await waitForText(bob, "#typing", "alice is typing…");
    await bob.screenshot({ path: path.join(SHOTS, "chat-typing-worker1.png") });

    // a message typed on one page appears on the other
    await alice.press("#input", "Enter");
    await waitForLine(bob, "hello from alice");
    await waitForLine(alice, "hello from alice");
    await bob.waitForFunction(() => document.querySelector("#typing").textContent === "", null, { timeout: WAIT });
    await bob.fill("#input", "hi alice, bob here");
    await bob.press("#input", "Enter");
    await waitForLine(alice, "hi alice, bob here");
    assert.equal(await countLines(bob, "hello from alice"), 1);

    // bob goes offline with the toggle; what alice says meanwhile arrives once on reconnect
    await bob.click("#toggle-btn");
    await waitForText(bob, "#status", "disconnected");
    assert.equal(await bob.textContent("#toggle-btn"), "Connect");
    await waitForLine(alice, "bob disconnected", "notice");
    for (const text of ["while you were away 1", "while you were away 2"]) {
      await alice.fill("#input", text);
      await alice.press("#input", "Enter");
      await waitForLine(alice, text);
    }
    await sleep(200);
    assert.equal(await countLines(bob, "while you were away"), 0, "offline: nothing arrives");
    await bob.screenshot({ path: path.join(SHOTS, "chat-offline-worker1.png") });
    await bob.click("#toggle-btn");
    await waitForText(bob, "#status", "connected as bob");
    await waitForLine(bob, "while you were away 2");
    await sleep(500);
    assert.equal(await countLines(bob, "while you were away 1"), 1, "missed message shown once");
    assert.equal(await countLines(bob, "while you were away 2"), 1, "missed message shown once");
    assert.equal(await countLines(bob, "hello from alice"), 1, "nothing shown twice");

    // a reload shows the whole history, each message once
    await bob.reload({ timeout: WAIT });
    await waitForText(bob, "#status", "connected as bob · worker 1"); // nick kept in localStorage
    await waitForLine(bob, "while you were away 2");
    for (const text of ["hello from alice", "hi alice, bob here", "while you were away 1", "while you were away 2"]) {
      assert.equal(await countLines(bob, text), 1, `history: ${text}`);
    }
    const order = await bob.$$eval("#messages > li.message", (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(order, [
      "alicehello from alice",
      "bobhi alice, bob here",
      "alicewhile you were away 1",
      "alicewhile you were away 2",
    ]);
    await waitForUsers(alice, ["alice", "bob"]);

    // a private message: click alice in bob's list, type, send; only alice gets it
    const carol = await open(1, "carol");
    await waitForUsers(bob, ["alice", "bob", "carol"]);
    await bob.click("#users > li:not(.me) >> text=alice");
    assert.equal(await bob.inputValue("#input"), "/msg alice ");
    await bob.keyboard.type("just between us");
    await bob.press("#input", "Enter");
    await waitForLine(alice, "just between us", "private");
    await waitForLine(bob, "just between us", "private");
    await sleep(300);
    assert.equal(await countLines(carol, "just between us"), 0, "nobody else sees it");
    // and with /msg typed by hand, across workers the other way
    await alice.fill("#input", "/msg carol hello carol");
    await alice.press("#input", "Enter");
    await waitForLine(carol, "hello carol", "private");
    assert.equal(await countLines(bob, "hello carol"), 0);

    await alice.screenshot({ path: path.join(SHOTS, "chat-worker0.png") });
    await bob.screenshot({ path: path.join(SHOTS, "chat-worker1.png") });
    await carol.screenshot({ path: path.join(SHOTS, "chat-carol-worker1.png") });
    assert.deepEqual(errors, [], "no page errors");
  });
});

describe("chat page in Chromium with --per-message-deflate (2 workers)", { skip: skipReason(), timeout: 60_000 }, () => {
  let chat;
  let tmp;
  let browser;
  const errors = [];

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "rsio-chat-deflate-"));
    mkdirSync(SHOTS, { recursive: true });
    chat = await startChat(path.join(tmp, "chat.db"), 2, ["--per-message-deflate"]);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (chat) {
      const res = await chat.stop();
      assert.equal(res.code, 0, `chat exit status; stderr:\n${chat.stderr().slice(-2000)}`);
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A page on worker `index` named `nick`, and the extensions its WebSocket handshakes were answered. */
  async function open(index, nick) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`${nick}: ${e.message}`));
    const extensions = [];
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    cdp.on("Network.webSocketHandshakeResponseReceived", ({ response }) => {
      const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
      extensions.push(headers["sec-websocket-extensions"] ?? "");
    });
    await page.goto(chat.urls[index], { timeout: WAIT });
    await waitForText(page, "#status", `worker ${index}`);
    await page.fill("#nick", nick);
    await page.press("#nick", "Enter");
    await waitForText(page, "#status", `connected as ${nick} · worker ${index}`);
    return { page, extensions };
  }

  it("deflate negotiated by Chromium; messages flow; a large one arrives intact", async () => {
    const alice = await open(0, "alice");
    const bob = await open(1, "bob");
    await waitForUsers(alice.page, ["alice", "bob"]);
    for (const { extensions } of [alice, bob]) {
      assert.ok(extensions.length > 0, "a WebSocket was opened");
      assert.ok(
        extensions.every((e) => /permessage-deflate/.test(e) && /server_no_context_takeover/.test(e)),
        JSON.stringify(extensions),
      );
    }
    await alice.page.fill("#input", "small hello");
    await alice.page.press("#input", "Enter");
    await waitForLine(bob.page, "small hello");
    // Over the threshold both ways: Chromium compresses what it sends, the
    // server compresses the broadcast.
    const large = Array.from({ length: 300 }, (_, i) => `line ${i} of a long message`).join(" ");
    assert.ok(large.length > 4096);
    await bob.page.fill("#input", large);
    await bob.page.press("#input", "Enter");
    await waitForLine(alice.page, "line 299 of a long message");
    const shown = await alice.page.$$eval("#messages > li.message", (lis) => lis.map((li) => li.textContent));
    assert.ok(shown.includes(`bob${large}`), "the large message is shown whole");
    await alice.page.screenshot({ path: path.join(SHOTS, "chat-deflate-worker0.png") });
    assert.deepEqual(errors, [], "no page errors");
  });
});
