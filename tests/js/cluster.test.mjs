// Cluster mode: `interop --cluster --workers N --port BASE` (a primary relaying
// adapter messages between workers, worker i on BASE + i). Every client below is
// connected to a known worker (checked with the `worker` ack); the operations act
// across workers, as with Node's @socket.io/cluster-adapter.
//
// Absence of a delivery is checked with a barrier: the same client that caused
// the delivery then broadcasts a `sync` event to everyone and every client waits
// for it. Messages of one worker are relayed in order, so anything the first
// operation delivered arrives before the `sync`.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Manager } from "socket.io-client";
import {
  startCluster, connectWorker, clusterSkipReason, closeAll, call, once, waitFor,
  waitToken,
} from "./harness.mjs";

const T = { timeout: 10000 };
const HOOK = { timeout: 30000 };
const skip = clusterSkipReason();

const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const sorted = (list) => [...list].sort();
const numSorted = (list) => [...list].sort((a, b) => a - b);

let seq = 0;

/** Broadcast `sync` from `sender` to all and wait until every client has it. */
async function barrier(sender, clients) {
  const token = `sync-${++seq}`;
  const waits = clients.map((c) => waitToken(c, "sync", token));
  assert.equal(await call(sender, "broadcast", { event: "sync", args: [token] }), "ok");
  await Promise.all(waits);
}

/**
 * Records `event` on every client while `action` runs, then a barrier from
 * `sender`; returns { name: [args, …] } for every client.
 */
async function delivered(clients, sender, event, action) {
  const got = {};
  const offs = [];
  for (const c of clients) {
    const list = [];
    got[c.name] = list;
    const h = (...args) => list.push(args);
    c.on(event, h);
    offs.push(() => c.off(event, h));
  }
  try {
    await action();
    await barrier(sender, clients);
  } finally {
    offs.forEach((f) => f());
  }
  return got;
}

/** { name: [args] } for the names in `receivers`, { name: [] } for the others. */
function only(clients, receivers, args) {
  const want = {};
  for (const c of clients) want[c.name] = receivers.includes(c) ? [args] : [];
  return want;
}

/** fetch-sockets (all) through `via` once it lists exactly `n` sockets. */
async function fetchAll(via, n, opts = {}) {
  let last;
  await waitFor(async () => {
    last = await call(via, "fetch-sockets", opts);
    return last.length === n;
  }, 3000).catch(() => {
    throw new Error(`expected ${n} sockets, cluster has ${JSON.stringify(last)}`);
  });
  return last.sort(byId);
}

async function named(promise, name) {
  const s = await promise;
  s.name = name;
  return s;
}

function useCluster(workers) {
  const ctx = { cluster: null };
  before(async () => {
    ctx.cluster = await startCluster({ workers });
  }, HOOK);
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    if (!ctx.cluster) return;
    const res = await ctx.cluster.stop("SIGTERM", 5000);
    assert.deepEqual(res, { code: 0, signal: null, killed: false },
      `primary did not exit 0 on SIGTERM; stderr:\n${ctx.cluster.log().slice(-3000)}`);
  }, HOOK);
  return ctx;
}

