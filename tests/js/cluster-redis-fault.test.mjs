// The cluster runtime on Redis under faults, with a broadcast load running all
// along. Streams adapter (recovery on): redis-server is killed (-9) and
// restarted on the same port; then every stream reader's connection is killed
// at the instant an entry is written; then other programs XADD garbage. The
// classic adapter: the same restart. Through a TCP proxy: replies lost after
// Redis ran the commands (or commands lost), then the connections reset; and
// connections that hang without closing. Black-box: rsio hosts (2 workers
// each), the official client, redis-server and Redis commands only, so it
// holds whoever reads the stream for a host.
//
// Redis runs with AOF and `appendfsync always`: every XADD (and session SET)
// Redis acknowledged is in the file before the reply, so the restarted Redis
// has exactly the stream rsio was told it wrote. (An RDB snapshot would lose
// the entries since the last save, and `everysec` may reply before writing:
// the test could not tell what rsio lost from what Redis lost.) Its files are
// on tmpfs where there is one: a kill -9 keeps what was written, and fsync
// does not stall behind other disk traffic (a stalled Redis is an outage of
// its own). The stream is then the record the promise is checked against: a
// broadcast is in the stream, and then every client in its rooms gets it
// once, in stream order, with its entry id as offset; or it is not, and then
// only the clients of the sender's host get it (the other workers through
// the primary's relay, but for a write cut off by the fault), without an
// offset.
import { describe, it, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "redis";
import { client, connectWorker, closeAll, once, call, waitFor, sleep, startCluster, clusterSkipReason } from "./harness.mjs";
import { redisSkipReason, randomPort, startRedis } from "./redis-harness.mjs";

const skip = redisSkipReason() || clusterSkipReason();
const STREAM = "socket.io";
const SESSION_PREFIX = "sio:session:";
/** The load: at most this many numbered messages (two broadcasts each), this long. */
const MAX_MESSAGES = 4000;
const MAX_LOAD_MS = 30000;

/**
 * redis-server on 127.0.0.1:`port` with its files in `dir` (AOF, fsync on every
 * write, no RDB): { proc, exited } once it accepts connections (after loading
 * the AOF of a previous run in `dir`).
 */
function startRedisAt(dir, port) {
  return new Promise((resolve, reject) => {
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", dir,
      "--appendonly", "yes", "--appendfsync", "always", "--save", ""];
    const proc = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise((r) => proc.once("exit", () => r()));
    let out = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`redis-server not ready in 15 s: ${out}`));
    }, 15000);
    proc.stdout.setEncoding("utf8");
    proc.stdout.on("data", (d) => {
      if (out.length < 100000) out += d;
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(timer);
        resolve({ proc, exited });
      }
    });
    proc.stderr.resume();
    proc.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code}, ${signal}): ${out}`));
    });
  });
}

/** A command client (node-redis) that gives up instead of reconnecting. */
async function commands(port) {
  const c = createClient({ url: `redis://127.0.0.1:${port}`, socket: { reconnectStrategy: false } });
  c.on("error", () => {});
  await c.connect();
  return c;
}

/** Every `event` broadcast in the stream, in stream order: [{ i, id }]. */
async function inStream(cmd, event) {
  const entries = await cmd.sendCommand(["XRANGE", STREAM, "-", "+"]);
  const out = [];
  for (const [id, fields] of entries) {
    const f = {};
    for (let k = 0; k + 1 < fields.length; k += 2) f[fields[k]] = fields[k + 1];
    if (f.type !== "3" || !f.data?.startsWith("{")) continue;
    let data;
    try {
      data = JSON.parse(f.data);
    } catch {
      continue; // garbage written by the test
    }
    const args = data.packet?.data;
    if (Array.isArray(args) && args[0] === event) out.push({ i: args[1], id });
  }
  return out;
}

