// Shared helpers for the interop tests.
//
// Server under test:
//   RSIO_INTEROP_SERVER="<command line>"  spawn that (split on whitespace)
//   INTEROP_REFERENCE=1                   spawn `node tests/js/reference-server.mjs --port 0`
//   default                               <repo>/target/debug/examples/interop --port 0
// The process must print `listening on http://127.0.0.1:<port>` on stdout.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { existsSync } from "node:fs";
import net from "node:net";
import { before, after, afterEach } from "node:test";
import { io as ioClient } from "socket.io-client";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, "..", "..");

const START_TIMEOUT_MS = 15000;
export const DEFAULT_TIMEOUT_MS = 3000;

export function serverCommand() {
  if (process.env.RSIO_INTEROP_SERVER) {
    const parts = process.env.RSIO_INTEROP_SERVER.trim().split(/\s+/);
    return { cmd: parts[0], args: parts.slice(1) };
  }
  if (process.env.INTEROP_REFERENCE === "1") {
    return { cmd: process.execPath, args: [path.join(here, "reference-server.mjs"), "--port", "0"] };
  }
  return { cmd: path.join(REPO_ROOT, "target", "debug", "examples", "interop"), args: ["--port", "0"] };
}

/**
 * Spawns the server under test and resolves with { url, port, proc, stop() }
 * once it printed its `listening on` line.
 */
export function startServer() {
  const { cmd, args } = serverCommand();
  if (path.isAbsolute(cmd) && !existsSync(cmd)) {
    return Promise.reject(
      new Error(`interop server binary not found: ${cmd} (build it with \`cargo build --example interop\`, ` +
        `or set RSIO_INTEROP_SERVER / INTEROP_REFERENCE=1)`),
    );
  }
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, PORT: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      proc.kill("SIGKILL");
      reject(new Error(`server did not print "listening on" within ${START_TIMEOUT_MS} ms; stdout=${out} stderr=${err}`));
    }, START_TIMEOUT_MS);
    proc.stdout.setEncoding("utf8");
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => {
      if (err.length < 20000) err += d;
      if (process.env.INTEROP_SERVER_LOG) process.stderr.write(d);
    });
    proc.stdout.on("data", (d) => {
      if (done) return;
      out += d;
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:(\d+))/);
      if (m) {
        done = true;
        clearTimeout(timer);
        const server = {
          url: m[1],
          port: Number(m[2]),
          proc,
          stop: () => stopProcess(proc),
          stderr: () => err,
        };
        resolve(server);
      }
    });
    proc.on("error", (e) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(e);
    });
    proc.on("exit", (code, signal) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}); stdout=${out} stderr=${err}`));
    });
  });
}

function stopProcess(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const kill = setTimeout(() => proc.kill("SIGKILL"), 2000);
    proc.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    proc.kill("SIGTERM");
  });
}

// ---- clients ----------------------------------------------------------------

const openClients = new Set();

/** A client that is not connected yet (autoConnect false); tracked for closeAll(). */
export function client(url, opts = {}) {
  const socket = ioClient(url, {
    autoConnect: false,
    forceNew: true,
    reconnection: false,
    timeout: DEFAULT_TIMEOUT_MS,
    ...opts,
  });
  openClients.add(socket);
  return socket;
}

/** Connects and resolves once `connect` fired; rejects on connect_error / timeout. */
export async function connect(url, opts = {}, ms = DEFAULT_TIMEOUT_MS) {
  const socket = client(url, opts);
  const connected = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.disconnect();
      reject(new Error(`connect to ${url} timed out after ${ms} ms`));
    }, ms);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      socket.disconnect();
      reject(err);
    };
    function cleanup() {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    }
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
  socket.connect();
  return connected;
}

/** Disconnects every client created through this module. */
export function closeAll() {
  for (const s of openClients) {
    s.io.reconnection(false);
    s.disconnect();
    s.io.engine?.close();
  }
  openClients.clear();
}

// ---- events -------------------------------------------------------------------

/** Resolves with the args array of the next `event` on `emitter`; rejects after `ms`. */
export function once(emitter, event, ms = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    };
    emitter.on(event, handler);
  });
}

/** Resolves true if `event` fires within `ms`, false otherwise. */
export function fires(emitter, event, ms) {
  return once(emitter, event, ms).then(
    () => true,
    () => false,
  );
}

/** Records every occurrence of `event` (args arrays) into the returned array. */
export function collect(emitter, event) {
  const seen = [];
  emitter.on(event, (...args) => seen.push(args));
  return seen;
}

/** Emits with an ack and resolves with the ack args array; rejects after `ms`. */
export function ack(socket, event, ...args) {
  return ackWithin(DEFAULT_TIMEOUT_MS, socket, event, ...args);
}

export function ackWithin(ms, socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(event, ...args, (err, ...res) => {
      if (err) reject(new Error(`no ack for "${event}" within ${ms} ms`));
      else resolve(res);
    });
  });
}

/** First ack argument. */
export async function call(socket, event, ...args) {
  const res = await ack(socket, event, ...args);
  return res[0];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; rejects after `ms`. */
export async function waitFor(fn, ms = DEFAULT_TIMEOUT_MS, every = 25) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await sleep(every);
  }
}

/** Server-side record of a socket's disconnect, via a helper client on `/`. */
export function lastDisconnect(helper, id) {
  return call(helper, "last-disconnect", id);
}

export async function waitForDisconnectRecord(helper, id, ms = DEFAULT_TIMEOUT_MS) {
  return waitFor(() => lastDisconnect(helper, id), ms);
}

/** Per-test timeout used by the test files (ms). */
export const TEST_TIMEOUT = 8000;

// ---- per-file server lifecycle -----------------------------------------------

/**
 * Registers before/after hooks that start one server for the calling test
 * file (or describe block) and stop it at the end; every client created via
 * this module is disconnected after each test. Returns a context whose `url`
 * is set once the server is up.
 */
export function useServer() {
  const ctx = { url: null, server: null };
  before(async () => {
    ctx.server = await startServer();
    ctx.url = ctx.server.url;
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await ctx.server?.stop();
  });
  return ctx;
}

// ---- connection state recovery offsets ---------------------------------------
// With connectionStateRecovery on, the server appends the packet's offset (a
// string) as the LAST argument of every event it sends without an ack id and
// without the volatile flag (socket.emit and broadcasts alike). socket.io-client
// does NOT strip it: listeners see it as an extra argument (and the client keeps
// it as `_lastOffset`). These helpers check and remove it.

/** Asserts that the last arg is an offset string and returns the other args. */
export function stripOffset(args) {
  if (!Array.isArray(args) || args.length === 0) {
    throw new Error(`expected event args ending with an offset, got ${JSON.stringify(args)}`);
  }
  const last = args[args.length - 1];
  if (typeof last !== "string" || last.length === 0) {
    throw new Error(`expected a non-empty offset string as last event arg, got ${JSON.stringify(args)}`);
  }
  return args.slice(0, -1);
}

/** `once` + `stripOffset`. */
export async function onceEvent(emitter, event, ms = DEFAULT_TIMEOUT_MS) {
  return stripOffset(await once(emitter, event, ms));
}

// ---- cluster mode ---------------------------------------------------------------
// `interop --cluster --workers N --port BASE`: a primary plus N workers, worker i
// serving BASE + i. The primary logs to stderr, per worker
// `worker I (pid P) listening on http://127.0.0.1:PORT`, then once
// `ready: http://127.0.0.1:BASE..LAST (N workers)`.

