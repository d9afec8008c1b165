// Interest-based relay (`interop --cluster --workers 3`): the primary relays an
// operation aimed at rooms only to the workers that have members of them.
// Workers report a room when its first socket joins and when its last socket
// leaves (or disconnects); a worker's death forgets its rooms.
//
// What a worker was sent is read from its `GET /stats` (`relayed`: operations of
// other workers relayed to it). A probe broadcast to a room that the observed
// worker does have comes after the operations under test from the same worker,
// and the primary keeps each worker's order, so once the probe has arrived,
// anything relayed before it has been counted.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startCluster, connectWorker, clusterSkipReason, closeAll, call, once, waitFor,
} from "./harness.mjs";

const T = { timeout: 15000 };
const HOOK = { timeout: 30000 };

async function stats(cluster, i) {
  const res = await fetch(`${cluster.urls[i]}/stats`);
  return res.json();
}

let seq = 0;
const fresh = (name) => `${name}-${++seq}`;

/** Resolves with the arguments of the next `event` whose first argument is `token`. */
function waitToken(socket, event, token, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`did not receive ${event} ${token} within ${ms} ms`));
    }, ms);
    function handler(first, ...rest) {
      if (first !== token) return;
      clearTimeout(timer);
      socket.off(event, handler);
      resolve([first, ...rest]);
    }
    socket.on(event, handler);
  });
}

