// Helpers for the tests that mix rsio and Node servers on one Redis: a
// throwaway redis-server on a free loopback port (no persistence, its own
// temporary directory), and servers started with extra arguments.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";
import { before, after, afterEach, it } from "node:test";
import { REPO_ROOT, startCluster, connectWorker, call, once, fires, waitFor, closeAll, TEST_TIMEOUT } from "./harness.mjs";

const START_TIMEOUT_MS = 15000;

/** Why the Redis tests cannot run here (for node:test's `skip`), or false. */
export function redisSkipReason() {
  const probe = spawnSync("redis-server", ["--version"], { stdio: "ignore" });
  if (probe.error || probe.status !== 0) return "redis-server is not installed (scripts/setup installs it)";
  if (process.env.INTEROP_REFERENCE === "1") return "mixes rsio with Node: not a reference-server test";
  return false;
}

/** Spawns `cmd args` and resolves with { proc, stop(), output() } once stdout matches `ready`. */
function spawnUntil(cmd, args, ready, opts = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"], ...opts });
    let out = "";
    let err = "";
    let done = false;
    const fail = (e) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      proc.kill("SIGKILL");
      reject(e);
    };
    const timer = setTimeout(
      () => fail(new Error(`${cmd} not ready within ${START_TIMEOUT_MS} ms; stdout=${out} stderr=${err}`)),
      START_TIMEOUT_MS,
    );
    proc.stdout.setEncoding("utf8");
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => {
      if (err.length < 200000) err += d;
      if (process.env.INTEROP_SERVER_LOG) process.stderr.write(d);
    });
    proc.stdout.on("data", (d) => {
      if (out.length < 200000) out += d;
      if (done) return;
      const m = out.match(ready);
      if (m) {
        done = true;
        clearTimeout(timer);
        resolve({ proc, match: m, stop: () => stop(proc), output: () => out + err });
      }
    });
    proc.on("error", fail);
    proc.on("exit", (code, signal) =>
      fail(new Error(`${cmd} exited early (code ${code}, signal ${signal}); stdout=${out} stderr=${err}`)),
    );
  });
}

function stop(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const kill = setTimeout(() => proc.kill("SIGKILL"), 3000);
    proc.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    proc.kill("SIGTERM");
  });
}

/** The first port of the kernel's ephemeral range (client sockets' ports). */
function ephemeralLow() {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 12000 ? low : 32768;
  } catch {
    return 32768;
  }
}

/** A random loopback port for a Redis that is not started yet: below the
 * ephemeral range, so that no client socket of another test takes it before
 * the Redis binds it ("Redis down at start" starts it seconds later). */
export function randomPort() {
  const from = 10000;
  return from + Math.floor(Math.random() * (ephemeralLow() - from));
}

/**
 * A redis-server on 127.0.0.1 and a random free port (or `port`, tried once):
 * { url, port, stop() }.
 */
