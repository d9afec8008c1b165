// The msgpack parser: the official client with socket.io-msgpack-parser
// (pinned in package.json) against `interop --parser msgpack`.
// One process (connection state recovery on), then a 2-worker cluster.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { createRequire } from "node:module";
import {
  REPO_ROOT, useServer, connect, once, call, ack, stripOffset, waitForDisconnectRecord,
  startCluster, connectWorker, clusterSkipReason, closeAll, TEST_TIMEOUT,
} from "./harness.mjs";

const parser = createRequire(import.meta.url)("socket.io-msgpack-parser");
const T = { timeout: TEST_TIMEOUT };
const skip = process.env.INTEROP_REFERENCE === "1" ? "the reference server speaks the default parser" : false;

// The server under test: the interop example with the msgpack parser.
process.env.RSIO_INTEROP_SERVER ??=
  `${path.join(REPO_ROOT, "target", "debug", "examples", "interop")} --port 0 --parser msgpack`;

const mp = (opts = {}) => ({ parser, ...opts });

describe("msgpack parser (one process)", { skip }, () => {
  const ctx = useServer();

  for (const transports of [["websocket"], ["polling"]]) {
    const label = transports[0];

    it(`events both ways (${label})`, T, async () => {
      const s = await connect(ctx.url, mp({ transports }));
      const p = once(s, "echo");
      s.emit("echo", "hi", 1.5, { k: [1, null, true] }, -7);
      // Recovery is on: the server appends the offset as the last argument.
      assert.deepEqual(stripOffset(await p), ["hi", 1.5, { k: [1, null, true] }, -7]);
      assert.equal(typeof s._lastOffset, "string");
    });

    it(`acks both ways, with binaries both ways (${label})`, T, async () => {
      const s = await connect(ctx.url, mp({ transports }));
      const bin = Buffer.from([0, 1, 2, 255]);
      assert.deepEqual(await ack(s, "echo", bin, { nested: [Buffer.from("xy")] }, "s"),
        [bin, { nested: [Buffer.from("xy")] }, "s"]);
      s.on("question", (a, b, buf, cb) => cb({ got: [a, b] }, Buffer.concat([buf, Buffer.from([9])])));
      const res = await call(s, "emit-with-ack",
        { event: "question", args: [1, "two", Buffer.from([7, 8])], timeout: 2000 });
      assert.deepEqual(res, { err: null, response: [{ got: [1, "two"] }, Buffer.from([7, 8, 9])] });
    });
  }

  it("broadcast to a room reaches its members only", T, async () => {
    const a = await connect(ctx.url, mp());
    const b = await connect(ctx.url, mp({ transports: ["polling"] }));
    const c = await connect(ctx.url, mp());
    assert.deepEqual(await call(a, "join", "r"), [a.id, "r"]);
    assert.deepEqual(await call(b, "join", "r"), [b.id, "r"]);
    let cGot = false;
    c.on("news", () => { cGot = true; });
    const pa = once(a, "news");
    const pb = once(b, "news");
    assert.equal(await call(c, "broadcast", { event: "news", args: ["hi", Buffer.from([5])], to: ["r"] }), "ok");
    assert.deepEqual(stripOffset(await pa), ["hi", Buffer.from([5])]);
    assert.deepEqual(stripOffset(await pb), ["hi", Buffer.from([5])]);
    assert.equal(await call(c, "echo", "sync"), "sync");
    assert.equal(cGot, false);
  });

  it("a client with the default parser is refused", T, async () => {
    await assert.rejects(connect(ctx.url, { transports: ["websocket"] }, 1500));
  });

  it("recovery: missed broadcasts (binary included) are delivered on reconnection", T, async () => {
    const a = await connect(ctx.url, mp({ transports: ["websocket"] }));
    const b = await connect(ctx.url, mp());
    const missed = [];
    a.on("missed", (...args) => missed.push(stripOffset(args)));
    await call(a, "join", "r");
    const first = once(a, "missed");
    await call(b, "broadcast", { event: "missed", args: ["before"], to: ["r"] });
    await first;
    const id = a.id;
    const gone = once(a, "disconnect");
    a.io.engine.close();
    await gone;
    assert.equal((await waitForDisconnectRecord(b, id)).reason, "transport close");
    await call(b, "broadcast", { event: "missed", args: [1, { x: "one" }], to: ["r"] });
    await call(b, "broadcast", { event: "missed", args: [2, Buffer.from([2, 2])], to: ["r"] });
    const back = once(a, "connect");
    a.connect();
    await back;
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    assert.equal(await call(a, "echo", "sync"), "sync");
    assert.deepEqual(missed, [["before"], [1, { x: "one" }], [2, Buffer.from([2, 2])]]);
  });
});

describe("msgpack parser (cluster of 2 workers, recovery on)", { skip: skip || clusterSkipReason() }, () => {
  const ctx = { cluster: null };
  before(async () => {
    ctx.cluster = await startCluster({ workers: 2, args: ["--parser", "msgpack", "--recovery"] });
  }, { timeout: 30000 });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await ctx.cluster?.stop("SIGTERM", 5000);
  }, { timeout: 10000 });

  it("a broadcast from worker 0 reaches worker 1's clients, with an offset", T, async () => {
    const a = await connectWorker(ctx.cluster, 0, mp());
    const b = await connectWorker(ctx.cluster, 1, mp({ transports: ["polling"] }));
    const c = await connectWorker(ctx.cluster, 1, mp());
    assert.equal(await call(a, "worker"), 0);
    assert.equal(await call(b, "worker"), 1);
    await call(b, "join", "room");
    await call(c, "join", "room");
    const pb = once(b, "across");
    const pc = once(c, "across");
    const args = ["x", 42, { deep: [Buffer.from([1, 2])] }];
    assert.equal(await call(a, "broadcast", { event: "across", args, to: ["room"] }), "ok");
    for (const got of [await pb, await pc]) {
      // The primary numbered it: the offset is the last element of the msgpack data array.
      assert.deepEqual(stripOffset(got), args);
      assert.match(got.at(-1), /^\d+$/);
    }
  });
});
