// Events, acknowledgements (both directions), binary payloads, socket middleware.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  useServer, connect, once, onceEvent, fires, call, ack, sleep, stripOffset, TEST_TIMEOUT,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };

const MIXED = [
  1,
  1.5,
  -3,
  0,
  9007199254740991,
  -9007199254740991,
  0.1,
  1e300,
  "héllo wörld 🎉 ☃ 日本語 \u0000 \"quoted\" \\ \n\t",
  "",
  { a: { b: [1, { c: null }] }, "é": "ü", nested: { deep: { deeper: [true, false] } } },
  null,
  [1, "2", [3, [4, []]], {}],
  true,
  false,
  {},
  [],
];

function buf(...bytes) {
  return Buffer.from(bytes);
}

const ctx = useServer();

describe("events and acks", () => {

  it("echo with ack returns mixed JSON args unchanged", T, async () => {
    const s = await connect(ctx.url);
    const res = await ack(s, "echo", ...MIXED);
    assert.deepEqual(res, MIXED);
  });

  it("echo with ack and no args acks with no args", T, async () => {
    const s = await connect(ctx.url);
    assert.deepEqual(await ack(s, "echo"), []);
  });

  it("echo without ack comes back as an `echo` event (+ offset)", T, async () => {
    const s = await connect(ctx.url);
    const p = once(s, "echo");
    s.emit("echo", ...MIXED);
    const args = await p;
    assert.equal(args.length, MIXED.length + 1);
    assert.deepEqual(stripOffset(args), MIXED);
  });

  it("the catch-all outgoing listener sees socket emits and broadcasts, not acks", T, async () => {
    const s = await connect(ctx.url);
    const echoed = once(s, "echo");
    s.emit("echo", 1);
    await echoed;
    const got = once(s, "all-hello");
    await call(s, "broadcast", { event: "all-hello", args: [2] });
    await got;
    await call(s, "echo", 3); // answered by an ack: not an outgoing event
    assert.deepEqual(await call(s, "outgoing"), ["echo", "all-hello"]);
  });

  it("successive server events carry distinct offsets, the client tracks the last one", T, async () => {
    const s = await connect(ctx.url);
    const offsets = [];
    s.on("echo", (...args) => offsets.push(args[args.length - 1]));
    s.emit("echo", "a");
    s.emit("echo", "b");
    s.emit("echo", "c");
    await call(s, "echo", "sync");
    await sleep(20);
    assert.equal(offsets.length, 3);
    assert.equal(new Set(offsets).size, 3);
    for (const o of offsets) assert.equal(typeof o, "string");
    assert.equal(s._lastOffset, offsets[2]);
  });

  it("large payload (200 kB string) round-trips", T, async () => {
    const s = await connect(ctx.url);
    const big = "x".repeat(200_000) + "🎉";
    assert.deepEqual(await ack(s, "echo", big), [big]);
  });

  it("socket.emitWithAck resolves with the first ack arg", T, async () => {
    const s = await connect(ctx.url);
    assert.equal(await s.emitWithAck("echo", 7, "eight"), 7);
    assert.deepEqual(await s.timeout(2000).emitWithAck("echo", { k: [1, 2] }), { k: [1, 2] });
  });

  it("client-side timeout: timeout(200).emit('slow', 1000, cb) gets a timeout error", T, async () => {
    const s = await connect(ctx.url);
    const t0 = Date.now();
    const [err, ...rest] = await new Promise((resolve) => s.timeout(200).emit("slow", 1000, (...a) => resolve(a)));
    const elapsed = Date.now() - t0;
    assert.ok(err instanceof Error);
    assert.equal(err.message, "operation has timed out");
    assert.deepEqual(rest, []);
    assert.ok(elapsed >= 190 && elapsed < 900, `timed out after ${elapsed} ms`);
    // the late ack is ignored and the socket still works
    await sleep(900);
    assert.equal(s.connected, true);
    assert.equal(await call(s, "echo", "after"), "after");
  });

  it("emitWithAck with timeout rejects when the server acks too late", T, async () => {
    const s = await connect(ctx.url);
    await assert.rejects(s.timeout(100).emitWithAck("slow", 400), { message: "operation has timed out" });
    assert.equal(await s.timeout(1000).emitWithAck("slow", 50), "slow");
  });

  it("server emit-with-ack: client acks, the server gets the response", T, async () => {
    const s = await connect(ctx.url);
    let received;
    s.on("question", (...args) => {
      const cb = args.pop();
      received = args;
      cb(args[0] + 1, args[1] + "!", { ok: true });
    });
    const res = await call(s, "emit-with-ack", { event: "question", args: [1, "two"], timeout: 2000 });
    // events sent with an ack id carry no offset
    assert.deepEqual(received, [1, "two"]);
    assert.deepEqual(res, { err: null, response: [2, "two!", { ok: true }] });
  });

  it("server emit-with-ack: client never acks → 'operation has timed out'", T, async () => {
    const s = await connect(ctx.url);
    let got = null;
    s.on("question", (...args) => {
      got = args.slice(0, -1); // never call the ack
    });
    const t0 = Date.now();
    const res = await call(s, "emit-with-ack", { event: "question", args: ["x"], timeout: 300 });
    const elapsed = Date.now() - t0;
    assert.deepEqual(got, ["x"]);
    assert.deepEqual(res, { err: "operation has timed out", response: [] });
    assert.ok(elapsed >= 280 && elapsed < 2000, `answered after ${elapsed} ms`);
  });

  it("server emit-with-ack: an ack arriving after the timeout is ignored", T, async () => {
    const s = await connect(ctx.url);
    s.on("question", (cb) => setTimeout(() => cb("late"), 300));
    const res = await call(s, "emit-with-ack", { event: "question", args: [], timeout: 100 });
    assert.deepEqual(res, { err: "operation has timed out", response: [] });
    await sleep(350);
    assert.equal(s.connected, true);
    assert.equal(await call(s, "echo", "alive"), "alive");
  });

  it("socket middleware refuses 'forbidden': error-seen, handler not run, socket still usable", T, async () => {
    const s = await connect(ctx.url);
    const seen = onceEvent(s, "error-seen");
    const ran = fires(s, "forbidden-ran", 400);
    s.emit("forbidden", 1, 2);
    assert.deepEqual(await seen, ["forbidden event"]);
    assert.equal(await ran, false);
    assert.equal(s.connected, true);
    assert.equal(await call(s, "echo", "ok"), "ok");
  });

  it("forbidden with an ack callback never gets an ack", T, async () => {
    const s = await connect(ctx.url);
    const seen = onceEvent(s, "error-seen");
    const p = new Promise((resolve) => s.timeout(400).emit("forbidden", (err) => resolve(err)));
    assert.deepEqual(await seen, ["forbidden event"]);
    const err = await p;
    assert.ok(err instanceof Error);
    assert.equal(err.message, "operation has timed out");
  });

  it("event for an unregistered name is ignored (no ack, socket stays)", T, async () => {
    const s = await connect(ctx.url);
    await assert.rejects(s.timeout(300).emitWithAck("no-such-event", 1), { message: "operation has timed out" });
    assert.equal(await call(s, "echo", 2), 2);
  });
});

