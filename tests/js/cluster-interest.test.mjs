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
  workerStats as stats, waitToken,
} from "./harness.mjs";

const T = { timeout: 15000 };
const HOOK = { timeout: 30000 };

let seq = 0;
const fresh = (name) => `${name}-${++seq}`;

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

  it("a broadcast to rooms that no other worker has never leaves its worker", T, async () => {
    // keptLocal: room broadcasts of worker 0 that the interest hints kept there.
    const kept = async () => (await stats(cluster, 0)).keptLocal;
    const mine = fresh("mine");
    await call(a, "join", mine);
    const seen = [];
    a.on("local", (x) => seen.push(x));
    const before = await kept();
    const extra = await relayedToC(async () => {
      for (let i = 0; i < 10; i++) {
        await call(a, "broadcast", { event: "local", args: [i], to: [mine] });
      }
      // Nobody anywhere: nothing to send either.
      await call(a, "broadcast", { event: "local", args: ["x"], to: [fresh("nobody")] });
      await waitFor(() => seen.length === 10);
    });
    assert.equal(extra, 0);
    assert.equal((await kept()) - before, 11, "none of them went to the primary");
    assert.deepEqual(seen, [...Array(10).keys()]);
    a.off("local");
    // A room another worker has too goes through the primary, and arrives.
    await call(b, "join", mine);
    const token = fresh("shared");
    const got = waitToken(b, "local", token);
    const k = await kept();
    await call(a, "broadcast", { event: "local", args: [token], to: [mine] });
    await got;
    assert.equal(await kept(), k, "b's member sends it through the primary");
    // ... until b's last member leaves.
    await call(b, "leave", mine);
    await call(a, "broadcast", { event: "local", args: ["alone-again"], to: [mine] });
    assert.equal(await kept(), k + 1);
    await call(a, "leave", mine);
  });

  it("a join that has returned is seen by an emitter that has members too", T, async () => {
    // The emitter's own members of the room must not hide the other worker's.
    for (let i = 0; i < 100; i++) {
      const room = fresh("race-own");
      const member = i % 2 ? b : c;
      await call(a, "join", room);
      await call(member, "join", room);
      const got = waitToken(member, "race", room, 2000);
      await call(a, "broadcast", { event: "race", args: [room], to: [room] });
      await got;
      await call(member, "leave", room);
      await call(a, "leave", room);
    }
  });

  it("after socketsJoin from a worker, its emits reach the sockets it joined elsewhere", T, async () => {
    for (let i = 0; i < 20; i++) {
      const from = fresh("sj-from");
      const to = fresh("sj-to");
      const member = i % 2 ? b : c;
      await call(member, "join", from);
      await call(a, "sockets-join", { in: [from], rooms: [to] });
      const got = waitToken(member, "joined", to, 2000);
      await call(a, "broadcast", { event: "joined", args: [to], to: [to] });
      await got;
      await call(member, "leave", from);
      await call(member, "leave", to);
    }
  });

  it("the same room name in two namespaces is two interests", T, async () => {
    const second = (i) => connectWorker({ ...cluster, urls: cluster.urls.map((u) => `${u}/second`) }, i);
    const room = fresh("same-name");
    const a2 = await second(0);
    const c2 = await second(2);
    await call(b, "join", room);
    await call(c2, "join", room);
    // "/" room: worker 2 has none of it (its member is in /second).
    const inRoot = await relayedToC(async () => {
      const token = fresh("root");
      const got = waitToken(b, "ns", token);
      await call(a, "broadcast", { event: "ns", args: [token], to: [room] });
      await got;
    });
    assert.equal(inRoot, 0, "worker 2 has the name only in /second");
    // "/second" room: worker 2 has it, worker 1 not.
    const beforeB = (await stats(cluster, 1)).relayed;
    const inSecond = await relayedToC(async () => {
      const token = fresh("second");
      const got = waitToken(c2, "ns", token);
      await call(a2, "broadcast", { event: "ns", args: [token], to: [room] });
      await got;
    });
    assert.equal(inSecond, 1);
    // Worker 1 was sent nothing of /second (a probe of its own closes the window).
    const token = fresh("probe-b");
    const got = waitToken(b, "ns", token);
    await call(a, "broadcast", { event: "ns", args: [token], to: [room] });
    await got;
    assert.equal((await stats(cluster, 1)).relayed - beforeB, 1, "only the probe");
    await call(b, "leave", room);
    a2.disconnect();
    c2.disconnect();
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
