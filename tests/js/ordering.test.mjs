// Ordering of incoming events and concurrency of handlers.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { useServer, connect, call, ack, TEST_TIMEOUT } from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const range = (n) => Array.from({ length: n }, (_, i) => i);

const ctx = useServer();

describe("ordering", () => {
  for (const transports of [undefined, ["polling"], ["websocket"]]) {
    const label = transports ? transports.join("+") : "default";
    it(`200 'ordered' emits arrive in order (${label})`, T, async () => {
      const s = await connect(ctx.url, transports ? { transports } : {});
      for (let i = 0; i < 200; i++) s.emit("ordered", i);
      assert.deepEqual(await call(s, "get-ordered"), range(200));
    });
  }

  it("ordered arrays are per socket", T, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    for (let i = 0; i < 5; i++) {
      a.emit("ordered", i);
      b.emit("ordered", 100 + i);
    }
    assert.deepEqual(await call(a, "get-ordered"), range(5));
    assert.deepEqual(await call(b, "get-ordered"), range(5).map((i) => 100 + i));
  });

  it("a slow (500 ms) handler does not block the next event: echo ack arrives first", T, async () => {
    const s = await connect(ctx.url);
    const order = [];
    const t0 = Date.now();
    const slow = ack(s, "slow", 500).then((r) => order.push(["slow", r, Date.now() - t0]));
    const echo = ack(s, "echo", "fast").then((r) => order.push(["echo", r, Date.now() - t0]));
    await Promise.all([slow, echo]);
    assert.deepEqual(order.map(([n, r]) => [n, r]), [["echo", ["fast"]], ["slow", ["slow"]]]);
    assert.ok(order[0][2] < 400, `echo ack took ${order[0][2]} ms`);
    assert.ok(order[1][2] >= 480, `slow ack after ${order[1][2]} ms`);
  });

  it("a slow handler on one socket does not block other sockets", T, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    const slow = ack(a, "slow", 600);
    const t0 = Date.now();
    assert.equal(await call(b, "echo", "b"), "b");
    assert.ok(Date.now() - t0 < 400, "other socket was blocked");
    assert.deepEqual(await slow, ["slow"]);
  });

  it("several slow handlers run concurrently (3 × 400 ms take < 1 s)", T, async () => {
    const s = await connect(ctx.url);
    const t0 = Date.now();
    const res = await Promise.all([ack(s, "slow", 400), ack(s, "slow", 400), ack(s, "slow", 400)]);
    const elapsed = Date.now() - t0;
    assert.deepEqual(res, [["slow"], ["slow"], ["slow"]]);
    assert.ok(elapsed < 1000, `took ${elapsed} ms`);
  });

  it("acks come back in handler-completion order (slow 300, slow 100 → 100 first)", T, async () => {
    const s = await connect(ctx.url);
    const order = [];
    await Promise.all([
      ack(s, "slow", 300).then(() => order.push(300)),
      ack(s, "slow", 100).then(() => order.push(100)),
    ]);
    assert.deepEqual(order, [100, 300]);
  });

  it("events received after an ordered burst: server → client order is preserved", T, async () => {
    const s = await connect(ctx.url);
    const got = [];
    s.on("echo", (n) => got.push(n));
    for (let i = 0; i < 100; i++) s.emit("echo", i);
    await call(s, "echo", "sync");
    assert.deepEqual(got, range(100));
  });
});