describe("interest-based relay", { skip: clusterSkipReason() }, () => {
  let cluster;
  // a: worker 0 (the sender); b: worker 1; c: worker 2, always in room `probe-c`.
  let a;
  let b;
  let c;
  before(async () => {
    cluster = await startCluster({ workers: 3 });
    a = await connectWorker(cluster, 0);
    b = await connectWorker(cluster, 1);
    c = await connectWorker(cluster, 2);
    await call(c, "join", "probe-c");
  }, HOOK);
  after(async () => {
    closeAll();
    if (cluster) assert.equal((await cluster.stop()).code, 0);
  }, HOOK);

  /** Operations relayed to worker 2 while `action` runs (closed by a probe). */
  async function relayedToC(action) {
    const before = (await stats(cluster, 2)).relayed;
    await action();
    const token = fresh("probe");
    const got = waitToken(c, "probe", token);
    await call(a, "broadcast", { event: "probe", args: [token], to: ["probe-c"] });
    await got;
    return (await stats(cluster, 2)).relayed - before - 1;
  }

  it("a room broadcast reaches only the workers with members", T, async () => {
    const room = fresh("only-b");
    await call(b, "join", room);
    const seen = [];
    b.on("news", (x) => seen.push(x));
    const extra = await relayedToC(async () => {
      for (let i = 0; i < 20; i++) {
        await call(a, "broadcast", { event: "news", args: [i], to: [room] });
      }
      await waitFor(() => seen.length === 20);
    });
    assert.equal(extra, 0, "worker 2 has no member of the room and was sent nothing");
    assert.deepEqual(seen, [...Array(20).keys()]);
    b.off("news");
    // A broadcast to everyone still reaches every worker.
    const all = await relayedToC(async () => {
      const token = fresh("all");
      const got = waitToken(c, "hello", token);
      await call(a, "broadcast", { event: "hello", args: [token] });
      await got;
    });
    assert.equal(all, 1);
  });

  it("interest appears with the first socket and goes with the last (leave and disconnect)", T, async () => {
    const room = fresh("come-and-go");
    await call(c, "join", room);
    const token = fresh("in");
    const got = waitToken(c, "news", token);
    const joined = await relayedToC(async () => {
      await call(a, "broadcast", { event: "news", args: [token], to: [room] });
      await got;
    });
    assert.equal(joined, 1);
    await call(c, "leave", room);
    const left = await relayedToC(async () => {
      await call(a, "broadcast", { event: "news", args: ["nobody"], to: [room] });
    });
    assert.equal(left, 0, "the last socket left: the room is gone from worker 2");

    const other = await connectWorker(cluster, 2);
    const room2 = fresh("disconnects");
    await call(other, "join", room2);
    await call(c, "join", room2);
    await call(c, "leave", room2);
    const stillOne = await relayedToC(async () => {
      const t = fresh("still");
      const g = waitToken(other, "news", t);
      await call(a, "broadcast", { event: "news", args: [t], to: [room2] });
      await g;
    });
    assert.equal(stillOne, 1, "one member left: the room stays");
    other.disconnect();
    await waitFor(async () => (await stats(cluster, 2)).sockets === 1);
    const gone = await relayedToC(async () => {
      await call(a, "broadcast", { event: "news", args: ["nobody"], to: [room2] });
    });
    assert.equal(gone, 0, "the last member disconnected");
  });

  it("a join that has returned is seen by a broadcast from another worker", T, async () => {
    // The join's report reaches the primary before the client hears back, so
    // any broadcast it causes afterwards, on any worker, finds it.
    for (let i = 0; i < 100; i++) {
      const room = fresh("race");
      const member = i % 2 ? b : c;
      await call(member, "join", room);
      const got = waitToken(member, "race", room, 2000);
      await call(a, "broadcast", { event: "race", args: [room], to: [room] });
      await got;
      await call(member, "leave", room);
    }
  });

  it("except, several rooms and socket ids", T, async () => {
    const room = fresh("mixed");
    const other = fresh("other");
    await call(b, "join", room);
    await call(c, "join", [room, other]);
    const recv = { b: [], c: [] };
    b.on("m", (x) => recv.b.push(x));
    c.on("m", (x) => recv.c.push(x));
    // except the other room: c is excluded, b gets it
    await call(a, "broadcast", { event: "m", args: [1], to: [room], except: [other] });
    // two rooms: each member once
    await call(a, "broadcast", { event: "m", args: [2], to: [room, other] });
    // a socket's id is its own room, on whatever worker it is
    await call(a, "broadcast", { event: "m", args: [3], to: [c.id] });
    await waitFor(() => recv.b.length === 2 && recv.c.length === 2);
    assert.deepEqual(recv.b, [1, 2]);
    assert.deepEqual(recv.c, [2, 3]);
    b.off("m");
    c.off("m");
  });

  it("fetchSockets and acked broadcasts ask only the workers with members and answer at once", T, async () => {
    const room = fresh("fetch");
    await call(b, "join", room);
    const extra = await relayedToC(async () => {
      const list = await call(a, "fetch-sockets", { in: [room] });
      assert.deepEqual(list.map((s) => s.id), [b.id]);
      const none = await call(a, "fetch-sockets", { in: [fresh("empty")] });
      assert.deepEqual(none, []);
      b.once("ask", (cb) => cb("yes"));
      const started = Date.now();
      const res = await call(a, "broadcast-with-ack", { event: "ask", to: [room], timeout: 5000 });
      assert.equal(res.err, null);
      assert.deepEqual(res.responses, ["yes"]);
      assert.ok(Date.now() - started < 2000, "nobody waited for the workers without members");
    });
    assert.equal(extra, 0);
  });

  it("a dead worker's rooms are forgotten; its successor starts with none", { timeout: 30000 }, async () => {
    const room = fresh("dies");
    const victim = await connectWorker(cluster, 2);
    await call(victim, "join", room);
    const pid = cluster.pids.get(2);
    const from = cluster.log().length;
    const gone = once(victim, "disconnect");
    process.kill(pid, "SIGKILL");
    await gone;
    victim.io.opts.reconnection = false;
    victim.disconnect();
    await cluster.waitForLog(/worker 2 \(pid \d+\) listening/, 15000, from);
    c = await connectWorker(cluster, 2);
    await call(c, "join", "probe-c");
    const extra = await relayedToC(async () => {
      await call(a, "broadcast", { event: "news", args: ["x"], to: [room] });
    });
    assert.equal(extra, 0);
  });
});
