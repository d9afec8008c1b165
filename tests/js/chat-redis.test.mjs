// The chat example on two "hosts": two chat clusters (2 workers each, different
// base ports) on the same redis-server (`--redis`) and the same SQLite file
// behave as one chat: a message crosses hosts and is stored once; a client that
// comes back on the other host recovers what it missed, with connection state
// recovery (offsets are stream ids) or with the chat's own serverOffset.
//
// Binary: RSIO_CHAT_BIN, else <repo>/target/debug/examples/chat.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { client, connect, call, once, sleep, waitFor, closeAll, stripOffset, TEST_TIMEOUT } from "./harness.mjs";
import { startChat } from "./chat-cluster.mjs";
import { redisSkipReason, startRedis } from "./redis-harness.mjs";

const T = { timeout: TEST_TIMEOUT * 2 };
const WS = { transports: ["websocket"] };
const uniq = () => Math.random().toString(36).slice(2, 10);

describe("chat on two hosts sharing Redis and SQLite", { skip: redisSkipReason(), timeout: 90000 }, () => {
  let redis, tmp, hostA, hostB;

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "rsio-chat-redis-"));
    redis = await startRedis();
    const db = path.join(tmp, "chat.db");
    // One after the other: the first creates the SQLite schema.
    hostA = await startChat(db, 2, ["--redis", redis.url]);
    hostB = await startChat(db, 2, ["--redis", redis.url]);
    // Workers are ready before Redis is: wait until A's users list (fetchSockets
    // over Redis) sees a user of each of B's workers.
    const probes = await Promise.all([user(hostA, 0), user(hostB, 0), user(hostB, 1)]);
    await waitFor(async () => {
      const ids = (await call(probes[0], "users")).map((u) => u.id);
      return probes.every((p) => ids.includes(p.id));
    }, 15000, 100);
    closeAll();
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    for (const host of [hostA, hostB]) {
      if (!host) continue;
      const res = await host.stop();
      assert.equal(res.code, 0, `chat exit status; stderr:\n${host.stderr().slice(-2000)}`);
    }
    await redis?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A client on worker `index` of `host` (checked with `whoami`). */
  async function user(host, index, { serverOffset = Number.MAX_SAFE_INTEGER, ...opts } = {}) {
    const s = await connect(host.urls[index], { ...WS, auth: { serverOffset }, ...opts });
    const who = await call(s, "whoami");
    assert.equal(who.worker, index, `served by worker ${index}`);
    return s;
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

  async function say(s, msg) {
    const res = await call(s, "chat message", msg, `${s.id}-${uniq()}`);
    assert.equal(res.ok, true, JSON.stringify(res));
    return res;
  }

  /** Every stored message after `serverOffset`, as a new client on `host` gets it. */
  async function historyOf(host, index, serverOffset, lastId) {
    const s = client(host.urls[index], { ...WS, auth: { serverOffset } });
    const got = messagesOf(s);
    s.connect();
    await once(s, "connect");
    await waitFor(() => got.some((m) => m.id === lastId));
    return got;
  }

  it("a message sent on host A reaches every worker of both hosts and is stored once", T, async () => {
    const a = await user(hostA, 1, { auth: { serverOffset: Number.MAX_SAFE_INTEGER, nick: "ann" } });
    const others = await Promise.all([user(hostA, 0), user(hostB, 0), user(hostB, 1)]);
    const got = others.map(messagesOf);
    const text = `across ${uniq()}`;
    const { id } = await say(a, text);
    await waitFor(() => got.every((list) => list.some((m) => m.msg === text)), 5000);
    await sleep(300); // a duplicate would have arrived by now
    for (const list of got) assert.deepEqual(list.filter((m) => m.msg === text), [{ msg: text, id, nick: "ann" }]);
    const history = await historyOf(hostB, 0, id - 1, id);
    assert.equal(history.filter((m) => m.msg === text).length, 1, "exactly one row");
  });

  it("a client that drops from host B and comes back on host A recovers the missed messages once", T, async () => {
    const sender = await user(hostA, 0);
    const tag = uniq();
    const b = await user(hostB, 1, { auth: { serverOffset: Number.MAX_SAFE_INTEGER, nick: `bee-${tag}` } });
    const got = messagesOf(b);
    const before = await say(sender, `before ${tag}`);
    await waitFor(() => got.some((m) => m.id === before.id)); // b holds an offset now
    const { _pid: pid, _lastOffset: offset, id } = b;
    assert.match(offset, /^\d+-\d+$/, "the offset is a stream id");
    b.io.engine.close(); // transport close: a recoverable disconnect
    await sleep(300); // the session is SET fire-and-forget
    const m1 = await say(sender, `missed-1 ${tag}`);
    const m2 = await say(sender, `missed-2 ${tag}`);

    // Connection state recovery on the other host. serverOffset 0: a session
    // that did not recover would get the whole history instead.
    const back = client(hostA.urls[1], { ...WS, auth: { pid, offset, serverOffset: 0 } });
    const recovered = messagesOf(back);
    back.connect();
    await once(back, "connect");
    assert.equal(back.id, id, "the socket keeps its id: the session came back on host A");
    const who = await call(back, "whoami");
    assert.deepEqual([who.worker, who.nick], [1, `bee-${tag}`], "host A's worker 1, with the nick of the session");
    await waitFor(() => recovered.some((m) => m.id === m2.id));
    await sleep(200);
    assert.deepEqual(recovered.map((m) => m.msg), [`missed-1 ${tag}`, `missed-2 ${tag}`], "missed once, no replay");

    // The chat's own recovery, for a client whose session is gone: its serverOffset.
    const fresh = await historyOf(hostA, 0, before.id, m2.id);
    assert.deepEqual(
      fresh.filter((m) => m.msg.endsWith(tag)).map((m) => m.id),
      [m1.id, m2.id],
    );
  });

  it("the online list has the users of every worker of both hosts", T, async () => {
    const users = await Promise.all([user(hostA, 0), user(hostA, 1), user(hostB, 0), user(hostB, 1)]);
    for (const asker of [users[0], users[3]]) {
      const ids = (await call(asker, "users")).map((u) => u.id);
      for (const u of users) assert.ok(ids.includes(u.id), `${u.id} in the list of ${asker.id}`);
    }
  });
});