export async function startRedis({ port: fixed, attempts = 5 } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "rsio-redis-"));
  for (let i = 0; ; i++) {
    const port = fixed ?? randomPort();
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--dir", dir, "--protected-mode", "yes"];
    try {
      const r = await spawnUntil("redis-server", args, /Ready to accept connections/);
      return {
        url: `redis://127.0.0.1:${port}`,
        port,
        proc: r.proc,
        stop: async () => {
          await r.stop();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    } catch (e) {
      if (fixed !== undefined || i + 1 >= attempts) {
        rmSync(dir, { recursive: true, force: true });
        throw e;
      }
    }
  }
}

/**
 * The rsio interop example as a member of the cluster at `url` (comma-separated
 * node URLs for a Redis Cluster), with adapter `kind` ("streams" or "classic").
 */
export async function startRsio(url, kind = "streams") {
  const bin = path.join(REPO_ROOT, "target", "debug", "examples", "interop");
  const r = await spawnUntil(bin, ["--port", "0", `--redis-${kind}`, url], /listening on (http:\/\/127\.0\.0\.1:\d+)/, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  return { url: r.match[1], proc: r.proc, stop: r.stop, output: r.output };
}

/** The Node server (redis-node-server.mjs) on the same Redis, with adapter `kind`. */
export async function startNode(url, kind = "streams") {
  const script = path.join(REPO_ROOT, "tests", "js", "redis-node-server.mjs");
  const r = await spawnUntil(process.execPath, [script, "--port", "0", "--redis", url, "--adapter", kind], /listening on (http:\/\/127\.0\.0\.1:\d+)/);
  return { url: r.match[1], proc: r.proc, stop: r.stop, output: r.output };
}

/**
 * A Redis Cluster of three masters (no replicas): real redis-server processes
 * on free loopback ports, each with its own temporary directory, joined with
 * `redis-cli --cluster create`: { urls, ports, stop() } once `cluster_state:ok`.
 */
export async function startRedisCluster({ attempts = 5 } = {}) {
  for (let i = 0; ; i++) {
    const base = randomPort();
    const ports = [base, base + 1, base + 2];
    const dirs = ports.map(() => mkdtempSync(path.join(tmpdir(), "rsio-redis-cluster-")));
    const nodes = [];
    const stopAll = async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    };
    try {
      for (const [j, port] of ports.entries()) {
        const args = ["--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
          "--cluster-config-file", path.join(dirs[j], "nodes.conf"), "--save", "", "--appendonly", "no",
          "--dir", dirs[j], "--protected-mode", "yes"];
        nodes.push(await spawnUntil("redis-server", args, /Ready to accept connections/));
      }
      const create = spawnSync("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`),
        "--cluster-replicas", "0", "--cluster-yes"], { encoding: "utf8", timeout: START_TIMEOUT_MS });
      if (create.status !== 0) throw new Error(`redis-cli --cluster create: ${create.stdout} ${create.stderr}`);
      const deadline = Date.now() + START_TIMEOUT_MS;
      for (;;) {
        const ok = ports.every((p) => {
          const info = spawnSync("redis-cli", ["-p", String(p), "cluster", "info"], { encoding: "utf8", timeout: 2000 });
          return /cluster_state:ok/.test(info.stdout ?? "");
        });
        if (ok) break;
        if (Date.now() > deadline) throw new Error("redis cluster not ok in time");
        await new Promise((r) => setTimeout(r, 200));
      }
      return { urls: ports.map((p) => `redis://127.0.0.1:${p}`), ports, stop: stopAll };
    } catch (e) {
      await stopAll();
      if (i + 1 >= attempts) throw e;
    }
  }
}

/** Why the Redis Cluster tests cannot run here, or false. */
export function redisClusterSkipReason() {
  const base = redisSkipReason();
  if (base) return base;
  const probe = spawnSync("redis-cli", ["--version"], { stdio: "ignore" });
  if (probe.error || probe.status !== 0) return "redis-cli is not installed (scripts/setup installs redis-tools)";
  return false;
}

/**
 * A throwaway redis-server and `count` rsio hosts (clusters of `workers`) on
 * it, with `--redis-adapter kind` (and `--recovery` when `recovery`): for a
 * describe block's `before`. `stop()` stops the hosts, then Redis.
 */
export async function startRedisHosts({ kind, recovery = false, count = 2, workers = 2 }) {
  const redis = await startRedis();
  const args = ["--redis", redis.url, "--redis-adapter", kind, ...(recovery ? ["--recovery"] : [])];
  const hosts = await Promise.all(Array.from({ length: count }, () => startCluster({ workers, args })));
  return {
    redis,
    hosts,
    async stop() {
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    },
  };
}

/**
 * In the calling describe block: [startRedisHosts] before its tests, the
 * clients closed after each, the hosts and Redis stopped after all. Returns
 * `{ redis, hosts }`, set once they run.
 */
export function redisHostsFor(options) {
  const env = { redis: undefined, hosts: undefined };
  let setup;
  before(async () => {
    setup = await startRedisHosts(options);
    env.redis = setup.redis;
    env.hosts = setup.hosts;
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await setup?.stop();
  });
  return env;
}

/** One client on each worker of each host (host by host), once every worker counts every other as a server. */
export async function connectEverywhere(hosts, workers) {
  const list = [];
  for (const h of hosts) for (let i = 0; i < workers; i++) list.push(await connectWorker(h, i));
  await waitFor(async () => {
    const counts = await Promise.all(list.map((c) => call(c, "server-count")));
    return counts.every((n) => n === hosts.length * workers);
  }, 20000, 100);
  return list;
}

/** The server-side operations between an rsio and a Node server on one Redis,
 * whichever adapter they speak: `pair()` gives a client of each (rsio's first).
 * fetchSockets sees both sides' sockets, rooms and data; socketsJoin,
 * socketsLeave and disconnectSockets apply across, both ways. */
