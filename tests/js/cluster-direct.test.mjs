// Direct links (`interop --cluster --workers 3`, no recovery): a worker's
// broadcasts that need no sequencing go straight to the worker processes with
// recipients, not through the primary.
//
// What went where is read from each worker's `GET /stats`: `relayed` counts the
// operations of other workers that reached it by any path, `directIn` those
// that came straight from the emitting worker, `directOut` the frames a worker
// wrote to its links (one per receiving process), `keptLocal` the room
// broadcasts that never left it. `relayed - directIn` is what the primary relayed.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startCluster, connectWorker, clusterSkipReason, closeAll, call, once, waitFor, sleep,
  workerStats as stats, waitToken,
} from "./harness.mjs";

const T = { timeout: 20000 };
const HOOK = { timeout: 30000 };

let seq = 0;
const fresh = (name) => `${name}-${++seq}`;

/** What reached worker `i` while `action` ran: by any path, straight, via the primary. */
async function received(cluster, i, action) {
  const before = await stats(cluster, i);
  await action();
  const after = await stats(cluster, i);
  const any = after.relayed - before.relayed;
  const direct = after.directIn - before.directIn;
  return { any, direct, primary: any - direct };
}

describe("direct links between workers", { skip: clusterSkipReason() }, () => {
  let cluster;
  // a: worker 0 (the sender); b: worker 1; c: worker 2.
  let a;
  let b;
  let c;
  before(async () => {
    cluster = await startCluster({ workers: 3 });
    a = await connectWorker(cluster, 0);
    b = await connectWorker(cluster, 1);
    c = await connectWorker(cluster, 2);
  }, HOOK);
  after(async () => {
    closeAll();
    if (cluster) assert.equal((await cluster.stop()).code, 0);
  }, HOOK);

  it("a spread room's broadcasts go straight to the workers with members; the primary relays none", T, async () => {
    const room = fresh("spread");
    await call(b, "join", room);
    await call(c, "join", room);
    const seen = { b: [], c: [] };
    b.on("spread", (x) => seen.b.push(x));
    c.on("spread", (x) => seen.c.push(x));
    const out0 = (await stats(cluster, 0)).directOut;
    let onC;
    const onB = await received(cluster, 1, async () => {
      onC = await received(cluster, 2, async () => {
        for (let i = 0; i < 20; i++) {
          await call(a, "broadcast", { event: "spread", args: [i], to: [room] });
        }
        await waitFor(() => seen.b.length === 20 && seen.c.length === 20);
      });
    });
    assert.deepEqual(seen.b, [...Array(20).keys()]);
    assert.deepEqual(seen.c, [...Array(20).keys()]);
    assert.deepEqual(onB, { any: 20, direct: 20, primary: 0 }, "worker 1: every broadcast came straight");
    assert.deepEqual(onC, { any: 20, direct: 20, primary: 0 }, "worker 2: every broadcast came straight");
    assert.equal((await stats(cluster, 0)).directOut - out0, 40, "worker 0 wrote each to two links");
    b.off("spread");
    c.off("spread");

    // To everyone, and to a socket id: straight too.
    const all = await received(cluster, 1, async () => {
      const token = fresh("all");
      const got = waitToken(b, "hello", token);
      await call(a, "broadcast", { event: "hello", args: [token] });
      await got;
      const mine = fresh("sid");
      const gotSid = waitToken(b, "hello", mine);
      await call(a, "broadcast", { event: "hello", args: [mine], to: [b.id] });
      await gotSid;
    });
    assert.deepEqual(all, { any: 2, direct: 2, primary: 0 });

    // An acked broadcast goes straight too (its answers come back over the link).
    await call(c, "leave", room);
    const acked = await received(cluster, 1, async () => {
      b.once("ask", (cb) => cb("yes"));
      const res = await call(a, "broadcast-with-ack", { event: "ask", to: [room], timeout: 5000 });
      assert.deepEqual(res.responses.sort(), ["yes"]);
    });
    assert.deepEqual(acked, { any: 1, direct: 1, primary: 0 });
    await call(b, "leave", room);
  });

  it("one sender's broadcasts to a room and to everyone arrive in order", T, async () => {
    const room = fresh("order");
    await call(b, "join", room);
    const got = [];
    b.on("n", (i) => got.push(i));
    const r = await received(cluster, 1, async () => {
      // All 200 in flight at once: the worker emits them in the order sent.
      const acks = [];
      for (let i = 0; i < 200; i++) {
        const to = i % 2 ? [] : [room];
        acks.push(call(a, "broadcast", { event: "n", args: [i], to }));
      }
      await Promise.all(acks);
      await waitFor(() => got.length === 200, 8000);
    });
    b.off("n");
    assert.deepEqual(got, [...Array(200).keys()]);
    assert.equal(r.direct, 200, "all of them came straight");
    await call(b, "leave", room);
  });

  it("a socketsLeave or disconnectSockets keeps ahead of the sender's next broadcasts to those rooms", T, async () => {
    for (let i = 0; i < 30; i++) {
      const room = fresh("leave-first");
      await call(b, "join", room);
      const late = [];
      const handler = (x) => late.push(x);
      b.on("after-leave", handler);
      // Sent together: the leave goes through the primary, the broadcast may not overtake it.
      const leave = call(a, "sockets-leave", { in: [room], rooms: [room] });
      const cast = call(a, "broadcast", { event: "after-leave", args: [room], to: [room] });
      await Promise.all([leave, cast]);
      // A probe from the same sender through the same path closes the window.
      const probe = fresh("probe");
      const gotProbe = waitToken(b, "after-leave", probe);
      await call(a, "broadcast", { event: "after-leave", args: [probe], to: [b.id] });
      await gotProbe;
      b.off("after-leave", handler);
      assert.deepEqual(late.filter((x) => x === room), [], `round ${i}: the broadcast overtook the leave`);
    }
    for (let i = 0; i < 10; i++) {
      const room = fresh("disconnect-first");
      const doomed = await connectWorker(cluster, 1);
      doomed.io.opts.reconnection = false;
      await call(doomed, "join", room);
      const late = [];
      doomed.on("after-disconnect", (x) => late.push(x));
      const closed = once(doomed, "disconnect");
      const kick = call(a, "disconnect-sockets", { in: [room] });
      const cast = call(a, "broadcast", { event: "after-disconnect", args: [room], to: [room] });
      await Promise.all([kick, cast, closed]);
      assert.deepEqual(late, [], `round ${i}: the broadcast overtook the disconnect`);
    }
  });

  it("a socketsJoin, socketsLeave or disconnectSockets forces its rooms through the primary only until every worker handled it", T, async (t) => {
    /** Broadcasts from worker 0 to `room` until one reaches worker 1 straight; the tries it took. */
    const untilStraight = async (room, target, event) => {
      for (let tries = 1; tries <= 40; tries++) {
        const token = fresh(event);
        const r = await received(cluster, 1, async () => {
          const got = waitToken(target, event, token);
          await call(a, "broadcast", { event, args: [token], to: [room] });
          await got;
        });
        if (r.direct === 1 && r.primary === 0) return tries;
        await sleep(25);
      }
      assert.fail(`worker 0's broadcasts to ${room} still go through the primary after 40 tries`);
    };

    // Worker 0 joins b (worker 1) to a room: its next broadcast reaches b at once
    // (through the primary), and once worker 1 has handled the join, they go straight.
    const joined = fresh("joined");
    await call(a, "sockets-join", { in: [b.id], rooms: [joined] });
    const first = fresh("j");
    const got = waitToken(b, "joined", first);
    await call(a, "broadcast", { event: "joined", args: [first], to: [joined] });
    await got;
    const tries = await untilStraight(joined, b, "joined");
    t.diagnostic(`straight again after ${tries} tries`);

    // A leave of a room worker 1 had: once handled, worker 0's broadcasts to
    // it never leave worker 0 (nobody else has it), instead of going through the primary.
    const kept = async () => (await stats(cluster, 0)).keptLocal;
    await call(a, "sockets-leave", { in: [b.id], rooms: [joined] });
    await waitFor(async () => {
      const k = await kept();
      await call(a, "broadcast", { event: "joined", args: ["nobody"], to: [joined] });
      return (await kept()) === k + 1;
    }, 5000, 25);

    // A disconnect of a room's sockets: the same.
    const doomedRoom = fresh("doomed");
    const doomed = await connectWorker(cluster, 1);
    doomed.io.opts.reconnection = false;
    await call(doomed, "join", doomedRoom);
    const closed = once(doomed, "disconnect");
    await call(a, "disconnect-sockets", { in: [doomedRoom] });
    await closed;
    await waitFor(async () => {
      const k = await kept();
      await call(a, "broadcast", { event: "x", args: [1], to: [doomedRoom] });
      return (await kept()) === k + 1;
    }, 5000, 25);
  });

  it("a killed worker's successor gets links, and its dead lane is cleared", { timeout: 40000 }, async () => {
    const only = fresh("only-victim");
    const victim = await connectWorker(cluster, 2);
    await call(victim, "join", only);
    const kept = async () => (await stats(cluster, 0)).keptLocal;
    const k0 = await kept();
    await call(a, "broadcast", { event: "x", args: [1], to: [only] });
    assert.equal(await kept(), k0, "worker 2 has a member: the broadcast left worker 0");

    const pid = cluster.pids.get(2);
    const from = cluster.log().length;
    const gone = once(victim, "disconnect");
    process.kill(pid, "SIGKILL");
    await gone;
    victim.io.opts.reconnection = false;
    victim.disconnect();
    await cluster.waitForLog(/worker 2 \(pid \d+\) listening/, 15000, from);

    // The room only the dead process had is local-only again (no leaked bit).
    const k1 = await kept();
    await call(a, "broadcast", { event: "x", args: [2], to: [only] });
    assert.equal(await kept(), k1 + 1, "the dead process's lane was cleared");

    // The successor's sockets get broadcasts straight from the others, and its own reach them.
    c = await connectWorker(cluster, 2);
    const room = fresh("after-restart");
    await call(c, "join", room);
    await call(b, "join", room);
    const r = await received(cluster, 2, async () => {
      const token = fresh("to-new");
      const got = waitToken(c, "fresh", token);
      await call(a, "broadcast", { event: "fresh", args: [token], to: [room] });
      await got;
    });
    assert.deepEqual(r, { any: 1, direct: 1, primary: 0 });
    const back = await received(cluster, 1, async () => {
      const token = fresh("from-new");
      const got = waitToken(b, "fresh", token);
      await call(c, "broadcast", { event: "fresh", args: [token], to: [room] });
      await got;
    });
    assert.deepEqual(back, { any: 1, direct: 1, primary: 0 });
    await call(b, "leave", room);
  });

  describe("acked broadcasts over the direct links", () => {
    // On the same cluster, with clients of their own: a: worker 0 (the emitter); b: worker 1; c: worker 2.
    let a;
    let b;
    let c;
    const sorted = (xs) => [...xs].sort();
    /** `directAnswers` of worker 0 (answers that came straight back) while `action` ran. */
    async function answersBack(action) {
      const before = (await stats(cluster, 0)).directAnswers;
      const out = await action();
      return { out, answers: (await stats(cluster, 0)).directAnswers - before };
    }
    before(async () => {
      a = await connectWorker(cluster, 0);
      b = await connectWorker(cluster, 1);
      c = await connectWorker(cluster, 2);
      for (const [s, name] of [[b, "b"], [c, "c"]]) s.on("ask", (q, cb) => cb(`${name}:${q}`));
    }, HOOK);
    it("to a room on workers 1 and 2: straight there, every ack straight back; the primary relays nothing", T, async () => {
      const room = fresh("acked-spread");
      await call(b, "join", room);
      await call(c, "join", room);
      let onC;
      let back;
      const onB = await received(cluster, 1, async () => {
        onC = await received(cluster, 2, async () => {
          back = await answersBack(() =>
            call(a, "broadcast-with-ack", { event: "ask", args: ["q"], to: [room], timeout: 3000 }));
        });
      });
      assert.deepEqual({ ...back.out, responses: sorted(back.out.responses) }, { err: null, responses: ["b:q", "c:q"] });
      assert.deepEqual(onB, { any: 1, direct: 1, primary: 0 }, "worker 1: straight");
      assert.deepEqual(onC, { any: 1, direct: 1, primary: 0 }, "worker 2: straight");
      assert.equal(back.answers, 4, "two client counts and two acks, over the links");
    });

    it("to a room only on worker 1: worker 2's process gets nothing", T, async () => {
      const room = fresh("acked-one");
      await call(b, "join", room);
      let onB;
      let back;
      const onC = await received(cluster, 2, async () => {
        onB = await received(cluster, 1, async () => {
          back = await answersBack(() =>
            call(a, "broadcast-with-ack", { event: "ask", args: ["r"], to: [room], timeout: 3000 }));
        });
      });
      assert.deepEqual(back.out, { err: null, responses: ["b:r"] });
      assert.deepEqual(onB, { any: 1, direct: 1, primary: 0 });
      assert.deepEqual(onC, { any: 0, direct: 0, primary: 0 }, "worker 2 reached");
      assert.equal(back.answers, 2, "one count and one ack, over the link");
    });

    it("50 alternating plain and acked broadcasts to a room on worker 1 arrive in emit order", T, async () => {
      const room = fresh("acked-order");
      const d = await connectWorker(cluster, 1);
      await call(d, "join", room);
      const seen = [];
      d.on("ord", (i, cb) => {
        seen.push(i);
        if (typeof cb === "function") cb(i);
      });
      // Emitted back to back, none awaited: the handlers on worker 0 run in order.
      const answers = [];
      for (let i = 0; i < 50; i++) {
        const op = i % 2 === 0 ? "broadcast" : "broadcast-with-ack";
        answers.push(call(a, op, { event: "ord", args: [i], to: [room], timeout: 5000 }));
      }
      const res = await Promise.all(answers);
      await waitFor(() => seen.length >= 50);
      assert.deepEqual(seen, [...Array(50).keys()]);
      res.forEach((r, i) => {
        if (i % 2 === 0) assert.equal(r, "ok");
        else assert.deepEqual(r, { err: null, responses: [i] });
      });
    });

    it("a receiver killed while the emitter waits: its wait ends at once with the acks that came", { timeout: 30000 }, async () => {
      const room = fresh("acked-kill");
      const d = await connectWorker(cluster, 2, { reconnection: false });
      await call(b, "join", room);
      await call(d, "join", room);
      let asked = false;
      d.on("ask", () => { asked = true; }); // never acks
      const pid = cluster.pids.get(2);
      const from = cluster.log().length;
      const pending = call(a, "broadcast-with-ack", { event: "ask", args: ["k"], to: [room], timeout: 10000 });
      await waitFor(() => asked);
      const killedAt = Date.now();
      process.kill(pid, "SIGKILL");
      const res = await pending;
      const took = Date.now() - killedAt;
      // As through the primary: the emit ends, as timed out, with the acks that came.
      assert.deepEqual(res, { err: "operation has timed out", responses: ["b:k"] });
      assert.ok(took < 5000, `the emitter waited ${took} ms after the kill`);
      await cluster.waitForLog(/worker 2 \(pid \d+\) listening/, 15000, from);
    });
  });
});