/** Records every `all`/`room`/`ext`/`same` event a socket gets: { all: [{ i, off }], … }. */
function record(socket) {
  const seen = { all: [], room: [], ext: [], same: [] };
  for (const event of Object.keys(seen)) {
    socket.on(event, (i, off) => seen[event].push({ i, off }));
  }
  return seen;
}

const indices = (list) => list.map((m) => m.i);

/**
 * What the clients of the sending worker got (`got`, of `last` messages):
 * each message once; with its entry id as offset if it is in the stream
 * (`stream`); without one if not, or if its write was cut off
 * (`cutOff(i)`: when the connection broke after the XADD was sent, Redis may
 * have run it though rsio delivered it as not written).
 */
function checkSenderWorker(got, stream, last, cutOff, report) {
  const ids = new Map(stream.map(({ i, id }) => [i, id]));
  assert.deepEqual(indices(got).sort((x, y) => x - y), Array.from({ length: last }, (_, k) => k + 1),
    `the sender's worker: every message once (${report})`);
  for (const { i, off } of got) {
    if (off === undefined && ids.has(i) && cutOff(i)) continue;
    assert.equal(off, ids.get(i), `the sender's worker: message ${i} has its entry id as offset, or none (${report})`);
  }
}

describe("cluster on Redis: Redis restarted under a broadcast load", { skip, timeout: 240000 }, () => {
  const cleanups = [];
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    for (const f of cleanups.reverse()) await f();
  });

  /** A temporary directory (on tmpfs if there is one), removed after the tests. */
  function tempDir() {
    const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
    const dir = mkdtempSync(path.join(base, "rsio-redis-fault-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** A redis-server (startRedisAt) on a random free port: { port, redis }. */
  async function freshRedis(dir) {
    for (let attempt = 0; ; attempt++) {
      const port = randomPort();
      try {
        return { port, redis: await startRedisAt(dir, port) };
      } catch (e) {
        if (attempt >= 4) throw e;
      }
    }
  }

  it("reconnects, resumes from the last entry id, loses only what the promise says, skips garbage", { timeout: 60000 }, async () => {
    const dir = tempDir();
    let { port, redis } = await freshRedis(dir);
    cleanups.push(async () => {
      redis.proc.kill("SIGKILL");
      await redis.exited;
    });
    const url = `redis://127.0.0.1:${port}`;
    const host = () => startCluster({ workers: 2, args: ["--recovery", "--redis", url] });
    const [hostA, hostB] = await Promise.all([host(), host()]);
    cleanups.push(() => Promise.all([hostA.stop(), hostB.stop()]));

    // The sender and a receiver on A0, receivers on A1, B0 and B1 (in room "r"),
    // one on B1 outside the room, a prober on B0, the client that drops before
    // the outage and recovers, and one that drops while Redis is down.
    const [sender, rA0, rA1, rB0, rB1, outside, prober, leaver, lateLeaver] = await Promise.all([
      connectWorker(hostA, 0), connectWorker(hostA, 0), connectWorker(hostA, 1), connectWorker(hostB, 0),
      connectWorker(hostB, 1), connectWorker(hostB, 1), connectWorker(hostB, 0), connectWorker(hostB, 0),
      connectWorker(hostA, 1),
    ]);
    const inRoom = { A0: rA0, A1: rA1, B0: rB0, B1: rB1 };
    await Promise.all([...Object.values(inRoom), leaver].map((c) => call(c, "join", "r")));
    const seen = Object.fromEntries(Object.entries(inRoom).map(([k, c]) => [k, record(c)]));
    seen.out = record(outside);
    const leaverSeen = record(leaver);
    // Every worker counts the 4 workers of both hosts before the load starts.
    await waitFor(async () => {
      const counts = await Promise.all([rA0, rA1, rB0, rB1].map((c) => call(c, "server-count")));
      return counts.every((n) => n === 4);
    }, 20000, 100);

    // The load: numbered messages to everyone and to room "r", one after the
    // other (each acknowledged by the sending worker), bounded in count and time.
    let sent = 0;
    let stopLoad = false;
    const loadEnd = Date.now() + MAX_LOAD_MS;
    const load = (async () => {
      while (!stopLoad && sent < MAX_MESSAGES && Date.now() < loadEnd) {
        const i = sent + 1;
        await call(sender, "broadcast", { event: "all", args: [i] });
        await call(sender, "broadcast", { event: "room", to: ["r"], args: [i] });
        sent = i;
        await sleep(3);
      }
    })();
    const gotEverywhere = (i) => Object.values(seen).every((s) => s.all.some((m) => m.i >= i));

    // Before the fault: the load reaches both hosts, and the leaver holds an
    // offset; it drops (a recoverable disconnect), and its session is in Redis.
    const lateLeaverSeen = record(lateLeaver);
    await waitFor(() => gotEverywhere(20) && [leaverSeen, lateLeaverSeen].every((s) => s.all.some((m) => m.off)), 15000);
    const { _pid: pid } = leaver;
    leaver.io.engine.close();
    const cmd1 = await commands(port);
    await waitFor(async () => (await cmd1.exists(SESSION_PREFIX + pid)) === 1, 10000, 20);
    await cmd1.quit();
    const leaverOffset = leaver._lastOffset;
    assert.match(leaverOffset, /^\d+-\d+$/);

    // The fault: kill -9 under load, ~1 s down, restarted on the same port from its AOF.
    const beforeKill = sent;
    redis.proc.kill("SIGKILL");
    await redis.exited;
    const late = { pid: lateLeaver._pid, offset: lateLeaver._lastOffset, id: lateLeaver.id };
    lateLeaver.io.engine.close(); // its session cannot be stored now
    await sleep(1000);
    const duringOutage = sent;
    redis = await startRedisAt(dir, port);
    const restartedAt = sent;
    const upAt = Date.now();
    assert.ok(duringOutage > beforeKill + 20, `the load went on while Redis was down (${beforeKill} → ${duringOutage})`);

    // Back: a message sent from A after the restart reaches every receiver, and
    // a probe from B reaches A. Every message sent after that is checked below.
    await waitFor(() => gotEverywhere(restartedAt + 1), 20000, 20);
    const resumedMs = Date.now() - upAt;
    const probeArrived = once(rA1, "probe", 20000);
    let probing = true;
    probeArrived.finally(() => (probing = false)).catch(() => {});
    while (probing) {
      await call(prober, "broadcast", { event: "probe", args: [] });
      await sleep(100);
    }
    await probeArrived;
    const back = sent + 1;

    // The leaver comes back on another worker of its host after the outage.
    const returned = client(hostB.urls[1], { auth: { pid, offset: leaverOffset } });
    const returnedSeen = record(returned);
    returned.connect();
    await once(returned, "connect", 10000);
    assert.equal(await call(returned, "recovered"), true, "the session survived the restart (AOF)");
    // The client that dropped while Redis was down comes back as a new session.
    const lateReturned = client(hostA.urls[0], { auth: { pid: late.pid, offset: late.offset } });
    lateReturned.connect();
    await once(lateReturned, "connect", 10000);
    assert.equal(await call(lateReturned, "recovered"), false, "no session was stored while Redis was down");
    assert.notEqual(lateReturned.id, late.id);

    // Every reader's connection killed at the instant an entry is written (one
    // transaction: no reader can reconnect before it), as another program
    // would write it: each reader must resume from its last id to see it.
    const cmd = await commands(port);
    cleanups.push(() => cmd.quit().catch(() => {}));
    await waitFor(() => gotEverywhere(back + 20), 15000, 20);
    const list = String(await cmd.sendCommand(["CLIENT", "LIST"])).split("\n");
    const readers = list.filter((l) => /cmd=xread/.test(l)).map((l) => l.match(/id=(\d+)/)[1]);
    assert.ok(readers.length >= 2, `one XREAD reader per host at least: ${list.join("\n")}`);
    const tx = cmd.multi();
    for (const id of readers) tx.addCommand(["CLIENT", "KILL", "ID", id]);
    tx.addCommand(["XADD", STREAM, "MAXLEN", "~", "10000", "*", "uid", "0123456789abcdef", "nsp", "/", "type", "3",
      "data", JSON.stringify({ packet: { type: 2, data: ["ext", 1], nsp: "/" }, opts: { rooms: [], except: [], flags: {} } })]);
    await tx.exec();

    // Entries that are not valid messages, written under load: logged and skipped.
    const garbage = [["foo", "bar"], ["uid", "x", "nsp", "/", "type", "three"],
      ["uid", "x", "nsp", "/", "type", "3", "data", "{not json"], ["uid", "x", "nsp", "/", "type", "3", "data", "!!not base64!!"]];
    for (const fields of garbage) await cmd.sendCommand(["XADD", STREAM, "*", ...fields]);
    const afterGarbage = sent + 1;
    await waitFor(() => gotEverywhere(afterGarbage + 20), 15000, 20);

    stopLoad = true;
    await load;
    const last = sent;
    await waitFor(() => gotEverywhere(last) && returnedSeen.all.some((m) => m.i === last), 15000, 20);
    await sleep(300); // a duplicate of the last message would show by now

    // Nothing crashed: each host still runs its primary and its first 2 workers.
    for (const [name, h] of [["A", hostA], ["B", hostB]]) {
      assert.equal(h.proc.exitCode, null, `host ${name}'s primary runs`);
      assert.equal(h.allPids().length, 3, `host ${name}: no worker was restarted (pids ${h.allPids()})`);
      assert.doesNotMatch(h.log(), /panicked|worker exited/, `host ${name}'s log`);
    }
    for (const h of [hostA, hostB]) assert.match(h.log(), /invalid stream entry skipped/);

    // The record: what is in the stream.
    const streamAll = await inStream(cmd, "all");
    const streamRoom = await inStream(cmd, "room");
    const inAll = new Set(indices(streamAll));
    const lost = [];
    for (let i = 1; i <= last; i++) if (!inAll.has(i)) lost.push(i);
    const report = `sent ${last}; killed after ${beforeKill}, restarted after ${restartedAt}, back from ${back}, ` +
      `flowing again ${resumedMs} ms after Redis was up; ` +
      `not in the stream: ${lost.length ? `${lost[0]}..${lost[lost.length - 1]} (${lost.length})` : "none"}`;
    console.log(`# ${report}`);
    // Not in the stream: only messages sent while the sending worker could not reach Redis.
    assert.ok(lost.every((i) => i > beforeKill - 10 && i < back), `only the outage is missing: ${report}`);
    assert.ok(lost.length > 0, `some messages were sent while Redis was down: ${report}`);

    const expectAll = streamAll.map(({ i, id }) => ({ i, off: id }));
    const expectRoom = streamRoom.map(({ i, id }) => ({ i, off: id }));
    // Another worker of the host: the stream, and what was not written
    // meanwhile through the primary's relay (see checkOtherWorker).
    const a1 = ["all", "room"].map((e) => checkOtherWorker(seen.A1[e], e === "all" ? streamAll : streamRoom, last, atTheKill(beforeKill), report));
    console.log(`# host A's other worker missed ${JSON.stringify(a1[0])} (cut off by the kill, not run)`);
    // Another host: exactly the stream, once each, in stream order, with its ids.
    for (const k of ["B0", "B1"]) {
      assert.deepEqual(seen[k].all, expectAll, `${k}: "all" = the stream (${report})`);
      assert.deepEqual(seen[k].room, expectRoom, `${k}: "room" = the stream (${report})`);
    }
    for (const [k, s] of Object.entries(seen)) {
      assert.deepEqual(indices(s.ext), [1], `${k}: the entry written while every reader was down`);
    }
    assert.deepEqual(seen.out.all, expectAll, "outside the room: every \"all\"");
    assert.deepEqual(seen.out.room, [], "outside the room: no \"room\"");
    // The sender's worker: every message once, with its entry id as offset if
    // it is in the stream, except the few whose write was cut off by the kill.
    for (const event of ["all", "room"]) {
      checkSenderWorker(seen.A0[event], event === "all" ? streamAll : streamRoom, last, (i) => i > beforeKill - 10 && i <= restartedAt, report);
    }
    // After Redis is back (reconnection seen by probes), every message reaches
    // every receiver once and in order.
    const fromBack = Array.from({ length: last - back + 1 }, (_, k) => back + k);
    for (const [k, s] of Object.entries(seen)) {
      assert.deepEqual(indices(s.all).filter((i) => i >= back), fromBack, `${k}: every message after ${back}, in order`);
    }
    // The returned client: what the stream holds after its offset (the missed
    // ones it was sent on recovery, then the live ones), once each, in order.
    const afterOffset = expectAll.filter((m) => cmpId(m.off, leaverOffset) > 0);
    assert.deepEqual(returnedSeen.all, afterOffset, "the recovered client gets the stream after its offset");
    assert.deepEqual(indices(returnedSeen.ext), [1]);
  });

  it("classic adapter: after both hosts reconnect nothing is lost; meanwhile the sender's host gets the load", { timeout: 40000 }, async () => {
    const dir = tempDir();
    let { port, redis } = await freshRedis(dir);
    cleanups.push(async () => {
      redis.proc.kill("SIGKILL");
      await redis.exited;
    });
    const url = `redis://127.0.0.1:${port}`;
    const host = () => startCluster({ workers: 2, args: ["--redis", url, "--redis-adapter", "classic"] });
    const [hostA, hostB] = await Promise.all([host(), host()]);
    cleanups.push(() => Promise.all([hostA.stop(), hostB.stop()]));
    const [sender, rA0, rA1, rB0, rB1, prober] = await Promise.all([connectWorker(hostA, 0), connectWorker(hostA, 0),
      connectWorker(hostA, 1), connectWorker(hostB, 0), connectWorker(hostB, 1), connectWorker(hostB, 0)]);
    const seen = { A0: record(rA0), A1: record(rA1), B0: record(rB0), B1: record(rB1) };
    await waitFor(async () => {
      const counts = await Promise.all([rA0, rA1, rB0, rB1].map((c) => call(c, "server-count")));
      return counts.every((n) => n === 4);
    }, 20000, 100);

    let sent = 0;
    let stopLoad = false;
    const loadEnd = Date.now() + MAX_LOAD_MS;
    const load = (async () => {
      while (!stopLoad && sent < MAX_MESSAGES && Date.now() < loadEnd) {
        await call(sender, "broadcast", { event: "all", args: [sent + 1] });
        sent += 1;
        await sleep(3);
      }
    })();
    const gotEverywhere = (i) => Object.values(seen).every((s) => s.all.some((m) => m.i >= i));
    await waitFor(() => gotEverywhere(20), 15000, 20);
    const beforeKill = sent;
    redis.proc.kill("SIGKILL");
    await redis.exited;
    await sleep(1000);
    const downTo = sent; // sent while Redis was down
    redis = await startRedisAt(dir, port);
    const restartedAt = sent;
    assert.ok(downTo > beforeKill + 20, `the load went on while Redis was down (${beforeKill} → ${downTo})`);
    const upAt = Date.now();
    await waitFor(() => gotEverywhere(restartedAt + 1), 20000, 20);
    const resumedMs = Date.now() - upAt;
    const probeArrived = once(rA1, "probe", 20000);
    let probing = true;
    probeArrived.finally(() => (probing = false)).catch(() => {});
    while (probing) {
      await call(prober, "broadcast", { event: "probe", args: [] });
      await sleep(100);
    }
    await probeArrived;
    const back = sent + 1;
    await waitFor(() => gotEverywhere(back + 20), 15000, 20);
    stopLoad = true;
    await load;
    const last = sent;
    await waitFor(() => gotEverywhere(last), 15000, 20);
    await sleep(300); // a duplicate of the last message would show by now

    for (const [name, h] of [["A", hostA], ["B", hostB]]) {
      assert.equal(h.proc.exitCode, null, `host ${name}'s primary runs`);
      assert.equal(h.allPids().length, 3, `host ${name}: no worker was restarted (pids ${h.allPids()})`);
      assert.doesNotMatch(h.log(), /panicked|worker exited/, `host ${name}'s log`);
    }
    const report = `sent ${last}; killed after ${beforeKill}, restarted after ${restartedAt}, back from ${back}, ` +
      `flowing again ${resumedMs} ms after Redis was up`;
    const all = Array.from({ length: last }, (_, k) => k + 1);
    // The sender's worker delivers its own broadcasts itself: all, in order.
    assert.deepEqual(indices(seen.A0.all), all, `the sender's worker: every message once, in order (${report})`);
    const missed = {};
    for (const k of ["A1", "B0", "B1"]) {
      const got = indices(seen[k].all);
      // In order and once; only what was published around the outage is missing.
      assert.deepEqual(got, [...new Set(got)].sort((x, y) => x - y), `${k}: once each, in order (${report})`);
      const has = new Set(got);
      const lost = all.filter((i) => !has.has(i));
      // The other worker of the sender's host got, through the primary's
      // relay, all that could not be published; it misses at most a PUBLISH
      // cut off by the kill (its outcome unknown, so not relayed), and, as
      // every host, what was published before its primary subscribed again.
      const window = k === "A1" ? (i) => atTheKill(beforeKill)(i) || (i > downTo && i < back) : (i) => i > beforeKill - 10 && i < back;
      assert.ok(lost.every(window), `${k}: only the outage is missing: ${lost} (${report})`);
      missed[k] = lost.length;
    }
    console.log(`# classic: ${report}; missed ${JSON.stringify(missed)}`);
  });

  it("a broadcast whose write was cut off before Redis replied reaches the sender's worker once", { timeout: 40000 }, async () => {
    const redis = await startRedis();
    cleanups.push(redis.stop);
    const proxy = await startProxy(redis.port);
    cleanups.push(proxy.close);
    const hostA = await startCluster({ workers: 2, args: ["--recovery", "--redis", `redis://127.0.0.1:${proxy.port}`] });
    cleanups.push(() => hostA.stop());
    const [sender, rA0, rA1] = await Promise.all([connectWorker(hostA, 0), connectWorker(hostA, 0), connectWorker(hostA, 1)]);
    const seen = { A0: record(rA0), A1: record(rA1) };
    await waitFor(async () => (await call(rA1, "server-count")) === 2, 20000, 100);

    let sent = 0;
    let stopLoad = false;
    const loadEnd = Date.now() + MAX_LOAD_MS;
    const load = (async () => {
      while (!stopLoad && sent < MAX_MESSAGES && Date.now() < loadEnd) {
        await call(sender, "broadcast", { event: "all", args: [sent + 1] });
        sent += 1;
        await sleep(3);
      }
    })();
    await waitFor(() => seen.A1.all.length >= 20, 15000, 20);
    // Commands sent now run, their replies are lost; then every connection breaks.
    const swallowedFrom = sent;
    proxy.swallow();
    await sleep(200);
    const swallowedTo = sent + 1;
    proxy.cut();
    // Back: a message sent after the cut reaches the other worker.
    await waitFor(() => seen.A1.all.some((m) => m.i > swallowedTo), 20000, 20);
    const back = sent + 1;
    await waitFor(() => seen.A1.all.some((m) => m.i >= back + 20), 15000, 20);
    stopLoad = true;
    await load;
    const last = sent;
    await waitFor(() => seen.A1.all.some((m) => m.i === last) && seen.A0.all.length >= last, 15000, 20);
    await sleep(300); // a duplicate of the last message would show by now

    // A write Redis never got (commands dropped, then the connection breaks),
    // then the same data again: that one is another broadcast, delivered too.
    proxy.drop();
    await call(sender, "broadcast", { event: "same", args: ["x"] });
    await sleep(200);
    proxy.cut();
    await call(sender, "broadcast", { event: "same", args: ["x"] });
    await waitFor(() => seen.A1.same.length >= 1 && seen.A0.same.length >= 2, 15000, 20);
    await sleep(300);

    const cmd = await commands(redis.port);
    const stream = await inStream(cmd, "all");
    const same = (await inStream(cmd, "same")).map(({ i, id }) => ({ i, off: id }));
    await cmd.quit();
    assert.equal(same.length, 1, "the dropped write did not run");
    assert.deepEqual(seen.A0.same, [{ i: "x", off: undefined }, ...same], "the sender's worker: both, once each");
    assert.deepEqual(seen.A1.same, same, "the other worker: the one in the stream");
    const report = `sent ${last}; replies swallowed from ${swallowedFrom} to ${swallowedTo}, back from ${back}`;
    const ids = new Map(stream.map(({ i, id }) => [i, id]));
    const cutOff = seen.A0.all.filter((m) => m.off === undefined && ids.has(m.i)).map((m) => m.i);
    console.log(`# ${report}; written though cut off: ${cutOff}`);
    assert.ok(cutOff.length > 0, `a write ran in Redis though its reply was lost (${report})`);
    checkSenderWorker(seen.A0.all, stream, last, (i) => i > swallowedFrom - 10 && i <= swallowedTo, report);
    checkOtherWorker(seen.A1.all, stream, last, (i) => i > swallowedFrom - 10 && i <= swallowedTo, report);
    assert.equal(hostA.proc.exitCode, null);
    assert.equal(hostA.allPids().length, 3, "no worker was restarted");
  });

  it("a reader or subscriber whose connection hangs (Redis gone without closing it) reconnects and resumes", { timeout: 50000 }, async () => {
    const redis = await startRedis();
    cleanups.push(redis.stop);
    const proxy = await startProxy(redis.port);
    cleanups.push(proxy.close);
    const hostA = await startCluster({ workers: 2, args: ["--recovery", "--redis", `redis://127.0.0.1:${proxy.port}`] });
    cleanups.push(() => hostA.stop());
    const [rA0, rA1] = await Promise.all([connectWorker(hostA, 0), connectWorker(hostA, 1)]);
    const seen = { A0: record(rA0), A1: record(rA1) };
    await waitFor(async () => (await call(rA1, "server-count")) === 2, 20000, 100);
    // Another program (not through the proxy) writes; then rsio's connections hang.
    const cmd = await commands(redis.port);
    cleanups.push(() => cmd.quit().catch(() => {}));
    const ext = (k) => cmd.sendCommand(["XADD", STREAM, "*", "uid", "0123456789abcdef", "nsp", "/", "type", "3",
      "data", JSON.stringify({ packet: { type: 2, data: ["ext", k], nsp: "/" }, opts: { rooms: [], except: [], flags: {} } })]);
    await ext(1);
    await waitFor(() => seen.A0.ext.length === 1 && seen.A1.ext.length === 1, 10000, 20);
    // Requests and answers go over pub/sub: worker 1 answers worker 0's.
    const answered = async () => {
      const res = await call(rA0, "server-side-emit", { event: "which-worker", args: [], timeout: 1000 });
      return res.err === null && JSON.stringify(res.responses) === "[1]";
    };
    assert.ok(await answered(), "worker 1 answers before the hang");
    proxy.hang();
    const hungAt = Date.now();
    await ext(2);
    // XREAD BLOCK is 5 s: a reader gives up on its connection 3 s past it.
    await waitFor(() => seen.A0.ext.length === 2 && seen.A1.ext.length === 2, 20000, 50);
    console.log(`# the entry written while the readers' connections hung arrived after ${Date.now() - hungAt} ms`);
    // The subscribers find their hung connections too (PING every 5 s).
    await waitFor(answered, 25000, 200);
    console.log(`# worker 1 answers again after ${Date.now() - hungAt} ms`);
    const ids = (await cmd.sendCommand(["XRANGE", STREAM, "-", "+"])).map(([id]) => id);
    for (const k of ["A0", "A1"]) assert.deepEqual(seen[k].ext, [{ i: 1, off: ids[0] }, { i: 2, off: ids[1] }], k);
    assert.equal(hostA.proc.exitCode, null);
    assert.equal(hostA.allPids().length, 3, "no worker was restarted");
  });
});

/**
 * The messages whose writes a kill of Redis after message `beforeKill` may
 * cut off (sent, no reply: outcome unknown), or whose entries the host's
 * reader had not read yet when its connection broke (they come after the
 * reconnect): those sent around the kill.
 */
function atTheKill(beforeKill) {
  return (i) => i > beforeKill - 10 && i <= beforeKill + 20;
}

/**
 * What the clients of another worker of the sender's host got (`got`, of
 * `last` messages): every message once; the ones in the stream (`stream`)
 * with their entry id as offset, through the host's reader; the others
 * (written while the sender's worker could not reach Redis) without one,
 * through the primary's relay. Missing: only a write cut off by the fault
 * (`edge(i)`: its outcome unknown, so not relayed) that Redis did not run.
 * In order, but around the fault (`edge`). Returns the missing ones.
 */
function checkOtherWorker(got, stream, last, edge, report) {
  const ids = new Map(stream.map(({ i, id }) => [i, id]));
  const order = indices(got);
  assert.equal(new Set(order).size, order.length, `another worker of the sender's host: once each (${report})`);
  const has = new Set(order);
  const missing = [];
  for (let i = 1; i <= last; i++) if (!has.has(i)) missing.push(i);
  assert.ok(missing.every((i) => !ids.has(i) && edge(i)),
    `another worker of the sender's host misses only writes cut off by the fault that Redis did not run: ${missing} (${report})`);
  for (const { i, off } of got) {
    assert.equal(off, ids.get(i), `another worker of the sender's host: message ${i} has its entry id as offset, or none if not in the stream (${report})`);
  }
  const steady = order.filter((i) => !edge(i));
  assert.deepEqual(steady, [...steady].sort((x, y) => x - y), `another worker of the sender's host: in order (${report})`);
  return missing;
}

/**
 * A TCP proxy on a free loopback port to the Redis at `port`: rsio's
 * connections go through it. `swallow()` drops every reply from then on (the
 * commands still reach Redis and run), `drop()` every command; `cut()` resets
 * every connection and forwards again: as if Redis died after running
 * commands (or before), before replying. `hang()` silences the open
 * connections for good, both ways, without closing them (Redis' host gone,
 * the network cut); new ones work.
 */
function startProxy(port) {
  const pairs = new Set();
  let swallowing = false;
  let dropping = false;
  const server = net.createServer((down) => {
    const up = net.connect(port, "127.0.0.1");
    const pair = { down, up, hung: false };
    pairs.add(pair);
    down.on("data", (d) => {
      if (!dropping && !pair.hung) up.write(d);
    });
    up.on("data", (d) => {
      if (!swallowing && !pair.hung) down.write(d);
    });
    const close = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      s.on("error", close);
      s.on("close", close);
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        swallow: () => (swallowing = true),
        drop: () => (dropping = true),
        hang() {
          for (const pair of pairs) pair.hung = true;
        },
        cut() {
          for (const { down, up } of [...pairs]) {
            down.resetAndDestroy();
            up.destroy();
          }
          pairs.clear();
          swallowing = false;
          dropping = false;
        },
        close: () => new Promise((r) => server.close(() => r())),
      }),
    );
  });
}

/** Compares two stream entry ids. */
function cmpId(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  return as < bs ? -1 : as > bs ? 1 : 0;
}