export function serverOpsAcross(pair) {
  it("fetchSockets from either side sees both sides' sockets, rooms and data", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    await Promise.all([call(a, "join", "fs"), call(b, "join", "fs")]);
    await Promise.all([call(a, "set-data", { side: "rsio" }), call(b, "set-data", { side: "node" })]);
    for (const asker of [a, b]) {
      const list = await call(asker, "fetch-sockets", { in: ["fs"] });
      const byId = Object.fromEntries(list.map((s) => [s.id, s]));
      assert.deepEqual(Object.keys(byId).sort(), [a.id, b.id].sort());
      assert.deepEqual(byId[a.id].rooms, [a.id, "fs"].sort());
      assert.deepEqual(byId[b.id].rooms, [b.id, "fs"].sort());
      assert.deepEqual(byId[b.id].data, { side: "node" });
      assert.deepEqual(byId[a.id].data, { side: "rsio" });
    }
  });

  it("socketsJoin and socketsLeave apply across", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    const roomsOf = async (asker, id) => (await call(asker, "fetch-sockets", { in: [id] }))[0]?.rooms ?? [];
    // rsio makes Node's socket join, Node makes rsio's socket join.
    await call(a, "sockets-join", { in: [b.id], rooms: ["j1"] });
    await call(b, "sockets-join", { in: [a.id], rooms: ["j2"] });
    await waitFor(async () => (await roomsOf(a, b.id)).includes("j1"));
    await waitFor(async () => (await roomsOf(b, a.id)).includes("j2"));
    await call(a, "sockets-leave", { in: [b.id], rooms: ["j1"] });
    await call(b, "sockets-leave", { in: [a.id], rooms: ["j2"] });
    await waitFor(async () => !(await roomsOf(a, b.id)).includes("j1"));
    await waitFor(async () => !(await roomsOf(b, a.id)).includes("j2"));
  });

  it("disconnectSockets applies across, both ways", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    const [a2, b2] = await pair();
    const gone = [once(b, "disconnect"), once(a, "disconnect")];
    await call(a2, "disconnect-sockets", { in: [b.id] });
    await call(b2, "disconnect-sockets", { in: [a.id] });
    const [[rb], [ra]] = await Promise.all(gone);
    assert.equal(rb, "io server disconnect");
    assert.equal(ra, "io server disconnect");
  });
}

/** Broadcasts between an rsio and a Node server on one Redis, each way:
 * `pair()` gives a client of each (rsio's first), `argsOf` takes an event's
 * arguments as sent out of those received (the streams adapter appends the
 * offset). Rooms and except, binary, acks of both servers' clients, and
 * serverSideEmit with acks. */
export function broadcastsAcross(pair, argsOf) {
  for (const [from, label] of [[0, "rsio → Node"], [1, "Node → rsio"]]) {
    it(`broadcast to a room and except a room, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const [a1, b1] = await pair();
      const [a2, b2] = await pair();
      await Promise.all([call(a1, "join", "r1"), call(b1, "join", "r1"), call(b2, "join", "muted")]);
      const sender = [a2, b2][from];
      const inRoom = [once(a1, "to-room"), once(b1, "to-room")];
      const outside = [fires(a2, "to-room", 400), fires(b2, "to-room", 400)];
      await call(sender, "broadcast", { event: "to-room", to: ["r1"], args: ["x"] });
      for (const args of await Promise.all(inRoom)) assert.deepEqual(argsOf(args), ["x"]);
      assert.deepEqual(await Promise.all(outside), [false, false]);

      const except = [a1, a2, b1].map((c) => once(c, "not-muted"));
      const muted = fires(b2, "not-muted", 400);
      await call(sender, "broadcast", { event: "not-muted", except: ["muted"], args: [] });
      await Promise.all(except);
      assert.equal(await muted, false);
    });

    it(`binary arguments cross as binary, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      const got = clients.map((c) => once(c, "bin"));
      await call(clients[from], "broadcast", { event: "bin", args: [Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) }] });
      for (const args of await Promise.all(got)) {
        const rest = argsOf(args);
        assert.deepEqual([...rest[0]], [1, 2, 3]);
        assert.deepEqual([...rest[1].nested], [4]);
      }
    });

    it(`broadcast with acks collects both servers' clients, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      for (const [i, c] of clients.entries()) c.on("ask", (cb) => cb(`answer-${i}`));
      const res = await call(clients[from], "broadcast-with-ack", { event: "ask", args: [], timeout: 2000 });
      assert.equal(res.err, null, JSON.stringify(res));
      assert.deepEqual(res.responses.sort(), ["answer-0", "answer-1"]);
    });

    it(`serverSideEmit with acks reaches the other server, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      const res = await call(clients[from], "server-side-emit", { event: "which-worker", args: [], timeout: 2000 });
      assert.equal(res.err, null, JSON.stringify(res));
      assert.deepEqual(res.responses, [from === 0 ? "node" : 0]);
    });
  }
}