const CLUSTER_START_TIMEOUT_MS = 15000;
/** Exit status of the primary when a port cannot be bound (EX_UNAVAILABLE). */
const EXIT_BIND = 69;

/** The rsio interop binary used in cluster mode (`RSIO_CLUSTER_BIN` overrides). */
export function clusterBinary() {
  return process.env.RSIO_CLUSTER_BIN || path.join(REPO_ROOT, "target", "debug", "examples", "interop");
}

/**
 * Why the cluster tests cannot run here (a string for node:test's `skip`), or false.
 * The Node reference server has no cluster mode.
 */
export function clusterSkipReason() {
  if (process.env.INTEROP_REFERENCE === "1") return "the Node reference server has no cluster mode";
  return false;
}

function randomBase(workers) {
  return 20000 + Math.floor(Math.random() * (40000 - workers));
}

/**
 * Starts `interop --cluster --workers <workers> --port <random base>` (another base
 * when the primary cannot bind one: exit status 69, "cannot listen on") and resolves
 * once the primary logged its `ready:` line. The returned cluster:
 *   proc, pid, base, workers, ports[i], urls[i]
 *   pids: Map worker index → current pid (from the `listening on` log lines)
 *   allPids(): every pid seen (primary, every worker incarnation)
 *   log(): the stderr so far
 *   waitForLog(regex, ms, from = 0): the first match in stderr after offset `from`
 *   exited: Promise<{code, signal}>
 *   stop(signal = "SIGTERM", ms = 5000): signals the primary, resolves {code, signal, killed}
 *     (SIGKILL after `ms`, then killed: true)
 */
export async function startCluster({ workers = 3, args = [], env = {}, attempts = 6 } = {}) {
  const bin = clusterBinary();
  if (!existsSync(bin)) {
    throw new Error(`cluster binary not found: ${bin} (build it with \`cargo build --example interop\`, or set RSIO_CLUSTER_BIN)`);
  }
  let lastError;
  for (let i = 0; i < attempts; i++) {
    const base = randomBase(workers);
    try {
      return await spawnCluster(bin, base, workers, args, env);
    } catch (e) {
      lastError = e;
      if (!e.bindFailure) throw e;
    }
  }
  throw lastError;
}

