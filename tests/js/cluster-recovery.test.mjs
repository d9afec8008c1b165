// Connection state recovery across the workers of a cluster
// (`interop --cluster --recovery`): the primary numbers recoverable packets in one
// sequence and keeps the sessions, so a client recovers on its own worker, on
// another worker, and after its worker was killed and restarted.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startCluster,
  clusterSkipReason,
  connectWorker,
  client,
  call,
  once,
  sleep,
  waitFor,
  closeAll,
  TEST_TIMEOUT,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const fast = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200, transports: ["websocket"] };

describe("cluster recovery", { skip: clusterSkipReason() }, () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ workers: 2, args: ["--recovery"] });
  });
  after(async () => {
    closeAll();
    if (cluster) assert.equal((await cluster.stop()).code, 0);
  });

  /** A client on worker `index` that joined room `r` and got one event (so it has an offset). */
  async function recoverable(index, room) {
    const sender = await connectWorker(cluster, 1 - index, fast);
    const s = await connectWorker(cluster, index, fast);
    const news = [];
    s.on("news", (...args) => news.push(args));
    await call(s, "join", room);
    await call(s, "set-data", { who: `client-${index}` });
    await call(sender, "broadcast", { event: "news", args: ["first"], to: [room] });
    await waitFor(() => news.length === 1);
    return { s, sender, news };
  }

  it("offsets are one cluster-wide sequence, the same for every recipient", T, async () => {
    const a = await connectWorker(cluster, 0, fast);
    const b = await connectWorker(cluster, 1, fast);
    const got = [[], []];
    a.on("seq", (...x) => got[0].push(x));
    b.on("seq", (...x) => got[1].push(x));
    for (let i = 0; i < 5; i++) await call(i % 2 ? b : a, "broadcast", { event: "seq", args: [i] });
    await waitFor(() => got[0].length === 5 && got[1].length === 5);
    assert.deepEqual(got[0], got[1], "both workers deliver the same packets, in the same order");
    const offsets = got[0].map((args) => BigInt(args[args.length - 1]));
    for (let i = 1; i < offsets.length; i++) assert.ok(offsets[i] > offsets[i - 1], "offsets increase");
    // One total order for every recipient is the guarantee; it need not follow the
    // order of acks from different workers (the primary reads each worker's stream
    // on its own, and under load the later broadcast of another worker can be numbered
    // first; Node's cluster adapter gives no cross-worker order at all).
    assert.deepEqual(got[0].map((args) => args[0]).sort(), [0, 1, 2, 3, 4]);
  });

  it("a transport drop: missed events once, in order; id, rooms and data restored", T, async () => {
    const { s, sender, news } = await recoverable(1, "r1");
    const id = s.id;
    const gone = once(s, "disconnect");
    const back = once(s, "connect");
    s.io.engine.close();
    await gone;
    await call(sender, "broadcast", { event: "news", args: ["missed-1"], to: ["r1"] });
    await call(sender, "broadcast", { event: "news", args: ["not-mine"], to: ["elsewhere"] });
    await call(sender, "broadcast", { event: "news", args: ["missed-2"], to: ["r1"] });
    await back;
    assert.equal(s.recovered, true);
    assert.equal(s.id, id);
    await waitFor(() => news.length >= 3);
    await sleep(100);
    assert.deepEqual(news.map((a) => a[0]), ["first", "missed-1", "missed-2"]);
    assert.deepEqual(await call(s, "get-data"), { who: "client-1" });
    assert.deepEqual(await call(s, "join", []), [id, "r1"]);
  });

  it("recovers on another worker", T, async () => {
    const { s, sender, news } = await recoverable(0, "r2");
    const id = s.id;
    const auth = s.auth; // pid and offset are added by the client on reconnect
    const gone = once(s, "disconnect");
    s.io.opts.reconnection = false;
    s.io.engine.close();
    await gone;
    await call(sender, "broadcast", { event: "news", args: ["while-away"], to: ["r2"] });
    // the same credentials, presented to worker 1
    const moved = client(cluster.urls[1], { ...fast, auth });
    moved._pid = s._pid;
    moved._lastOffset = s._lastOffset;
    const movedNews = [];
    moved.on("news", (...a) => movedNews.push(a[0]));
    moved.connect();
    await once(moved, "connect");
    assert.equal(moved.recovered, true);
    assert.equal(moved.id, id);
    assert.equal(await call(moved, "worker"), 1);
    await waitFor(() => movedNews.length === 1);
    assert.deepEqual(movedNews, ["while-away"]);
    assert.equal(news.length, 1);
  });

  it("recovers after its worker was killed and restarted", { timeout: 20000 }, async () => {
    const { s, sender, news } = await recoverable(1, "r3");
    const id = s.id;
    const pid = cluster.pids.get(1);
    const from = cluster.log().length;
    const gone = once(s, "disconnect");
    const back = once(s, "connect", 10000);
    process.kill(pid, "SIGKILL");
    await gone;
    await call(sender, "broadcast", { event: "news", args: ["during-restart"], to: ["r3"] });
    await cluster.waitForLog(/worker 1 \(pid \d+\) listening/, 10000, from);
    await back;
    assert.equal(s.recovered, true);
    assert.equal(s.id, id);
    await waitFor(() => news.length === 2);
    assert.deepEqual(news.map((a) => a[0]), ["first", "during-restart"]);
    assert.deepEqual(await call(s, "get-data"), { who: "client-1" });
  });

  /** GET /stats of worker `i`. */
  async function stats(i) {
    return (await fetch(`${cluster.urls[i]}/stats`)).json();
  }

  /**
   * Operations relayed to worker 1 while `action` runs, closed by a probe: a
   * broadcast from `sender` to a room of a socket of worker 1, after which
   * anything relayed before it has been counted (each worker's order is kept).
   */
  async function relayedTo1(sender, action) {
    const probe = await connectWorker(cluster, 1, fast);
    const room = `probe-${Math.random()}`;
    await call(probe, "join", room);
    const before = (await stats(1)).relayed;
    await action();
    const got = once(probe, "probe");
    await call(sender, "broadcast", { event: "probe", args: [1], to: [room] });
    await got;
    const n = (await stats(1)).relayed - before - 1;
    probe.disconnect();
    return n;
  }

  it("a recoverable broadcast to a room only its own worker has is still numbered", T, async () => {
    const room = `own-${Math.random()}`;
    const s = await connectWorker(cluster, 0, fast);
    const got = [];
    s.on("own", (...x) => got.push(x));
    await call(s, "join", room);
    const kept = (await stats(0)).keptLocal;
    for (let i = 0; i < 3; i++) await call(s, "broadcast", { event: "own", args: [i], to: [room] });
    await waitFor(() => got.length === 3);
    const offsets = got.map((args) => BigInt(args[args.length - 1]));
    assert.ok(offsets[0] < offsets[1] && offsets[1] < offsets[2], "numbered by the primary");
    assert.equal(s._lastOffset, got[2][1]);
    assert.equal((await stats(0)).keptLocal, kept, "recoverable packets need the primary");
  });

  it("a restored socket counts its new worker in for its rooms, until it leaves", T, async () => {
    const room = `restored-${Math.random()}`;
    const sender = await connectWorker(cluster, 0, fast);
    const s = await connectWorker(cluster, 0, fast);
    await call(s, "join", room);
    // One packet first: a client without an offset does not recover.
    const first = once(s, "first");
    await call(sender, "broadcast", { event: "first", args: [0], to: [room] });
    await first;
    const gone = once(s, "disconnect");
    s.io.opts.reconnection = false;
    s.io.engine.close();
    await gone;
    const moved = client(cluster.urls[1], { ...fast, auth: s.auth });
    moved._pid = s._pid;
    moved._lastOffset = s._lastOffset;
    moved.connect();
    await once(moved, "connect");
    assert.equal(moved.recovered, true);
    const news = [];
    moved.on("news", (x) => news.push(x));
    const inNow = await relayedTo1(sender, async () => {
      await call(sender, "broadcast", { event: "news", args: ["after"], to: [room] });
      await waitFor(() => news.length === 1);
    });
    assert.equal(inNow, 1, "worker 1 has the room since the restore");
    assert.deepEqual(news, ["after"]);
    const sockets = (await stats(1)).sockets;
    moved.disconnect();
    await waitFor(async () => (await stats(1)).sockets === sockets - 1);
    const outNow = await relayedTo1(sender, async () => {
      await call(sender, "broadcast", { event: "news", args: ["nobody"], to: [room] });
    });
    assert.equal(outNow, 0, "its last socket left");
  });

  it("replays what its new worker never received live", T, async () => {
    const room = `replay-${Math.random()}`;
    const sender = await connectWorker(cluster, 0, fast);
    const s = await connectWorker(cluster, 0, fast);
    await call(s, "join", room);
    // One packet first: a client without an offset does not recover.
    const first = once(s, "first");
    await call(sender, "broadcast", { event: "first", args: [0], to: [room] });
    await first;
    const gone = once(s, "disconnect");
    s.io.opts.reconnection = false;
    s.io.engine.close();
    await gone;
    // Nobody has the room now: worker 1 is not sent it, only the primary numbers it.
    const live = await relayedTo1(sender, async () => {
      await call(sender, "broadcast", { event: "news", args: ["away-1"], to: [room] });
      await call(sender, "broadcast", { event: "news", args: ["away-2"], to: [room] });
    });
    assert.equal(live, 0);
    const moved = client(cluster.urls[1], { ...fast, auth: s.auth });
    moved._pid = s._pid;
    moved._lastOffset = s._lastOffset;
    const news = [];
    moved.on("news", (x) => news.push(x));
    moved.connect();
    await once(moved, "connect");
    assert.equal(moved.recovered, true);
    await waitFor(() => news.length === 2);
    await sleep(100);
    assert.deepEqual(news, ["away-1", "away-2"]);
  });

  it("a namespace disconnect is not recoverable", T, async () => {
    const { s } = await recoverable(0, "r4");
    const id = s.id;
    s.disconnect();
    const back = once(s, "connect");
    s.connect();
    await back;
    assert.equal(s.recovered, false);
    assert.notEqual(s.id, id);
  });
});