describe("cluster: 3 workers", { skip }, () => {
  const ctx = useCluster(3);
  // c0 and c0b on worker 0, c1 on worker 1, c2 on worker 2; mixed transports.
  let c0, c0b, c1, c2, all;

  beforeEach(async () => {
    const cl = ctx.cluster;
    [c0, c0b, c1, c2] = await Promise.all([
      named(connectWorker(cl, 0), "c0"),
      named(connectWorker(cl, 0, { transports: ["websocket"] }), "c0b"),
      named(connectWorker(cl, 1, { transports: ["polling"] }), "c1"),
      named(connectWorker(cl, 2), "c2"),
    ]);
    all = [c0, c0b, c1, c2];
    // the sockets of the previous test must be gone everywhere
    await fetchAll(c1, 4);
  }, HOOK);

  it("each port is served by its worker; server-count is 3 on every worker", T, async () => {
    for (const [c, w] of [[c0, 0], [c0b, 0], [c1, 1], [c2, 2]]) {
      assert.equal(await call(c, "worker"), w);
      assert.equal(await call(c, "server-count"), 3);
    }
  });

  it("broadcast to all reaches the clients of every worker (no offset argument)", T, async () => {
    const args = [1, "2", { three: [3] }, null];
    for (const sender of [c1, c2, c0]) {
      const got = await delivered(all, sender, "hello", async () => {
        assert.equal(await call(sender, "broadcast", { event: "hello", args }), "ok");
      });
      assert.deepEqual(got, only(all, all, args), `sent from ${sender.name}`);
    }
  });

  it("broadcast to a room reaches its members on every worker, nobody else", T, async () => {
    await call(c0b, "join", "r");
    await call(c2, "join", "r");
    const got = await delivered(all, c1, "to-room", async () => {
      await call(c1, "broadcast", { event: "to-room", args: ["x"], to: ["r"] });
    });
    assert.deepEqual(got, only(all, [c0b, c2], ["x"]));
  });

  it("broadcast to two rooms: a client in both gets one copy", T, async () => {
    await call(c2, "join", ["a", "b"]);
    await call(c0, "join", "a");
    await call(c1, "join", "b");
    const got = await delivered(all, c1, "two-rooms", async () => {
      await call(c1, "broadcast", { event: "two-rooms", args: [2], to: ["a", "b"] });
    });
    assert.deepEqual(got, only(all, [c0, c1, c2], [2]));
  });

  it("broadcast except a room, and to a room except another, on every worker", T, async () => {
    await call(c0b, "join", ["x", "r"]);
    await call(c2, "join", "x");
    await call(c1, "join", "r");
    await call(c0, "join", "r");
    let got = await delivered(all, c1, "except", async () => {
      await call(c1, "broadcast", { event: "except", args: ["e"], except: ["x"] });
    });
    assert.deepEqual(got, only(all, [c0, c1], ["e"]));
    got = await delivered(all, c2, "to-except", async () => {
      await call(c2, "broadcast", { event: "to-except", args: ["te"], to: ["r"], except: ["x"] });
    });
    assert.deepEqual(got, only(all, [c0, c1], ["te"]));
  });

  it("local broadcast reaches only the clients of the emitting worker", T, async () => {
    let got = await delivered(all, c0, "local", async () => {
      await call(c0, "broadcast", { event: "local", args: ["w0"], local: true });
    });
    assert.deepEqual(got, only(all, [c0, c0b], ["w0"]));
    got = await delivered(all, c1, "local", async () => {
      await call(c1, "broadcast", { event: "local", args: ["w1"], local: true });
    });
    assert.deepEqual(got, only(all, [c1], ["w1"]));
    // local + room: members of the room on the emitting worker only
    await call(c0b, "join", "lr");
    await call(c2, "join", "lr");
    got = await delivered(all, c2, "local", async () => {
      await call(c2, "broadcast", { event: "local", args: ["w2"], local: true, to: ["lr"] });
    });
    assert.deepEqual(got, only(all, [c2], ["w2"]));
  });

  it("socket.broadcast excludes the sender only, on every worker", T, async () => {
    let got = await delivered(all, c1, "others", async () => {
      await call(c1, "broadcast", { event: "others", args: ["o"], broadcast: true });
    });
    assert.deepEqual(got, only(all, [c0, c0b, c2], ["o"]));
    // sender on worker 0: its neighbour on worker 0 still gets it
    got = await delivered(all, c0, "others", async () => {
      await call(c0, "broadcast", { event: "others", args: ["o2"], broadcast: true });
    });
    assert.deepEqual(got, only(all, [c0b, c1, c2], ["o2"]));
    // socket.broadcast.to(room): the sender is excluded even though it is a member
    await call(c2, "join", "br");
    await call(c0b, "join", "br");
    got = await delivered(all, c2, "others", async () => {
      await call(c2, "broadcast", { event: "others", args: ["o3"], broadcast: true, to: ["br"] });
    });
    assert.deepEqual(got, only(all, [c0b], ["o3"]));
  });

  it("broadcast with acks: one response from each client of every worker", T, async () => {
    for (const c of all) c.on("ask", (q, cb) => cb(`${c.name}:${q}`));
    const started = Date.now();
    const res = await call(c2, "broadcast-with-ack", { event: "ask", args: ["q"], timeout: 3000 });
    assert.equal(res.err, null);
    assert.deepEqual(sorted(res.responses), sorted(all.map((c) => `${c.name}:q`)));
    assert.ok(Date.now() - started < 2500, "completed as soon as every client answered");
    // to a room spanning workers
    await call(c0b, "join", "ar");
    await call(c1, "join", "ar");
    const inRoom = await call(c0, "broadcast-with-ack", { event: "ask", args: ["r"], to: ["ar"], timeout: 3000 });
    assert.deepEqual(inRoom, { err: null, responses: sorted(["c0b:r", "c1:r"]) }, JSON.stringify(inRoom));
  });

  it("broadcast with acks: a client that does not ack → 'operation has timed out' with the others' responses", T, async () => {
    for (const c of [c0, c0b, c1]) c.on("ask", (q, cb) => cb(c.name));
    c2.on("ask", () => {}); // never acks
    const started = Date.now();
    const res = await call(c1, "broadcast-with-ack", { event: "ask", args: ["q"], timeout: 800 });
    const elapsed = Date.now() - started;
    assert.equal(res.err, "operation has timed out");
    assert.deepEqual(sorted(res.responses), ["c0", "c0b", "c1"]);
    assert.ok(elapsed >= 700, `answered after ${elapsed} ms, before the timeout`);
  });

  it("broadcast with acks to an empty room → [] at once", T, async () => {
    const started = Date.now();
    const res = await call(c0, "broadcast-with-ack", { event: "ask", args: [], to: ["nobody"], timeout: 3000 });
    assert.deepEqual(res, { err: null, responses: [] });
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
  });

  it("broadcast with acks: binary responses from other workers arrive as Buffers", T, async () => {
    all.forEach((c, i) => c.on("bin-ask", (b, cb) => cb(Buffer.concat([b, Buffer.from([i])]))));
    const res = await call(c1, "broadcast-with-ack", {
      event: "bin-ask", args: [Buffer.from([0xaa, 0xbb])], timeout: 3000,
    });
    assert.equal(res.err, null);
    assert.equal(res.responses.length, 4);
    for (const r of res.responses) assert.ok(Buffer.isBuffer(r), `not a Buffer: ${JSON.stringify(r)}`);
    assert.deepEqual(
      res.responses.map((b) => [...b]).sort((a, b) => a[2] - b[2]),
      [0, 1, 2, 3].map((i) => [0xaa, 0xbb, i]),
    );
  });

  it("fetch-sockets sees the sockets of every worker with their rooms and data", T, async () => {
    await call(c0, "set-data", { name: "c0", n: 0 });
    await call(c1, "set-data", { name: "c1", list: [1, "2"] });
    await call(c2, "set-data", { name: "c2", nested: { ok: true } });
    await call(c0b, "join", ["f1", "f2"]);
    await call(c2, "join", "f1");
    const expected = [
      { id: c0.id, rooms: [c0.id], data: { name: "c0", n: 0 } },
      { id: c0b.id, rooms: sorted([c0b.id, "f1", "f2"]), data: {} },
      { id: c1.id, rooms: [c1.id], data: { name: "c1", list: [1, "2"] } },
      { id: c2.id, rooms: sorted([c2.id, "f1"]), data: { name: "c2", nested: { ok: true } } },
    ].sort(byId);
    for (const via of [c0, c1, c2]) {
      assert.deepEqual(await fetchAll(via, 4), expected, `fetched from ${via.name}`);
    }
  });

  it("fetch-sockets with an `in` filter, across workers", T, async () => {
    await call(c0b, "join", ["g1"]);
    await call(c1, "join", ["g1", "g2"]);
    await call(c2, "join", ["g2"]);
    const ids = async (rooms) => sorted((await call(c0, "fetch-sockets", { in: rooms })).map((s) => s.id));
    assert.deepEqual(await ids(["g1"]), sorted([c0b.id, c1.id]));
    assert.deepEqual(await ids(["g2"]), sorted([c1.id, c2.id]));
    assert.deepEqual(await ids(["g1", "g2"]), sorted([c0b.id, c1.id, c2.id]));
    assert.deepEqual(await ids([c2.id]), [c2.id]);
    assert.deepEqual(await ids([c0.id, c1.id]), sorted([c0.id, c1.id]));
    assert.deepEqual(await ids(["nobody"]), []);
  });

  it("sockets-join acts on every worker (all, and matching a room)", T, async () => {
    assert.equal(await call(c0, "sockets-join", { rooms: ["j1", "j2"] }), "ok");
    // relayed in order: a broadcast of the same worker right after reaches every joiner
    const got = await delivered(all, c0, "to-j1", async () => {
      await call(c0, "broadcast", { event: "to-j1", args: [], to: ["j1"] });
    });
    assert.deepEqual(got, only(all, all, []));
    const list = await fetchAll(c2, 4, { in: ["j2"] });
    for (const s of list) assert.ok(s.rooms.includes("j1") && s.rooms.includes("j2"), JSON.stringify(s));
    // matching
    await call(c0b, "join", "m");
    await call(c2, "join", "m");
    assert.equal(await call(c1, "sockets-join", { in: ["m"], rooms: ["k"] }), "ok");
    const members = await waitFor(async () => {
      const l = await call(c1, "fetch-sockets", { in: ["k"] });
      return l.length === 2 && l;
    });
    assert.deepEqual(sorted(members.map((s) => s.id)), sorted([c0b.id, c2.id]));
  });

  it("sockets-leave acts on every worker (all, and matching a room)", T, async () => {
    for (const c of all) await call(c, "join", ["L", "M"]);
    await call(c1, "join", "sel");
    await call(c2, "join", "sel");
    assert.equal(await call(c2, "sockets-leave", { in: ["sel"], rooms: ["L"] }), "ok");
    const left = await waitFor(async () => {
      const l = await call(c0, "fetch-sockets", { in: ["L"] });
      return l.length === 2 && l;
    });
    assert.deepEqual(sorted(left.map((s) => s.id)), sorted([c0.id, c0b.id]));
    assert.equal(await call(c1, "sockets-leave", { rooms: ["L", "M"] }), "ok");
    // in order with a broadcast of the same worker
    const got = await delivered(all, c1, "to-M", async () => {
      await call(c1, "broadcast", { event: "to-M", args: [], to: ["M"] });
    });
    assert.deepEqual(got, only(all, [], []));
    await waitFor(async () => (await call(c0, "fetch-sockets", { in: ["L", "M"] })).length === 0);
    const rooms = (await fetchAll(c0, 4)).map((s) => s.rooms);
    assert.ok(rooms.every((r) => !r.includes("L") && !r.includes("M")), JSON.stringify(rooms));
  });

  it("disconnect-sockets (close false): clients on every worker see 'io server disconnect'", T, async () => {
    const reasons = all.map((c) => once(c, "disconnect", 3000));
    assert.equal(await call(c1, "disconnect-sockets", {}), "ok");
    const got = (await Promise.all(reasons)).map((a) => a[0]);
    assert.deepEqual(got, all.map(() => "io server disconnect"));
  });

  it("disconnect-sockets matching a room: its members on every worker, nobody else", T, async () => {
    await call(c0b, "join", "d");
    await call(c2, "join", "d");
    const gone = [c0b, c2].map((c) => once(c, "disconnect", 3000));
    assert.equal(await call(c1, "disconnect-sockets", { in: ["d"] }), "ok");
    assert.deepEqual((await Promise.all(gone)).map((a) => a[0]), ["io server disconnect", "io server disconnect"]);
    await barrier(c1, [c0, c1]);
    assert.ok(c0.connected && c1.connected);
    const left = await fetchAll(c0, 2);
    assert.deepEqual(sorted(left.map((s) => s.id)), sorted([c0.id, c1.id]));
  });

  it("disconnect-sockets (close true) from another worker closes the whole connection", T, async () => {
    // a connection to worker 2 with two namespaces; only "/" is in the target room
    const m = new Manager(ctx.cluster.urls[2], { reconnection: false, autoConnect: false });
    const root = m.socket("/");
    const custom = m.socket("/custom");
    root.connect();
    custom.connect();
    try {
      await Promise.all([once(root, "connect"), once(custom, "connect")]);
      assert.equal(await call(root, "worker"), 2);
      await call(root, "join", "victim");
      const gone = [once(root, "disconnect", 3000), once(custom, "disconnect", 3000)];
      const closed = once(m, "close", 3000);
      assert.equal(await call(c1, "disconnect-sockets", { in: ["victim"], close: true }), "ok");
      // as with Node's socket.disconnect(true): a DISCONNECT packet per namespace, then the close
      assert.deepEqual((await Promise.all(gone)).map((a) => a[0]), ["io server disconnect", "io server disconnect"]);
      await closed;
      await barrier(c1, all);
      assert.ok(all.every((c) => c.connected));
    } finally {
      root.disconnect();
      custom.disconnect();
    }
  });

  it("server-side-emit: one response from each other worker", T, async () => {
    for (const [c, w] of [[c0, 0], [c1, 1], [c2, 2]]) {
      const res = await call(c, "server-side-emit", { event: "which-worker", args: [], timeout: 2000 });
      assert.equal(res.err, null, JSON.stringify(res));
      assert.deepEqual(numSorted(res.responses), [0, 1, 2].filter((i) => i !== w), `asked from worker ${w}`);
    }
  });

  it("server-side-emit: no worker answers → 'timeout reached: missing 2 responses'", T, async () => {
    const started = Date.now();
    const res = await call(c0, "server-side-emit", { event: "never-answers", args: [], timeout: 500 });
    const elapsed = Date.now() - started;
    assert.deepEqual(res, { err: "timeout reached: missing 2 responses", responses: [] });
    assert.ok(elapsed >= 400, `answered after ${elapsed} ms, before the timeout`);
  });

  it("server-side-emit: worker 0 silent, asked from worker 2 → its timeout names 1 missing response", T, async () => {
    const res = await call(c2, "server-side-emit", { event: "all-but-worker-0", args: [], timeout: 500 });
    assert.equal(res.err, "timeout reached: missing 1 responses");
    // asked from worker 0: both others answer
    const ok = await call(c0, "server-side-emit", { event: "all-but-worker-0", args: [], timeout: 2000 });
    assert.deepEqual({ err: ok.err, responses: numSorted(ok.responses) }, { err: null, responses: [1, 2] });
  });

  it("server-side-emit: a timeout keeps the partial responses (all-but-worker-0 from worker 1 → [2])", T, async () => {
    const res = await call(c1, "server-side-emit", { event: "all-but-worker-0", args: [], timeout: 500 });
    assert.deepEqual(res, { err: "timeout reached: missing 1 responses", responses: [2] });
  });

  it("binary payloads across workers: a Buffer arrives as a Buffer", T, async () => {
    const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
    const args = [bytes, { nested: [Buffer.from("é", "utf8")], n: 1 }, "text"];
    const got = await delivered(all, c0, "bin", async () => {
      await call(c0, "broadcast", { event: "bin", args });
    });
    for (const c of all) {
      assert.equal(got[c.name].length, 1, `${c.name} got ${got[c.name].length} copies`);
      const [b, obj, text] = got[c.name][0];
      assert.ok(Buffer.isBuffer(b), `${c.name}: first arg is not a Buffer`);
      assert.deepEqual([...b], [...bytes]);
      assert.ok(Buffer.isBuffer(obj.nested[0]), `${c.name}: nested arg is not a Buffer`);
      assert.equal(obj.nested[0].toString("utf8"), "é");
      assert.equal(obj.n, 1);
      assert.equal(text, "text");
    }
  });
});

