// The cluster runtime with --redis while Redis is unreachable: a host started
// before its Redis (the port refuses connections) says so clearly, keeps
// retrying, and its workers still share their broadcasts (relayed by the
// primary, since their writes never reach Redis): rooms, except and volatile
// applied on each worker, once each, without offsets. Then Redis starts: the
// host joins it (broadcasts go through Redis again, with entry ids as offsets
// on the streams adapter) and nothing crosses the relay any more (`relayed`
// of GET /stats stays). Both adapters; the streams one with recovery on, so
// that both of its write paths (recoverable, and volatile) are covered.
// Black-box: one rsio host (2 workers), the official client, redis-server.
import { describe, it, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { connectWorker, closeAll, call, waitFor, sleep, startCluster, clusterSkipReason, freePort } from "./harness.mjs";
import { redisSkipReason, startRedis } from "./redis-harness.mjs";

const skip = redisSkipReason() || clusterSkipReason();
const EVENTS = ["all", "room", "ext", "vol", "probe"];

/** Records every event of EVENTS a socket gets: { all: [{ i, off }], … }. */
function record(socket) {
  const seen = Object.fromEntries(EVENTS.map((e) => [e, []]));
  for (const event of EVENTS) socket.on(event, (i, off) => seen[event].push({ i, off }));
  return seen;
}

/** `relayed` of GET /stats of worker `i`: operations of other workers that reached it. */
async function relayed(cluster, i) {
  const res = await fetch(`${cluster.urls[i]}/stats`, { signal: AbortSignal.timeout(2000) });
  assert.ok(res.ok, `GET /stats of worker ${i}: ${res.status}`);
  return (await res.json()).relayed;
}

/**
 * From a socket of each worker in turn (`n`, then `n + 1`), to all, to room
 * "r", to all but room "r"; then volatile to all, each after a pause (a
 * volatile packet is dropped for a client still busy writing the last one).
 */
async function broadcastBothWays(senders, n) {
  for (const [k, s] of senders.entries()) {
    await call(s, "broadcast", { event: "all", args: [n + k] });
    await call(s, "broadcast", { event: "room", to: ["r"], args: [n + k] });
    await call(s, "broadcast", { event: "ext", except: ["r"], args: [n + k] });
  }
  for (const [k, s] of senders.entries()) {
    await sleep(200);
    await call(s, "broadcast", { event: "vol", volatile: true, args: [n + k] });
  }
}

/** What each client must get of broadcastBothWays(…, n): in room "r" or not. */
function expected(inRoom, n) {
  const both = [n, n + 1];
  return { all: both, room: inRoom ? both : [], ext: inRoom ? [] : both, vol: both };
}

const indices = (list) => list.map((m) => m.i);

describe("cluster on Redis: Redis unreachable at start", { skip, timeout: 120000 }, () => {
  const cleanups = [];
  afterEach(async () => {
    closeAll();
    for (const f of cleanups.splice(0).reverse()) await f();
  });
  after(() => closeAll());

  for (const kind of ["streams", "classic"]) {
    it(`${kind}: the workers of the host share their broadcasts meanwhile; once Redis is up it joins, and the relay goes quiet`, { timeout: 60000 }, async () => {
      const port = await freePort();
      const url = `redis://127.0.0.1:${port}`;
      const recovery = kind === "streams" ? ["--recovery"] : [];
      const host = await startCluster({ workers: 2, args: [...recovery, "--redis", url, "--redis-adapter", kind] });
      cleanups.push(() => host.stop());

      // Worker 0: a0 and a0r (in room "r"); worker 1: a1 and a1r (in room "r").
      const [a0, a0r, a1, a1r] = await Promise.all([0, 0, 1, 1].map((w) => connectWorker(host, w)));
      await Promise.all([a0r, a1r].map((c) => call(c, "join", "r")));
      const clients = { a0, a0r, a1, a1r };
      const inRoom = { a0: false, a0r: true, a1: false, a1r: true };
      const seen = Object.fromEntries(Object.entries(clients).map(([k, c]) => [k, record(c)]));
      const check = (n, when, withOffset) => {
        for (const [k, s] of Object.entries(seen)) {
          const want = expected(inRoom[k], n);
          for (const [event, list] of Object.entries(want)) {
            const got = s[event].filter((m) => m.i >= n && m.i <= n + 1);
            // Two senders: no order between them is promised.
            assert.deepEqual(indices(got).sort((x, y) => x - y), list, `${when}: ${k} gets "${event}" ${list} once each`);
            for (const m of got) {
              if (withOffset && event !== "vol") assert.match(String(m.off), /^\d+-\d+$/, `${when}: ${k} "${event}" ${m.i} has its entry id`);
              else assert.equal(m.off, undefined, `${when}: ${k} "${event}" ${m.i} has no offset`);
            }
          }
        }
      };
      const arrived = (n) => () => Object.entries(seen).every(([k, s]) =>
        Object.entries(expected(inRoom[k], n)).every(([event, list]) => list.every((i) => s[event].some((m) => m.i === i))));

      // Redis unreachable: a broadcast from either worker reaches the other's clients.
      await broadcastBothWays([a0, a1], 1);
      await waitFor(arrived(1), 10000, 20);
      await sleep(300); // a duplicate would show by now
      check(1, "Redis unreachable", false);
      const relayedMeanwhile = [await relayed(host, 0), await relayed(host, 1)];
      assert.ok(relayedMeanwhile.every((n) => n >= 4), `each worker got the other's through the relay: ${relayedMeanwhile}`);
      // The clear error, once per worker, after its first wait.
      await host.waitForLog(/redis at \S+ is unreachable: this worker serves its own clients, its broadcasts reach the other workers of this host/, 10000);

      // Redis starts on that port: every worker joins (counted as a server).
      const redis = await startRedis({ port });
      cleanups.push(redis.stop);
      await waitFor(async () => (await Promise.all([a0, a1].map((c) => call(c, "server-count")))).every((n) => n === 2), 20000, 100);
      // The host's reader reads too: a probe from worker 0 reaches worker 1 through Redis.
      let probes = 0;
      await waitFor(async () => {
        await call(a0, "broadcast", { event: "probe", args: [++probes] });
        await sleep(100);
        return seen.a1.probe.some((m) => kind !== "streams" || m.off !== undefined);
      }, 20000, 0);
      await host.waitForLog(/member of the Redis cluster at \S+ \(\w+\), after a wait/, 10000);

      // Redis up: the same broadcasts go through Redis (offsets on the
      // streams adapter), once each, and not one more crosses the relay.
      await sleep(300); // the probes still in flight land
      const before = [await relayed(host, 0), await relayed(host, 1)];
      await broadcastBothWays([a0, a1], 3);
      await waitFor(arrived(3), 10000, 20);
      await sleep(300);
      check(3, "Redis up", kind === "streams");
      const afterUp = [await relayed(host, 0), await relayed(host, 1)];
      assert.deepEqual(afterUp, before, "nothing crosses the relay while Redis takes the writes");
      assert.equal(host.proc.exitCode, null);
      assert.doesNotMatch(host.log(), /panicked|worker exited/);
    });
  }
});