function spawnCluster(bin, base, workers, args, env) {
  const childEnv = { ...process.env, ...env };
  // Only the tests that mean it talk sd_notify.
  if (!("NOTIFY_SOCKET" in env)) delete childEnv.NOTIFY_SOCKET;
  const proc = spawn(bin, ["--cluster", "--workers", String(workers), "--port", String(base), ...args], {
    cwd: REPO_ROOT,
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const ports = Array.from({ length: workers }, (_, i) => base + i);
  const cluster = {
    proc,
    pid: proc.pid,
    base,
    workers,
    ports,
    urls: ports.map((p) => `http://127.0.0.1:${p}`),
    pids: new Map(),
    seen: new Set([proc.pid]),
    allPids() {
      return [...this.seen];
    },
    log: () => err,
    waitForLog,
    exited: null,
    stop,
  };
  let err = "";
  let waiters = [];
  const workerLine = /worker (\d+) \(pid (\d+)\) listening on http:\/\/127\.0\.0\.1:(\d+)/g;
  let scanned = 0;
  proc.stdout.resume();
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => {
    if (err.length < 4_000_000) err += d;
    if (process.env.INTEROP_SERVER_LOG) process.stderr.write(d);
    // complete lines only
    const end = err.lastIndexOf("\n") + 1;
    workerLine.lastIndex = scanned;
    const chunk = err.slice(0, end);
    let m;
    while ((m = workerLine.exec(chunk))) {
      const pid = Number(m[2]);
      cluster.pids.set(Number(m[1]), pid);
      cluster.seen.add(pid);
    }
    scanned = Math.max(scanned, end);
    waiters = waiters.filter((w) => !w.check());
  });
  let exitInfo = null;
  cluster.exited = new Promise((resolve) => {
    proc.on("exit", (code, signal) => {
      exitInfo = { code, signal };
      // let the last stderr chunk arrive before waiters give up
      setImmediate(() => {
        for (const w of waiters) w.fail();
        waiters = [];
        resolve(exitInfo);
      });
    });
  });

  function waitForLog(regex, ms = DEFAULT_TIMEOUT_MS, from = 0) {
    return new Promise((resolve, reject) => {
      const w = {
        check() {
          const m = regex.exec(err.slice(from));
          if (m) {
            clearTimeout(w.timer);
            resolve(m);
            return true;
          }
          return false;
        },
        fail() {
          clearTimeout(w.timer);
          reject(new Error(`cluster exited (${JSON.stringify(exitInfo)}) before logging ${regex}; stderr:\n${tail(err)}`));
        },
      };
      if (w.check()) return;
      if (exitInfo) return w.fail();
      w.timer = setTimeout(() => {
        waiters = waiters.filter((x) => x !== w);
        reject(new Error(`cluster did not log ${regex} within ${ms} ms; stderr:\n${tail(err)}`));
      }, ms);
      waiters.push(w);
    });
  }

  async function stop(signal = "SIGTERM", ms = 5000) {
    if (exitInfo) return { ...exitInfo, killed: false };
    proc.kill(signal);
    let timer;
    const killed = new Promise((resolve) => {
      timer = setTimeout(() => {
        proc.kill("SIGKILL");
        resolve(true);
      }, ms);
    });
    const res = await Promise.race([cluster.exited.then(() => false), killed]);
    clearTimeout(timer);
    const info = await cluster.exited;
    return { ...info, killed: res };
  }

  const last = base + workers - 1;
  const ready = new RegExp(`ready: http://127\\.0\\.0\\.1:${base}\\.\\.${last} \\(${workers} workers\\)`);
  return waitForLog(ready, CLUSTER_START_TIMEOUT_MS).then(
    () => cluster,
    async (e) => {
      const info = exitInfo ?? (await stop("SIGKILL"));
      if (info.code === EXIT_BIND && /cannot listen on/.test(err)) {
        const b = new Error(`cannot bind ports ${base}..${last}`);
        b.bindFailure = true;
        throw b;
      }
      throw e;
    },
  );
}

function tail(text, n = 4000) {
  return text.length > n ? "…" + text.slice(-n) : text;
}

/**
 * Connects a client to worker `index` of `cluster` and checks (with the `worker`
 * ack) that this worker serves it. Resolves with the socket.
 */
export async function connectWorker(cluster, index, opts = {}, ms = DEFAULT_TIMEOUT_MS) {
  const socket = await connect(cluster.urls[index], opts, ms);
  const w = await call(socket, "worker");
  if (w !== index) throw new Error(`client on port ${cluster.ports[index]} is served by worker ${w}, not ${index}`);
  return socket;
}

/** `GET /stats` of worker `i` of an interop cluster (its counters). */
export async function workerStats(cluster, i) {
  const res = await fetch(`${cluster.urls[i]}/stats`, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) throw new Error(`GET /stats of worker ${i}: ${res.status}`);
  return res.json();
}

/** Resolves with the arguments of the next `event` whose first argument is `token`. */
export function waitToken(socket, event, token, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`${socket.name ?? socket.id} did not receive ${event} ${token} within ${ms} ms`));
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

/** Whether process `pid` still exists (signal 0). */
export function processExists(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

/** A loopback port that was free a moment ago (bound, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}
