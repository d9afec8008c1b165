// Rooms and broadcast operators with three clients A, B, C.
//   A in r1, B in r1 + r2, C in r2.
import { describe, it, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { useServer, connect, client, once, call, stripOffset, TEST_TIMEOUT } from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const ctx = useServer();

let A, B, C;
let clients;

/**
 * Collects `event` on every client, runs `fn`, then waits for a sentinel
 * broadcast to everybody: since delivery per client is ordered, anything
 * caused by `fn` has arrived once every client saw the sentinel.
 * Returns { A: [argsWithoutOffset...], B: [...], C: [...] } and the raw args.
 */
let sentinelCounter = 0;
async function received(event, fn, { raw = false } = {}) {
  const got = { A: [], B: [], C: [] };
  const listeners = [];
  for (const [name, s] of Object.entries(clients)) {
    const l = (...args) => got[name].push(raw ? args : stripOffset(args));
    s.on(event, l);
    listeners.push([s, l]);
  }
  await fn();
  const tag = `sentinel-${++sentinelCounter}`;
  const seen = Object.values(clients).map((s) => once(s, tag));
  await call(A, "broadcast", { event: tag, args: [] });
  await Promise.all(seen);
  for (const [s, l] of listeners) s.off(event, l);
  return got;
}

async function setup() {
  // websocket-only clients keep volatile deliveries deterministic
  const opts = { transports: ["websocket"] };
  A = await connect(ctx.url, opts);
  B = await connect(ctx.url, opts);
  C = await connect(ctx.url, opts);
  clients = { A, B, C };
  assert.deepEqual(await call(A, "join", "r1"), [A.id, "r1"]);
  assert.deepEqual(await call(B, "join", ["r1", "r2"]), [B.id, "r1", "r2"]);
  assert.deepEqual(await call(C, "join", "r2"), [C.id, "r2"]);
}

describe("rooms", () => {
  beforeEach(setup);

  it("join/leave acks list socket.rooms in insertion order (own id first)", T, async () => {
    assert.deepEqual(await call(A, "join", ["x", "y"]), [A.id, "r1", "x", "y"]);
    assert.deepEqual(await call(A, "join", "x"), [A.id, "r1", "x", "y"]); // idempotent
    assert.deepEqual(await call(A, "leave", "r1"), [A.id, "x", "y"]);
    assert.deepEqual(await call(A, "leave", "not-joined"), [A.id, "x", "y"]);
    assert.deepEqual(await call(A, "join", "r1"), [A.id, "x", "y", "r1"]);
  });

  it("broadcast to all (io.emit) reaches A, B and C, sender included", T, async () => {
    const got = await received("news", async () => {
      assert.equal(await call(A, "broadcast", { event: "news", args: [1, "two", { three: 3 }] }), "ok");
    });
    assert.deepEqual(got, { A: [[1, "two", { three: 3 }]], B: [[1, "two", { three: 3 }]], C: [[1, "two", { three: 3 }]] });
  });

  it("broadcast without ack still works (fire and forget)", T, async () => {
    const got = await received("news", async () => {
      C.emit("broadcast", { event: "news", args: ["nf"] });
    });
    assert.deepEqual(got, { A: [["nf"]], B: [["nf"]], C: [["nf"]] });
  });

  it("to one room", T, async () => {
    const got = await received("ev", () => call(C, "broadcast", { event: "ev", args: ["r1"], to: ["r1"] }));
    assert.deepEqual(got, { A: [["r1"]], B: [["r1"]], C: [] });
  });

  it("to a socket id room", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["direct"], to: [C.id] }));
    assert.deepEqual(got, { A: [], B: [], C: [["direct"]] });
  });

  it("to two rooms: a member of both receives it once", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["both"], to: ["r1", "r2"] }));
    assert.deepEqual(got, { A: [["both"]], B: [["both"]], C: [["both"]] });
  });

  it("to an empty room reaches nobody", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: [], to: ["empty"] }));
    assert.deepEqual(got, { A: [], B: [], C: [] });
  });

  it("except a room", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["x"], except: ["r1"] }));
    assert.deepEqual(got, { A: [], B: [], C: [["x"]] });
  });

  it("to r2 except r1", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["y"], to: ["r2"], except: ["r1"] }));
    assert.deepEqual(got, { A: [], B: [], C: [["y"]] });
  });

  it("except a socket id", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["z"], except: [B.id] }));
    assert.deepEqual(got, { A: [["z"]], B: [], C: [["z"]] });
  });

  it("socket.broadcast excludes the sender", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["b"], broadcast: true }));
    assert.deepEqual(got, { A: [], B: [["b"]], C: [["b"]] });
  });

  it("socket.broadcast.to(room) excludes the sender even if it is in the room", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["b1"], broadcast: true, to: ["r1"] }));
    assert.deepEqual(got, { A: [], B: [["b1"]], C: [] });
  });

  it("socket.broadcast.except(room)", T, async () => {
    const got = await received("ev", () => call(C, "broadcast", { event: "ev", args: ["b2"], broadcast: true, except: ["r1"] }));
    assert.deepEqual(got, { A: [], B: [], C: [] });
    const got2 = await received("ev", () => call(B, "broadcast", { event: "ev", args: ["b3"], broadcast: true, except: ["r1"] }));
    assert.deepEqual(got2, { A: [], B: [], C: [["b3"]] });
  });

  it("local broadcast reaches everyone on this (single) server", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["l"], local: true, to: ["r2"] }));
    assert.deepEqual(got, { A: [], B: [["l"]], C: [["l"]] });
  });

  it("volatile broadcast reaches connected clients, without an offset", T, async () => {
    const got = await received(
      "ev",
      () => call(A, "broadcast", { event: "ev", args: ["v", 1], volatile: true }),
      { raw: true },
    );
    // volatile packets are not stored for recovery: no offset is appended
    assert.deepEqual(got, { A: [["v", 1]], B: [["v", 1]], C: [["v", 1]] });
  });

  it("non-volatile broadcasts carry one offset, the same for every recipient", T, async () => {
    const got = await received("ev", () => call(A, "broadcast", { event: "ev", args: ["o"] }), { raw: true });
    const offsets = ["A", "B", "C"].map((n) => {
      assert.equal(got[n].length, 1);
      assert.equal(got[n][0].length, 2);
      assert.equal(got[n][0][0], "o");
      return got[n][0][1];
    });
    assert.equal(typeof offsets[0], "string");
    assert.equal(new Set(offsets).size, 1);
  });

  it("after leave, a room broadcast no longer reaches the socket", T, async () => {
    assert.deepEqual(await call(B, "leave", "r1"), [B.id, "r2"]);
    const got = await received("ev", () => call(C, "broadcast", { event: "ev", args: ["after-leave"], to: ["r1"] }));
    assert.deepEqual(got, { A: [["after-leave"]], B: [], C: [] });
  });

  it("rooms are per namespace: a /custom socket is not reached by / broadcasts", T, async () => {
    const other = client(ctx.url + "/custom");
    other.connect();
    await once(other, "connect");
    let hit = 0;
    other.on("ev", () => hit++);
    await received("ev", () => call(A, "broadcast", { event: "ev", args: [] }));
    assert.equal(hit, 0);
  });
});

