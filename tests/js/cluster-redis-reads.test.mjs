// How often a broadcast crosses Redis with two rsio hosts of 2 workers each on
// one throwaway redis-server: the primary is its host's one reader of the
// broadcasts (the stream, or the broadcast channels), so Redis serves each
// broadcast once per host, not once per worker, while every worker stays a
// server as Node counts them (one request-channel subscriber each).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { once, fires, call, waitFor, clusterSkipReason, TEST_TIMEOUT } from "./harness.mjs";
import { redisSkipReason, redisClusterSkipReason, redisHostsFor, connectEverywhere } from "./redis-harness.mjs";

const skip = redisSkipReason() || redisClusterSkipReason() || clusterSkipReason();
const T = { timeout: TEST_TIMEOUT * 4 };
const HOSTS = 2;
const WORKERS = 2;
const BROADCASTS = 20;

/** `redis-cli -p <port> args…`, its output (a bounded wait). */
function redisCli(redis, ...args) {
  const r = spawnSync("redis-cli", ["-p", String(redis.port), ...args], { encoding: "utf8", timeout: 5000 });
  assert.equal(r.status, 0, `redis-cli ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** The `calls=` of `cmd` in INFO commandstats (0 when never called). */
function calls(redis, cmd) {
  const m = redisCli(redis, "info", "commandstats").match(new RegExp(`^cmdstat_${cmd}:calls=(\\d+)`, "m"));
  return m ? Number(m[1]) : 0;
}

/** The clients of CLIENT LIST, each as its fields. */
function clients(redis) {
  return redisCli(redis, "client", "list")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => Object.fromEntries(l.trim().split(" ").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])));
}

// With recovery, a worker delivers its own broadcasts when it reads them back
// (the primary forwards them to it too); without, it delivers them at once
// (and the primary forwards them to the other workers only).
for (const [kind, recovery] of [["streams", true], ["streams", false], ["classic", false]]) {
  const label = `${kind}${recovery ? ", recovery" : ""}`;
  describe(`two rsio hosts on Redis (${label}): one read of a broadcast per host`, { skip, timeout: 120000 }, () => {
    const env = redisHostsFor({ kind, recovery, count: HOSTS, workers: WORKERS });
    let sockets;

    const everywhere = () => connectEverywhere(env.hosts, WORKERS);

    it("every broadcast reaches every worker, and each host reads it once", T, async () => {
      sockets = await everywhere();
      // The first broadcast crosses once every reader is up (they may be in backoff).
      await waitFor(async () => {
        const got = sockets.map((c) => fires(c, "warm", 300));
        await call(sockets[0], "broadcast", { event: "warm", args: [] });
        return (await Promise.all(got)).every(Boolean);
      }, 20000, 50);
      redisCli(env.redis, "config", "resetstat");
      const started = Date.now();
      for (let i = 0; i < BROADCASTS; i++) {
        // From every worker in turn; each is awaited everywhere, so each is read apart.
        const got = sockets.map((c) => once(c, "n", 5000));
        await call(sockets[i % sockets.length], "broadcast", { event: "n", args: [i] });
        for (const args of await Promise.all(got)) assert.equal(args[0], i);
      }
      if (kind === "streams") {
        // One XREAD per host and broadcast, plus the block timeouts (5 s) of
        // each reader meanwhile; a reader per worker would read 2 × as often.
        const xread = calls(env.redis, "xread");
        const timeouts = HOSTS * (Math.ceil((Date.now() - started) / 5000) + 1);
        assert.ok(xread >= BROADCASTS * HOSTS, `xread calls ${xread}`);
        assert.ok(xread <= BROADCASTS * HOSTS + timeouts, `xread calls ${xread} for ${BROADCASTS} broadcasts and ${HOSTS} hosts`);
        assert.equal(calls(env.redis, "xadd"), BROADCASTS, "each broadcast is written once");
      }
    });

    it("one reader of the broadcasts per host, and every worker a server", T, async () => {
      await everywhere();
      const list = clients(env.redis);
      if (kind === "streams") {
        // Blocked in XREAD: the readers.
        await waitFor(() => clients(env.redis).filter((c) => c.cmd === "xread").length === HOSTS, 10000, 100);
      } else {
        const patterns = list.filter((c) => Number(c.psub) > 0);
        assert.equal(patterns.length, HOSTS, `pattern subscribers: ${patterns.map((c) => c.name || c.addr)}`);
        // Node's serverCount: the subscribers of the request channel, one per worker.
        const numsub = redisCli(env.redis, "pubsub", "numsub", "socket.io-request#/#").trim().split("\n");
        assert.equal(Number(numsub[1]), HOSTS * WORKERS);
      }
    });

    it("a room broadcast reaches the members of both hosts only", T, async () => {
      const [a0, a1, b0, b1] = await everywhere();
      await Promise.all([call(a1, "join", "r"), call(b0, "join", "r")]);
      for (const sender of [a0, b1, a1]) {
        const members = [a1, b0].map((c) => once(c, "to-room", 5000));
        const outside = [fires(a0, "to-room", 300), fires(b1, "to-room", 300)];
        await call(sender, "broadcast", { event: "to-room", to: ["r"], args: ["x"] });
        for (const args of await Promise.all(members)) assert.equal(args[0], "x");
        assert.deepEqual(await Promise.all(outside), [false, false]);
      }
    });

    it("requests still get one answer per worker: serverSideEmit and fetchSockets", T, async () => {
      const list = await everywhere();
      const res = await call(list[1], "server-side-emit", { event: "which-worker", args: [], timeout: 3000 });
      assert.equal(res.err, null, JSON.stringify(res));
      assert.deepEqual(res.responses.map(String).sort(), ["0", "0", "1"]);
      await Promise.all(list.map((c) => call(c, "join", "fs")));
      const found = (await call(list[2], "fetch-sockets", { in: ["fs"] })).map((s) => s.id);
      assert.deepEqual(found.sort(), list.map((c) => c.id).sort());
    });

    it("a broadcast to a room, then its sockets leave it: the members get the broadcast first", T, async () => {
      // As with Node's adapters: what one server publishes, every server
      // applies in that order (the leave must not overtake the broadcast).
      const [a0, a1, , b1] = await everywhere();
      for (let i = 0; i < 10; i++) {
        await Promise.all([call(a1, "join", "ord"), call(b1, "join", "ord")]);
        const got = [a1, b1].map((c) => once(c, "before-leave", 5000));
        const sent = call(a0, "broadcast", { event: "before-leave", to: ["ord"], args: [i] });
        const left = call(a0, "sockets-leave", { in: ["ord"], rooms: ["ord"] });
        await Promise.all([sent, left]);
        for (const args of await Promise.all(got)) assert.equal(args[0], i, `round ${i}`);
        // The leave applied everywhere before the next round joins again.
        await waitFor(async () => (await call(a0, "fetch-sockets", { in: ["ord"] })).length === 0, 5000, 50);
      }
    });

    it("one worker's broadcasts reach a worker of the same host, and one of the other, in order", T, async () => {
      const [a0, a1, b0] = await everywhere();
      const seen = [[], []];
      a1.on("seq", (n) => seen[0].push(n));
      b0.on("seq", (n) => seen[1].push(n));
      for (let i = 0; i < 30; i++) call(a0, "broadcast", { event: "seq", args: [i] });
      await waitFor(() => seen.every((s) => s.length === 30), 10000);
      const order = Array.from({ length: 30 }, (_, i) => i);
      assert.deepEqual(seen, [order, order]);
    });
  });
}
