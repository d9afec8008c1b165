// Transport variants: polling-only, websocket-only, and the default polling → websocket upgrade.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { useServer, connect, client, once, onceEvent, call, ack, waitFor, TEST_TIMEOUT } from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const ctx = useServer();

const JSON_ARGS = [1, 1.5, 9007199254740991, "ünï 🎉", { a: [null, true, { b: "c" }] }, null, []];
const BIN_ARGS = ["bin", Buffer.from([0, 1, 2, 253, 254, 255]), { nested: [Buffer.from("xyz"), 3] }, Buffer.alloc(0)];

for (const transports of [["polling"], ["websocket"]]) {
  const name = transports[0];
  describe(`${name}-only client`, () => {
    it("connects and stays on its transport", T, async () => {
      const s = await connect(ctx.url, { transports });
      assert.equal(s.io.engine.transport.name, name);
      assert.notEqual(s.id, s.io.engine.id);
      await call(s, "echo", "x");
      assert.equal(s.io.engine.transport.name, name);
    });

    it("echo with ack (JSON)", T, async () => {
      const s = await connect(ctx.url, { transports });
      assert.deepEqual(await ack(s, "echo", ...JSON_ARGS), JSON_ARGS);
    });

    it("echo as event (JSON)", T, async () => {
      const s = await connect(ctx.url, { transports });
      const p = onceEvent(s, "echo");
      s.emit("echo", ...JSON_ARGS);
      assert.deepEqual(await p, JSON_ARGS);
    });

    it("binary echo with ack and as event", T, async () => {
      const s = await connect(ctx.url, { transports });
      const res = await ack(s, "echo", ...BIN_ARGS);
      assert.deepEqual(res, BIN_ARGS);
      assert.ok(Buffer.isBuffer(res[1]));
      const p = onceEvent(s, "echo");
      s.emit("echo", ...BIN_ARGS);
      assert.deepEqual(await p, BIN_ARGS);
    });

    it("server emit-with-ack with binary, client acks", T, async () => {
      const s = await connect(ctx.url, { transports });
      s.on("q", (b, cb) => cb(b, "ok"));
      const res = await call(s, "emit-with-ack", { event: "q", args: [Buffer.from([5, 6])], timeout: 2000 });
      assert.deepEqual(res, { err: null, response: [Buffer.from([5, 6]), "ok"] });
    });

    it("/auth and /custom over the same transport", T, async () => {
      const s = client(ctx.url + "/custom", { transports, auth: { t: name } });
      const p = onceEvent(s, "auth");
      s.connect();
      assert.deepEqual(await p, [{ t: name }]);
      const refused = client(ctx.url + "/auth", { transports });
      refused.connect();
      const [err] = await once(refused, "connect_error");
      assert.equal(err.message, "unauthorized");
      assert.deepEqual(err.data, { code: 401 });
    });

    it("many events in a burst, both directions", T, async () => {
      const s = await connect(ctx.url, { transports });
      const got = [];
      s.on("echo", (n, b) => got.push([n, b.length]));
      for (let i = 0; i < 50; i++) s.emit("echo", i, Buffer.alloc(i));
      await call(s, "echo", "sync");
      assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => [i, i]));
    });
  });
}

describe("upgrade", () => {
  it("a default client starts with polling and upgrades to websocket", T, async () => {
    const s = await connect(ctx.url);
    const engineId = s.io.engine.id;
    await waitFor(() => s.io.engine.transport.name === "websocket", 3000);
    assert.equal(s.io.engine.id, engineId);
    assert.deepEqual(await ack(s, "echo", ...BIN_ARGS), BIN_ARGS);
  });

  it("the handshake advertises the websocket upgrade and the heartbeat settings", T, async () => {
    const s = client(ctx.url);
    s.connect(); // creates the Engine.IO socket synchronously
    const [hs] = await once(s.io.engine, "handshake");
    assert.deepEqual(Object.keys(hs).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.deepEqual(hs.upgrades, ["websocket"]);
    assert.equal(hs.pingInterval, 1000);
    assert.equal(hs.pingTimeout, 1000);
    assert.equal(hs.maxPayload, 1000000);
    assert.equal(typeof hs.sid, "string");
    await once(s, "connect");
  });

  it("events emitted during the upgrade are neither lost nor reordered", T, async () => {
    const s = await connect(ctx.url);
    const got = [];
    s.on("echo", (n) => got.push(n));
    for (let i = 0; i < 100; i++) s.emit("echo", i);
    await waitFor(() => s.io.engine.transport.name === "websocket", 3000);
    for (let i = 100; i < 150; i++) s.emit("echo", i);
    await call(s, "echo", "sync");
    assert.deepEqual(got, Array.from({ length: 150 }, (_, i) => i));
  });

  it("broadcast across a polling-only, a websocket-only and an upgraded client", T, async () => {
    const p = await connect(ctx.url, { transports: ["polling"] });
    const w = await connect(ctx.url, { transports: ["websocket"] });
    const d = await connect(ctx.url);
    const got = [onceEvent(p, "all"), onceEvent(w, "all"), onceEvent(d, "all")];
    await call(p, "broadcast", { event: "all", args: [Buffer.from([1]), "x"] });
    for (const g of await Promise.all(got)) assert.deepEqual(g, [Buffer.from([1]), "x"]);
  });
});
