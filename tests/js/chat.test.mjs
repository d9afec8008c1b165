// The chat example (`examples/chat`) on a 2-worker cluster, driven with the
// official socket.io-client: cross-worker delivery, exactly-once storage per
// client offset, history after auth.serverOffset, connection state recovery,
// the online list, typing, private messages, bad input, and the client bundle.
//
// Binary: RSIO_CHAT_BIN, else <repo>/target/debug/examples/chat
// (`cargo build --example chat`). Each run uses a fresh SQLite file in the OS
// temp folder and random ports.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  REPO_ROOT,
  client,
  connect,
  call,
  once,
  collect,
  sleep,
  waitFor,
  closeAll,
  stripOffset,
  TEST_TIMEOUT,
} from "./harness.mjs";
import { startChat } from "./chat-cluster.mjs";

const T = { timeout: TEST_TIMEOUT };
const WS = { transports: ["websocket"] };
const CLIENT_VERSION = JSON.parse(
  readFileSync(path.join(REPO_ROOT, "tests/js/node_modules/socket.io-client/package.json"), "utf8"),
).version;
const uniq = () => Math.random().toString(36).slice(2, 10);

/** The args of the next `event` on `emitter` whose args satisfy `pred`. */
function onceWhere(emitter, event, pred, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for a matching "${event}"`));
    }, ms);
    const handler = (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    };
    emitter.on(event, handler);
  });
}

function skipReason() {
  if (process.env.INTEROP_REFERENCE === "1") return "the Node reference server is not the chat";
  return false;
}

describe("chat example (2 workers)", { skip: skipReason() }, () => {
  let chat;
  let tmp;

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "rsio-chat-"));
    chat = await startChat(path.join(tmp, "chat.db"));
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    if (chat) {
      const res = await chat.stop();
      assert.equal(res.code, 0, `chat exit status; stderr:\n${chat.stderr().slice(-2000)}`);
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A client on worker `index` (checked with `whoami`); `auth` extends `{serverOffset: <past everything>}`. */
  async function user(index, { nick, serverOffset = Number.MAX_SAFE_INTEGER, ...opts } = {}) {
    const s = await connect(chat.urls[index], { ...WS, auth: { serverOffset, ...(nick ? { nick } : {}) }, ...opts });
    const who = await call(s, "whoami");
    assert.equal(who.worker, index, `served by worker ${index}`);
    return s;
  }

  /**
   * A client asking for the history after `serverOffset`, with its `chat message`
   * listener on before it connects (history follows the CONNECT at once).
   */
  async function historyOf(index, serverOffset) {
    const s = client(chat.urls[index], { ...WS, auth: { serverOffset } });
    const got = messagesOf(s);
    s.connect();
    await once(s, "connect");
    return got;
  }

  /** Sends a chat message with an ack; resolves with the ack's `{ok, id}`. */
  async function say(s, msg, offset = `${s.id}-${uniq()}`) {
    const res = await call(s, "chat message", msg, offset);
    assert.equal(res.ok, true, JSON.stringify(res));
    return res;
  }

  /** The `chat message` events `s` gets, as {msg, id, nick}. */
  function messagesOf(s) {
    const seen = [];
    s.on("chat message", (...args) => {
      const [msg, id, nick] = stripOffset(args);
      seen.push({ msg, id, nick });
    });
    return seen;
  }

  it("prints the README's line with the first worker's URL", T, () => {
    assert.match(chat.stdout(), new RegExp(`^chat: open ${chat.urls[0]}$`, "m"));
  });

  it("a message from one worker reaches a client of the other with its id", T, async () => {
    const a = await user(0, { nick: "ann" });
    const b = await user(1);
    const got = messagesOf(b);
    const text = `hello ${uniq()}`;
    const { id } = await say(a, text);
    assert.equal(typeof id, "number");
    await waitFor(() => got.some((m) => m.msg === text));
    assert.deepEqual(got.filter((m) => m.msg === text), [{ msg: text, id, nick: "ann" }]);
  });

  it("a client's messages sent without waiting are stored and broadcast in order", T, async () => {
    const a = await user(0);
    const b = await user(1);
    const got = messagesOf(b);
    const tag = uniq();
    const acks = [];
    for (let i = 0; i < 15; i++) acks.push(call(a, "chat message", `${i} ${tag}`, `${tag}-${i}`));
    const ids = (await Promise.all(acks)).map((r) => r.id);
    assert.deepEqual(ids, [...ids].sort((x, y) => x - y), "ids follow the sending order");
    await waitFor(() => got.filter((m) => m.msg.endsWith(tag)).length === 15);
    const mine = got.filter((m) => m.msg.endsWith(tag));
    assert.deepEqual(mine.map((m) => m.id), ids, "broadcast in id order");
  });

  it("the same client offset 20 times, acks dropped, from both workers: one row, one broadcast", T, async () => {
    const a = await user(0);
    const a2 = await user(1);
    const observer = await user(1);
    const got = messagesOf(observer);
    const text = `once ${uniq()}`;
    const offset = `dup-${uniq()}`;
    // raw emits: no ack asked, so nothing waits and nothing is retried
    for (let i = 0; i < 20; i++) (i % 2 ? a2 : a).emit("chat message", text, offset);
    // and once more with an ack: a retry is acknowledged as a duplicate
    await waitFor(() => got.some((m) => m.msg === text));
    const again = await call(a, "chat message", text, offset);
    assert.deepEqual(again, { ok: true, duplicate: true });
    await sleep(300);
    assert.equal(got.filter((m) => m.msg === text).length, 1, "exactly one broadcast");
    const marker = await say(a, `marker ${uniq()}`);

    // a fresh client asking for everything: the text is stored once
    const history = await historyOf(0, 0);
    await waitFor(() => history.some((m) => m.id === marker.id));
    assert.equal(history.filter((m) => m.msg === text).length, 1, "exactly one row");
  });

  it("history: a new client gets every message after its serverOffset, in order", T, async () => {
    const a = await user(0, { nick: "hist" });
    const tag = uniq();
    const first = await say(a, `h1 ${tag}`);
    const second = await say(a, `h2 ${tag}`);
    const third = await say(a, `h3 ${tag}`);
    const got = await historyOf(1, first.id);
    await waitFor(() => got.some((m) => m.id === third.id));
    assert.ok(got.every((m) => m.id > first.id), "nothing at or before serverOffset");
    const ids = got.map((m) => m.id);
    assert.deepEqual(ids, [...ids].sort((x, y) => x - y), "in id order");
    assert.deepEqual(
      got.filter((m) => m.msg.endsWith(tag)),
      [
        { msg: `h2 ${tag}`, id: second.id, nick: "hist" },
        { msg: `h3 ${tag}`, id: third.id, nick: "hist" },
      ],
    );
    // serverOffset as the tutorial's client sends it first: 0 → everything
    const allGot = await historyOf(0, 0);
    await waitFor(() => allGot.some((m) => m.id === third.id));
    assert.ok(allGot.some((m) => m.id === first.id));
  });

  it("recovery after a transport drop: missed messages once, no history replay", T, async () => {
    const a = await user(0);
    const b = await user(1, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    const got = messagesOf(b);
    const tag = uniq();
    await say(a, `before ${tag}`);
    await waitFor(() => got.length === 1); // b now has an offset
    const gone = once(b, "disconnect");
    const back = once(b, "connect", 5000);
    b.io.engine.close();
    await gone;
    await say(a, `missed-1 ${tag}`);
    await say(a, `missed-2 ${tag}`);
    await back;
    assert.equal(b.recovered, true);
    await waitFor(() => got.length >= 3);
    await sleep(200);
    assert.deepEqual(got.map((m) => m.msg), [`before ${tag}`, `missed-1 ${tag}`, `missed-2 ${tag}`]);
  });

  it("killing the worker a client is on: it reconnects, nothing stored is lost or duplicated", { timeout: 25000 }, async () => {
    const a = await user(0);
    // b behaves like the page: its serverOffset follows what it received
    const b = client(chat.urls[1], {
      ...WS,
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 200,
      auth: { serverOffset: Number.MAX_SAFE_INTEGER },
    });
    const got = [];
    b.on("chat message", (...args) => {
      const [msg, id] = stripOffset(args);
      got.push({ msg, id });
      b.auth.serverOffset = id;
    });
    b.connect();
    await once(b, "connect");
    const tag = uniq();
    const first = await say(a, `k0 ${tag}`);
    await waitFor(() => got.some((m) => m.id === first.id));
    const pids = [...chat.stderr().matchAll(/worker 1 \(pid (\d+)\) listening/g)];
    const pid = Number(pids.at(-1)[1]);
    const back = once(b, "connect", 15000);
    process.kill(pid, "SIGKILL");
    const ids = [first.id];
    for (let i = 1; i <= 10; i++) {
      ids.push((await say(a, `k${i} ${tag}`)).id);
      await sleep(20);
    }
    await back;
    await waitFor(() => ids.every((id) => got.some((m) => m.id === id)), 10000);
    await sleep(300);
    const mine = got.filter((m) => m.msg.endsWith(tag)).map((m) => m.id);
    assert.deepEqual(mine, ids, "every message once, in order");
    // and stored once each
    const history = await historyOf(0, first.id - 1);
    await waitFor(() => history.some((m) => m.id === ids.at(-1)));
    assert.deepEqual(history.filter((m) => m.msg.endsWith(tag)).map((m) => m.id), ids);
  });

  it("the online list has the users of both workers", T, async () => {
    const tag = uniq();
    const a = await user(0, { nick: `on0-${tag}` });
    const b = await user(1, { nick: `on1-${tag}` });
    for (const s of [a, b]) {
      const list = await call(s, "users");
      const mine = list.filter((u) => u.nick.endsWith(tag)).map(({ nick, worker }) => ({ nick, worker }));
      assert.deepEqual(mine, [
        { nick: `on0-${tag}`, worker: 0 },
        { nick: `on1-${tag}`, worker: 1 },
      ]);
      assert.ok(list.some((u) => u.id === a.id) && list.some((u) => u.id === b.id));
    }
    // notices, and the list after a rename and a departure
    const renamed = onceWhere(a, "user renamed", (u) => u.id === b.id);
    assert.deepEqual(await call(b, "set nick", `bob-${tag}`), { ok: true, nick: `bob-${tag}` });
    assert.deepEqual((await renamed)[0], { id: b.id, old: `on1-${tag}`, nick: `bob-${tag}` });
    const bId = b.id; // the client forgets it on disconnect
    const left = onceWhere(a, "user disconnected", (u) => u.id === bId);
    b.disconnect();
    const [info] = await left;
    assert.equal(info.nick, `bob-${tag}`);
    assert.equal(info.reason, "client namespace disconnect");
    const after = await call(a, "users");
    assert.ok(!after.some((u) => u.id === bId), "gone from the list");
  });

  it("typing crosses workers (volatile, to others only)", T, async () => {
    const a = await user(0, { nick: `typer-${uniq()}` });
    const b = await user(1);
    const mine = collect(a, "typing");
    const theirs = once(b, "typing");
    a.emit("typing", true);
    const [who, on] = await theirs;
    assert.deepEqual(who, { id: a.id, nick: (await call(a, "whoami")).nick });
    assert.equal(on, true);
    const off = once(b, "typing");
    a.emit("typing", false);
    assert.equal((await off)[1], false);
    assert.equal(mine.length, 0, "the typist does not see itself");
  });

  it("a private message reaches a user on the other worker and nobody else", T, async () => {
    const tag = uniq();
    const a = await user(0, { nick: `pa-${tag}` });
    const b = await user(1, { nick: `pb-${tag}` });
    const c = await user(1, { nick: `pc-${tag}` });
    const d = await user(0, { nick: `pd-${tag}` });
    const others = [a, c, d].map((s) => collect(s, "private message"));
    const got = once(b, "private message");
    const res = await call(a, "private message", `pb-${tag}`, "psst");
    assert.deepEqual(res, { ok: true, delivered: 1, to: `pb-${tag}` });
    const [m] = stripOffset(await got);
    assert.deepEqual(m, { from: { id: a.id, nick: `pa-${tag}` }, to: `pb-${tag}`, text: "psst" });
    // by socket id works too (clicking a user in the list)
    const byId = once(b, "private message");
    assert.equal((await call(d, "private message", b.id, "by id")).delivered, 1);
    assert.equal(stripOffset(await byId)[0].text, "by id");
    await sleep(200);
    assert.deepEqual(others.map((o) => o.length), [0, 0, 0]);
    assert.deepEqual(await call(a, "private message", `nobody-${tag}`, "x"), { error: `no such user: nobody-${tag}` });
  });

  it("bad input gets an error ack and the workers keep serving", T, async () => {
    const a = await user(0);
    const b = await user(1);
    const cases = [
      ["chat message", 42, "off-1"],
      ["chat message", { text: "x" }, "off-2"],
      ["chat message", "", "off-3"],
      ["chat message", "x".repeat(10_001), "off-4"],
      ["chat message", "no offset"],
      ["chat message", "long offset", "o".repeat(129)],
      ["chat message", "numeric offset", 7],
      ["chat message", Buffer.from("binary"), "off-5"],
      ["set nick", ""],
      ["set nick", "has space"],
      ["set nick", "n".repeat(33)],
      ["set nick", null],
      ["typing", "yes"],
      ["private message", 1, "x"],
      ["private message", b.id, ""],
      ["private message", b.id, "x".repeat(10_001)],
    ];
    for (const [event, ...args] of cases) {
      const res = await call(a, event, ...args);
      assert.equal(typeof res?.error, "string", `${event} ${JSON.stringify(args).slice(0, 60)} → ${JSON.stringify(res)}`);
    }
    // no ack asked: ignored; unknown events: ignored
    a.emit("chat message", 42, "off-6");
    a.emit("no such event", 1, 2, 3);
    a.emit("chat message");
    // the longest message allowed is fine, and both workers still serve
    const got = messagesOf(b);
    const long = "y".repeat(10_000);
    const { id } = await say(a, long);
    await waitFor(() => got.some((m) => m.id === id));
    assert.equal(got.find((m) => m.id === id).msg.length, 10_000);
    assert.equal((await call(b, "whoami")).worker, 1);
    assert.doesNotMatch(chat.stderr(), /exited|panicked/);
  });

  it("serves the page and the client bundle with ETag and 304", T, async () => {
    for (const url of chat.urls) {
      const page = await fetch(`${url}/`);
      assert.equal(page.status, 200);
      const html = await page.text();
      assert.match(html, /<script src="\/socket\.io\/socket\.io\.js"><\/script>/);
      assert.equal((await fetch(`${url}/chat.js`)).status, 200);

      const js = await fetch(`${url}/socket.io/socket.io.js`);
      assert.equal(js.status, 200);
      assert.equal(js.headers.get("etag"), `"${CLIENT_VERSION}"`);
      assert.equal(js.headers.get("cache-control"), "public, max-age=0");
      assert.equal(js.headers.get("content-type"), "application/javascript; charset=utf-8");
      assert.match(await js.text(), new RegExp(`Socket\\.IO v${CLIENT_VERSION.replace(/\./g, "\\.")}`));

      for (const tag of [`"${CLIENT_VERSION}"`, `W/"${CLIENT_VERSION}"`]) {
        const res = await fetch(`${url}/socket.io/socket.io.min.js`, { headers: { "if-none-match": tag } });
        assert.equal(res.status, 304, tag);
      }
      const stale = await fetch(`${url}/socket.io/socket.io.min.js`, { headers: { "if-none-match": '"0.0.1"' } });
      assert.equal(stale.status, 200);
      await stale.arrayBuffer();
      const map = await fetch(`${url}/socket.io/socket.io.esm.min.js.map`);
      assert.equal(map.status, 200);
      assert.equal(map.headers.get("content-type"), "application/json; charset=utf-8");
      await map.arrayBuffer();
      const gz = await fetch(`${url}/socket.io/socket.io.js`, { headers: { "accept-encoding": "gzip" } });
      assert.equal(gz.headers.get("content-encoding"), "gzip");
      assert.match(await gz.text(), /Socket\.IO v/); // fetch decompresses
    }
  });
});