describe("direct links across a reload", { skip: clusterSkipReason() }, () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ workers: 2 });
  }, HOOK);
  after(async () => {
    closeAll();
    if (cluster) assert.equal((await cluster.stop()).code, 0);
  }, HOOK);

  it("while worker 0 is replaced, its broadcasts keep reaching worker 1, old process and new", { timeout: 60000 }, async () => {
    const sender = await connectWorker(cluster, 0);
    const receiver = await connectWorker(cluster, 1);
    await call(receiver, "join", "reload-room");
    const got = [];
    let receiverUp = true;
    receiver.on("seq", (i) => got.push(i));
    receiver.on("disconnect", () => { receiverUp = false; });
    const pids = new Set();
    // Acked while the receiver had been connected throughout: must all arrive.
    const owed = [];
    let n = 0;
    let sending = true;
    const loop = (async () => {
      while (sending) {
        if (sender.connected) {
          const id = n++;
          sender.timeout(10000).emitWithAck("broadcast", { event: "seq", args: [id], to: ["reload-room"] })
            .then(() => { if (receiverUp) owed.push(id); }, () => {});
        }
        await sleep(10);
      }
    })();
    // Which process serves worker 0, every few ms.
    const watch = (async () => {
      while (sending && receiverUp) {
        try { pids.add((await stats(cluster, 0)).pid); } catch { /* between processes */ }
        await sleep(50);
      }
    })();
    await sleep(500);
    const from = cluster.log().length;
    process.kill(cluster.pid, "SIGHUP");
    // Worker 1 is replaced after worker 0: until then its sockets stay.
    await waitFor(() => !receiverUp, 40000, 20);
    sending = false;
    await loop;
    await watch;
    await cluster.waitForLog(/reload complete: 2 workers replaced/, 40000, from);
    assert.ok(pids.size >= 2, `worker 0 was served by a new process meanwhile (pids ${[...pids]})`);
    const missing = owed.filter((id) => !got.includes(id));
    assert.deepEqual(missing, [], "every broadcast acked while the receiver was up reached it");
    const sorted = [...got].sort((x, y) => x - y);
    assert.deepEqual(got, sorted, "in order");
    assert.ok(owed.length > 20, `enough were sent (${owed.length})`);

    // After the reload, the new processes are linked both ways.
    const a = await connectWorker(cluster, 0);
    const b = await connectWorker(cluster, 1);
    await call(b, "join", "after-reload");
    await call(a, "join", "after-reload");
    for (const [from, to] of [[a, b], [b, a]]) {
      const token = fresh("after");
      const got1 = waitToken(to, "after", token);
      await call(from, "broadcast", { event: "after", args: [token], to: ["after-reload"] });
      await got1;
    }
    const s0 = await stats(cluster, 0);
    const s1 = await stats(cluster, 1);
    assert.ok(s0.directIn >= 1 && s1.directIn >= 1, "both came straight");
  });
});
