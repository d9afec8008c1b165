// `--shared-port`: the primary accepts on `--port` and hands each connection to a
// worker (its descriptor over a socketpair): a request with a sid to the worker
// that owns the session, a new session to the least-loaded worker. Official
// clients connect through the one port with every transport; a keep-alive
// connection never carries a request to another session's worker; a hostile first
// request is answered by the primary itself while others still connect.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import {
  REPO_ROOT, clusterBinary, clusterSkipReason, connect, closeAll, call, waitFor,
} from "./harness.mjs";

const skip = clusterSkipReason();
const T = { timeout: 20000 };
const HOOK = { timeout: 30000 };
const WORKERS = 3;
const POLLING = "/socket.io/?EIO=4&transport=polling";

/** Starts the interop cluster with `--shared-port` on a random free base. */
async function startShared(workers) {
  const bin = clusterBinary();
  if (!existsSync(bin)) throw new Error(`cluster binary not found: ${bin}`);
  for (let attempt = 0; attempt < 6; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    const proc = spawn(bin, ["--cluster", "--workers", String(workers), "--port", String(base), "--shared-port"], {
      cwd: REPO_ROOT,
      env: { ...process.env, NOTIFY_SOCKET: "" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => { if (log.length < 1_000_000) log += d; });
    const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
    const ready = new RegExp(`ready: http://127\\.0\\.0\\.1:${base} shared by ${workers} workers`);
    const outcome = await Promise.race([
      waitFor(() => ready.test(log), 15000).then(() => "ready", () => "timeout"),
      exited.then(() => "exited"),
    ]);
    if (outcome === "ready") {
      return {
        base,
        url: `http://127.0.0.1:${base}`,
        log: () => log,
        async stop() {
          proc.kill("SIGTERM");
          const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
          const res = await exited;
          clearTimeout(timer);
          return res;
        },
      };
    }
    proc.kill("SIGKILL");
    await exited;
    if (!/cannot listen on/.test(log)) throw new Error(`cluster did not start (${outcome}):\n${log.slice(-3000)}`);
  }
  throw new Error("no free base port found");
}

/** Status, headers and body of one GET on a new connection. */
function get(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: no answer within 5 s`)));
    req.on("error", reject);
  });
}

/** Opens an Engine.IO polling session on a new connection: its sid. */
async function handshake(port) {
  const res = await get(port, POLLING);
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body.slice(1)).sid;
}

/**
 * Writes `chunks` (strings; a number waits that many ms) on a raw connection and
 * resolves with everything the server sent once it closed, or `timedOut` after `ms`.
 */
function raw(port, chunks, ms) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let got = "";
    let done = false;
    const started = Date.now();
    const finish = (timedOut) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ got, timedOut, elapsed: Date.now() - started });
    };
    const timer = setTimeout(() => finish(true), ms);
    sock.setEncoding("latin1");
    sock.on("data", (d) => { got += d; });
    sock.on("close", () => finish(false));
    sock.on("error", (e) => (done ? null : e.code === "ECONNRESET" ? finish(false) : reject(e)));
    sock.on("connect", async () => {
      for (const c of chunks) {
        if (done) return;
        if (typeof c === "number") await new Promise((r) => setTimeout(r, c));
        else sock.write(c);
      }
    });
  });
}

/** Broadcasts a token from `sender`; resolves once every client of `clients` has it. */
async function broadcastReachesAll(sender, clients) {
  const token = `t-${Math.random()}`;
  const waits = clients.map((c) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`client ${c.id} missed the broadcast`)), 5000);
    c.on("sync", function h(t) {
      if (t !== token) return;
      clearTimeout(timer);
      c.off("sync", h);
      resolve();
    });
  }));
  assert.equal(await call(sender, "broadcast", { event: "sync", args: [token] }), "ok");
  await Promise.all(waits);
}

/** Connects `n` clients through the shared port: [clients, their worker indexes]. */
async function connectMany(url, n, opts) {
  const clients = [];
  for (let i = 0; i < n; i++) clients.push(await connect(url, opts, 5000));
  const workers = await Promise.all(clients.map((c) => call(c, "worker")));
  return [clients, workers];
}

describe(`cluster --shared-port: ${WORKERS} workers behind one port`, { skip }, () => {
  let cluster;
  before(async () => { cluster = await startShared(WORKERS); }, HOOK);
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    if (!cluster) return;
    const res = await cluster.stop();
    assert.deepEqual(res, { code: 0, signal: null }, `primary did not exit 0:\n${cluster.log().slice(-3000)}`);
  }, HOOK);

  it("polling clients spread over the workers and hear each other's broadcasts", T, async () => {
    const [clients, workers] = await connectMany(cluster.url, 6, { transports: ["polling"] });
    assert.equal(new Set(workers).size, WORKERS, `new sessions go to the least-loaded worker: ${workers}`);
    for (const c of clients) assert.equal(c.io.engine.transport.name, "polling");
    await broadcastReachesAll(clients[0], clients);
    await broadcastReachesAll(clients[clients.length - 1], clients);
    // Every later request found its session's worker (a stray one ends the session).
    assert.deepEqual(await Promise.all(clients.map((c) => call(c, "worker"))), workers);
    assert.ok(clients.every((c) => c.connected));
  });

  it("WebSocket clients spread over the workers and hear each other's broadcasts", T, async () => {
    const [clients, workers] = await connectMany(cluster.url, 6, { transports: ["websocket"] });
    assert.equal(new Set(workers).size, WORKERS, `${workers}`);
    for (const c of clients) assert.equal(c.io.engine.transport.name, "websocket");
    await broadcastReachesAll(clients[1], clients);
  });

  it("polling clients upgrade to WebSocket on their session's worker", T, async () => {
    const [clients, workers] = await connectMany(cluster.url, 6, {});
    assert.equal(new Set(workers).size, WORKERS, `${workers}`);
    await waitFor(() => clients.every((c) => c.io.engine.transport.name === "websocket"), 5000);
    assert.deepEqual(await Promise.all(clients.map((c) => call(c, "worker"))), workers);
    await broadcastReachesAll(clients[2], clients);
  });

  it("a keep-alive connection never carries a request to another session's worker", T, async () => {
    const a = await handshake(cluster.base);
    const b = await handshake(cluster.base);
    assert.notEqual(a.slice(0, 2), b.slice(0, 2), `two new sessions, two workers: ${a} ${b}`);
    // A keep-alive client whose requests alternate between the two sessions: each
    // reaches its session's worker (the connection is closed after each answer,
    // and the next request routed again).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const request = (method, sid, body) => new Promise((resolve, reject) => {
      const req = http.request({
        host: "127.0.0.1", port: cluster.base, method, path: `${POLLING}&sid=${sid}`, agent, timeout: 5000,
        headers: body ? { "Content-Type": "text/plain;charset=UTF-8" } : {},
      }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => { text += d; });
        res.on("end", () => resolve({ status: res.statusCode, text }));
      });
      req.on("timeout", () => req.destroy(new Error(`${method} ${sid}: no answer within 5 s`)));
      req.on("error", reject);
      req.end(body);
    });
    try {
      // Socket.IO CONNECT to "/" on each session, then each one's answer.
      for (const sid of [a, b]) assert.deepEqual(await request("POST", sid, "40"), { status: 200, text: "ok" }, `POST ${sid}`);
      for (const sid of [a, b]) {
        const res = await request("GET", sid);
        assert.equal(res.status, 200, `GET ${sid}: ${res.text}`);
        assert.match(res.text, /^40\{"sid":/, `GET ${sid}`);
      }
    } finally {
      agent.destroy();
    }
    // Pipelined on one connection: the first request's worker answers it and closes
    // the connection; the second is never answered there ("Session ID unknown").
    const req = (sid) => `GET ${POLLING}&sid=${sid} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n`;
    const res = await raw(cluster.base, [req(a) + req(b)], 8000);
    assert.equal(res.timedOut, false, `the connection stays open: ${JSON.stringify(res.got)}`);
    const statuses = res.got.match(/^HTTP\/1\.1 \d+/gm) ?? [];
    assert.deepEqual(statuses, ["HTTP/1.1 200"], `one answer, by a's worker: ${JSON.stringify(res.got)}`);
    assert.match(res.got, /\r\nconnection: close\r\n/i);
  });

  it("a hostile first request is answered by the primary; clients still connect", T, async () => {
    const [slow, long, bad] = await Promise.all([
      // Slowloris: a byte a second, never a line end.
      raw(cluster.base, ["GET /socket.io/?EIO=4", 1000, "&", 1000, "a", 1000, "b", 1000, "c", 1000, "d", 1000, "e", 1000, "f"], 9000),
      raw(cluster.base, ["GET /" + "a".repeat(9000)], 5000),
      raw(cluster.base, ["hello there\r\n\r\n"], 5000),
      // Meanwhile a client connects and talks.
      (async () => {
        const c = await connect(cluster.url, {}, 5000);
        assert.equal(typeof await call(c, "worker"), "number");
      })(),
    ]);
    assert.equal(slow.timedOut, false, "the slow connection is closed");
    assert.match(slow.got, /^HTTP\/1\.1 408 /, JSON.stringify(slow.got));
    assert.ok(slow.elapsed >= 4000 && slow.elapsed < 8000, `closed after ${slow.elapsed} ms`);
    assert.match(long.got, /^HTTP\/1\.1 414 /, JSON.stringify(long.got));
    assert.equal(long.timedOut, false);
    assert.match(bad.got, /^HTTP\/1\.1 400 /, JSON.stringify(bad.got));
    assert.equal(bad.timedOut, false);
  });
});