describe("broadcast with ack", () => {
  beforeEach(setup);

  function answer(name, { delay = 0, never = false } = {}) {
    clients[name].on("q", (...args) => {
      const cb = args.pop();
      if (never) return;
      const reply = { from: name, args };
      if (delay) setTimeout(() => cb(reply), delay);
      else cb(reply);
    });
  }
  const byFrom = (a, b) => (a.from < b.from ? -1 : 1);

  it("every targeted client acks → all responses, no error", T, async () => {
    answer("A");
    answer("B");
    answer("C");
    const res = await call(A, "broadcast-with-ack", { event: "q", args: [1, "x"], timeout: 2000 });
    assert.equal(res.err, null);
    assert.deepEqual(res.responses.sort(byFrom), [
      { from: "A", args: [1, "x"] },
      { from: "B", args: [1, "x"] },
      { from: "C", args: [1, "x"] },
    ]);
  });

  it("to a room: only members are asked", T, async () => {
    answer("A");
    answer("B");
    answer("C");
    const t0 = Date.now();
    const res = await call(C, "broadcast-with-ack", { event: "q", args: [], to: ["r1"], timeout: 2000 });
    assert.equal(res.err, null);
    assert.deepEqual(res.responses.sort(byFrom), [{ from: "A", args: [] }, { from: "B", args: [] }]);
    assert.ok(Date.now() - t0 < 1500, "must answer as soon as all acks are in");
  });

  it("one client does not ack → 'operation has timed out' with the partial responses", T, async () => {
    answer("A");
    answer("B", { delay: 50 });
    answer("C", { never: true });
    const t0 = Date.now();
    const res = await call(A, "broadcast-with-ack", { event: "q", args: ["p"], timeout: 400 });
    const elapsed = Date.now() - t0;
    assert.equal(res.err, "operation has timed out");
    assert.deepEqual(res.responses.sort(byFrom), [{ from: "A", args: ["p"] }, { from: "B", args: ["p"] }]);
    assert.ok(elapsed >= 380 && elapsed < 2500, `answered after ${elapsed} ms`);
  });

  it("to an empty room → [] at once", T, async () => {
    const t0 = Date.now();
    const res = await call(A, "broadcast-with-ack", { event: "q", args: [], to: ["nobody-here"], timeout: 3000 });
    assert.deepEqual(res, { err: null, responses: [] });
    assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  });

  it("binary in broadcast-with-ack both ways", T, async () => {
    for (const name of ["A", "B", "C"]) {
      clients[name].on("q", (b, cb) => cb({ from: name, b: Buffer.concat([b, Buffer.from(name)]) }));
    }
    const res = await call(B, "broadcast-with-ack", { event: "q", args: [Buffer.from([1])], to: ["r2"], timeout: 2000 });
    assert.equal(res.err, null);
    assert.deepEqual(res.responses.sort(byFrom), [
      { from: "B", b: Buffer.from([1, 66]) },
      { from: "C", b: Buffer.from([1, 67]) },
    ]);
  });

  it("broadcast acks carry no offset (event args exact)", T, async () => {
    const seen = [];
    for (const name of ["A", "B", "C"]) {
      clients[name].on("q", (...args) => {
        const cb = args.pop();
        seen.push(args);
        cb(name);
      });
    }
    const res = await call(A, "broadcast-with-ack", { event: "q", args: ["only"], timeout: 2000 });
    assert.deepEqual(res.responses.sort(), ["A", "B", "C"]);
    assert.deepEqual(seen, [["only"], ["only"], ["only"]]);
  });
});