describe("binary", () => {

  it("Buffer arg echoed through an ack", T, async () => {
    const s = await connect(ctx.url);
    const [b] = await ack(s, "echo", buf(1, 2, 3, 255, 0));
    assert.ok(Buffer.isBuffer(b));
    assert.deepEqual(b, buf(1, 2, 3, 255, 0));
  });

  it("Buffer arg echoed as an event (BINARY_EVENT + offset)", T, async () => {
    const s = await connect(ctx.url);
    const p = onceEvent(s, "echo");
    s.emit("echo", buf(9, 8, 7));
    const args = await p;
    assert.equal(args.length, 1);
    assert.ok(Buffer.isBuffer(args[0]));
    assert.deepEqual(args[0], buf(9, 8, 7));
  });

  it("mixed binary and JSON args, buffers in nested positions", T, async () => {
    const s = await connect(ctx.url);
    const payload = [
      "text",
      buf(1),
      { a: buf(2, 2), list: [1, buf(3, 3, 3), { deep: { b: buf(4) } }], n: 1.5, s: "é" },
      [buf(5), "x", null, [buf(6, 6)]],
      42,
      null,
    ];
    const res = await ack(s, "echo", ...payload);
    assert.deepEqual(res, payload);
    assert.ok(Buffer.isBuffer(res[2].list[2].deep.b));

    const p = onceEvent(s, "echo");
    s.emit("echo", ...payload);
    assert.deepEqual(await p, payload);
  });

  it("the same Buffer twice and many buffers (10 attachments)", T, async () => {
    const s = await connect(ctx.url);
    const one = buf(1, 2);
    const many = Array.from({ length: 10 }, (_, i) => Buffer.alloc(i + 1, i));
    assert.deepEqual(await ack(s, "echo", one, { again: one }), [one, { again: one }]);
    assert.deepEqual(await ack(s, "echo", ...many), many);
  });

  it("empty buffer", T, async () => {
    const s = await connect(ctx.url);
    const res = await ack(s, "echo", Buffer.alloc(0), "after-empty", { e: Buffer.alloc(0) });
    assert.equal(res.length, 3);
    assert.ok(Buffer.isBuffer(res[0]));
    assert.equal(res[0].length, 0);
    assert.equal(res[1], "after-empty");
    assert.equal(res[2].e.length, 0);
  });

  it("large binary (256 KiB) round-trips", T, async () => {
    const s = await connect(ctx.url);
    const big = Buffer.alloc(256 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const [b] = await ack(s, "echo", big);
    assert.ok(big.equals(b));
  });

  it("typed arrays / ArrayBuffer are sent as binary and come back as Buffer", T, async () => {
    const s = await connect(ctx.url);
    const u8 = new Uint8Array([10, 20, 30]);
    const [a, b] = await ack(s, "echo", u8, u8.buffer);
    assert.ok(Buffer.isBuffer(a));
    assert.deepEqual([...a], [10, 20, 30]);
    assert.deepEqual([...b], [10, 20, 30]);
  });

  it("server → client binary event with ack, client acks with binary", T, async () => {
    const s = await connect(ctx.url);
    let got;
    s.on("bin-question", (b, meta, cb) => {
      got = [b, meta];
      cb(Buffer.concat([b, buf(0xee)]), { echoed: meta });
    });
    const res = await call(s, "emit-with-ack", {
      event: "bin-question",
      args: [buf(1, 2), { tag: "t", inner: buf(3) }],
      timeout: 2000,
    });
    assert.ok(Buffer.isBuffer(got[0]));
    assert.deepEqual(got, [buf(1, 2), { tag: "t", inner: buf(3) }]);
    assert.equal(res.err, null);
    assert.deepEqual(res.response, [buf(1, 2, 0xee), { echoed: { tag: "t", inner: buf(3) } }]);
  });

  it("binary broadcast reaches the other client", T, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    const p = onceEvent(b, "bin");
    assert.equal(await call(a, "broadcast", { event: "bin", args: [buf(7), { x: buf(8, 9) }], broadcast: true }), "ok");
    assert.deepEqual(await p, [buf(7), { x: buf(8, 9) }]);
  });
});