describe("cluster: 2 workers", { skip }, () => {
  const ctx = useCluster(2);
  let a, b, all;

  beforeEach(async () => {
    [a, b] = await Promise.all([
      named(connectWorker(ctx.cluster, 0), "a"),
      named(connectWorker(ctx.cluster, 1), "b"),
    ]);
    all = [a, b];
    await fetchAll(a, 2);
  }, HOOK);

  it("cross-site requests are refused by default (CSWSH); same-origin pages and non-browsers pass", T, async () => {
    const port = ctx.cluster.ports[1];
    // status and body of a GET to worker 1 with these headers (raw, so Origin is ours to set)
    const get = (path, headers) => new Promise((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path, headers }, (res) => {
        let body = "";
        res.on("data", (d) => { body += d; });
        res.on("end", () => resolve({ status: res.statusCode, body }));
      });
      req.on("upgrade", (res, socket) => { socket.destroy(); resolve({ status: res.statusCode, body: "" }); });
      req.on("error", reject);
    });
    const polling = "/socket.io/?EIO=4&transport=polling";
    const ws = {
      Connection: "Upgrade", Upgrade: "websocket",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
    };
    const forbidden = { status: 403, body: '{"code":4,"message":"Forbidden"}' };
    assert.deepEqual(await get(polling, { Origin: "http://evil.example" }), forbidden);
    assert.deepEqual(
      await get("/socket.io/?EIO=4&transport=websocket", { ...ws, Origin: "http://evil.example" }), forbidden);
    // another worker's port is another origin too
    const other = `http://127.0.0.1:${ctx.cluster.ports[0]}`;
    assert.deepEqual(await get(polling, { Origin: other }), forbidden);
    assert.equal((await get(polling, { Origin: `http://127.0.0.1:${port}` })).status, 200);
    assert.equal((await get(polling, {})).status, 200);
    assert.equal(
      (await get("/socket.io/?EIO=4&transport=websocket", { ...ws, Origin: `http://127.0.0.1:${port}` })).status, 101);
  });

  it("server-count is 2 on both workers", T, async () => {
    assert.equal(await call(a, "server-count"), 2);
    assert.equal(await call(b, "server-count"), 2);
  });

  it("broadcast to all, to a room and socket.broadcast span both workers", T, async () => {
    let got = await delivered(all, a, "all", async () => {
      await call(a, "broadcast", { event: "all", args: ["x", 1] });
    });
    assert.deepEqual(got, only(all, all, ["x", 1]));
    await call(b, "join", "r");
    got = await delivered(all, a, "room", async () => {
      await call(a, "broadcast", { event: "room", args: [], to: ["r"] });
    });
    assert.deepEqual(got, only(all, [b], []));
    got = await delivered(all, b, "others", async () => {
      await call(b, "broadcast", { event: "others", args: [true], broadcast: true });
    });
    assert.deepEqual(got, only(all, [a], [true]));
  });

  it("broadcast with acks collects both workers' responses", T, async () => {
    for (const c of all) c.on("ask", (cb) => cb(c.name));
    const res = await call(b, "broadcast-with-ack", { event: "ask", args: [], timeout: 3000 });
    assert.equal(res.err, null);
    assert.deepEqual(sorted(res.responses), ["a", "b"]);
  });

  it("fetch-sockets lists the sockets of both workers", T, async () => {
    await call(b, "set-data", { who: "b" });
    await call(a, "join", "z");
    assert.deepEqual(await fetchAll(b, 2), [
      { id: a.id, rooms: sorted([a.id, "z"]), data: {} },
      { id: b.id, rooms: [b.id], data: { who: "b" } },
    ].sort(byId));
  });

  it("server-side-emit: the other worker answers; timeouts name 1 missing response", T, async () => {
    assert.deepEqual(await call(a, "server-side-emit", { event: "which-worker", args: [], timeout: 2000 }),
      { err: null, responses: [1] });
    assert.deepEqual(await call(b, "server-side-emit", { event: "which-worker", args: [], timeout: 2000 }),
      { err: null, responses: [0] });
    assert.deepEqual(await call(a, "server-side-emit", { event: "never-answers", args: [], timeout: 400 }),
      { err: "timeout reached: missing 1 responses", responses: [] });
    assert.deepEqual(await call(b, "server-side-emit", { event: "all-but-worker-0", args: [], timeout: 400 }),
      { err: "timeout reached: missing 1 responses", responses: [] });
    assert.deepEqual(await call(a, "server-side-emit", { event: "all-but-worker-0", args: [], timeout: 2000 }),
      { err: null, responses: [1] });
  });

  it("disconnect-sockets from one worker disconnects the other worker's clients too", T, async () => {
    const gone = all.map((c) => once(c, "disconnect", 3000));
    await call(a, "disconnect-sockets", {});
    assert.deepEqual((await Promise.all(gone)).map((x) => x[0]), ["io server disconnect", "io server disconnect"]);
  });
});
