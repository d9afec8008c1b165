// `--admin-ui`: the `/admin` namespace protocol of the official Socket.IO Admin UI
// (@socket.io/admin-ui 0.5.1), spoken to with socket.io-client as the page does,
// against a 2-worker cluster (the interop example): login (bcrypt) and its refusal,
// session ids valid on every worker, config features (read-only too), server_stats
// from both workers, every socket of both workers with its rooms, live events, and
// the operations carried across workers. Also the page under /admin/.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startChat } from "./chat-cluster.mjs";
import {
  REPO_ROOT, startCluster, connectWorker, clusterSkipReason, closeAll, client, call, once, waitFor,
  sleep, TEST_TIMEOUT,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT * 2 };
const HOOK = { timeout: 30000 };
const WS = { transports: ["websocket"] };
const USER = "admin";
const PASSWORD = "s3cret-pass";
// bcryptjs.hashSync(PASSWORD, 4), as the package's README makes one.
const HASH = "$2a$04$QMWzuhrxcodfTUdmwSuYzucvjfkSBm2wOte0ulLkUbjTDUHdfwCFG";
const DIST = path.join(REPO_ROOT, "admin-ui/node_modules/@socket.io/admin-ui/ui/dist");
const ALL_FEATURES = [
  "EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS",
];

/** An admin page's socket on worker `index`, its listeners on before it connects. */
function admin(cluster, index, auth) {
  const s = client(`${cluster.urls[index]}/admin`, { ...WS, auth });
  const seen = { stats: [], events: [] };
  s.on("session", (id) => (seen.session = id));
  s.on("config", (c) => (seen.config = c));
  s.on("all_sockets", (list) => (seen.allSockets = list));
  s.on("server_stats", (st) => seen.stats.push(st));
  for (const ev of ["socket_connected", "socket_updated", "socket_disconnected", "room_joined", "room_left"]) {
    s.on(ev, (...args) => seen.events.push([ev, ...args]));
  }
  s.seen = seen;
  return s;
}

async function login(cluster, index, auth = { username: USER, password: PASSWORD }) {
  const s = admin(cluster, index, auth);
  s.connect();
  await once(s, "connect", 5000);
  await waitFor(() => s.seen.config && s.seen.allSockets, 5000);
  return s;
}

describe("admin UI protocol (2 workers, basic auth)", { skip: clusterSkipReason() }, () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ workers: 2, args: ["--admin-ui", `${USER}:${HASH}`] });
  }, HOOK);
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    if (cluster) await cluster.stop();
  }, HOOK);

  it("refuses a wrong password with \"invalid credentials\"", T, async () => {
    for (const auth of [{ username: USER, password: "wrong" }, { username: "root", password: PASSWORD }, {}]) {
      const s = admin(cluster, 0, auth);
      s.connect();
      const [err] = await once(s, "connect_error", 5000);
      assert.equal(err.message, "invalid credentials", JSON.stringify(auth));
      s.close();
    }
    const forged = admin(cluster, 1, { sessionId: "ffffffffff.00" });
    forged.connect();
    assert.equal((await once(forged, "connect_error", 5000))[0].message, "invalid credentials");
  });

  it("logs in, gets a session id valid on the other worker, and every feature", T, async () => {
    const a = await login(cluster, 0);
    assert.deepEqual(a.seen.config.supportedFeatures, ALL_FEATURES);
    assert.equal(typeof a.seen.session, "string");
    const b = await login(cluster, 1, { sessionId: a.seen.session });
    assert.deepEqual(b.seen.config.supportedFeatures, ALL_FEATURES);
  });

  it("hears server_stats from both workers", T, async () => {
    const a = await login(cluster, 0);
    const c = await connectWorker(cluster, 1, WS);
    await waitFor(() => new Set(a.seen.stats.map((s) => s.serverId)).size === 2, 6000);
    const ids = [...new Set(a.seen.stats.map((s) => s.serverId))].sort();
    assert.match(ids[0], /#worker-0$/);
    assert.match(ids[1], /#worker-1$/);
    const last = a.seen.stats.filter((s) => s.serverId.endsWith("#worker-1")).at(-1);
    assert.equal(typeof last.pid, "number");
    assert.ok(last.clientsCount >= 1, JSON.stringify(last));
    assert.ok(last.namespaces.some((n) => n.name === "/" && n.socketsCount >= 1), JSON.stringify(last.namespaces));
    for (const e of last.aggregatedEvents) {
      assert.equal(e.timestamp % 1000, 0);
      assert.ok(["rawConnection", "rawDisconnection", "packetsIn", "packetsOut", "bytesIn", "bytesOut"].includes(e.type));
    }
    c.close();
  });

  it("lists the sockets of both workers with their rooms, and hears new ones", T, async () => {
    const c0 = await connectWorker(cluster, 0, WS);
    const c1 = await connectWorker(cluster, 1, WS);
    await call(c1, "join", "blue-room");
    const a = await login(cluster, 0);
    const listed = (id) => a.seen.allSockets.find((s) => s.id === id && s.nsp === "/");
    assert.ok(listed(c0.id), "worker 0's socket");
    const s1 = listed(c1.id);
    assert.ok(s1, "worker 1's socket");
    assert.deepEqual([...s1.rooms].sort(), [c1.id, "blue-room"].sort());
    assert.equal(s1.transport, "websocket");
    assert.equal(s1.clientId.length, 12);
    assert.equal(typeof s1.handshake.headers, "object");
    assert.equal(s1.handshake.auth, undefined, "auth stays out");

    // Live: a socket connects on worker 1, joins, leaves, disconnects.
    const c2 = await connectWorker(cluster, 1, WS);
    await call(c2, "join", "green");
    c2.emit("leave", "green", () => {});
    const id = c2.id;
    await waitFor(() => a.seen.events.some(([ev, nsp, room, sid]) => ev === "room_left" && room === "green" && sid === id));
    c2.disconnect();
    await waitFor(() => a.seen.events.some(([ev, nsp, sid]) => ev === "socket_disconnected" && sid === id));
    const connected = a.seen.events.find(([ev, s]) => ev === "socket_connected" && s.id === id);
    assert.ok(connected, "socket_connected");
    assert.equal(connected[1].nsp, "/");
    assert.ok(!Number.isNaN(Date.parse(connected[2])), `a date: ${connected[2]}`);
    assert.ok(a.seen.events.some(([ev, nsp, room, sid]) => ev === "room_joined" && nsp === "/" && room === "green" && sid === id));
    const gone = a.seen.events.find(([ev, nsp, sid]) => ev === "socket_disconnected" && sid === id);
    assert.equal(gone[3], "client namespace disconnect");
  });

  it("tells when a socket of the other worker upgrades to WebSocket", T, async () => {
    const a = await login(cluster, 0);
    const c = await connectWorker(cluster, 1, { transports: ["polling", "websocket"] });
    const id = c.id;
    const connected = a.seen.events.find(([ev, s]) => ev === "socket_connected" && s.id === id)
      ?? (await waitFor(() => a.seen.events.find(([ev, s]) => ev === "socket_connected" && s.id === id)));
    assert.equal(connected[1].transport, "polling");
    await waitFor(() => a.seen.events.some(([ev, u]) => ev === "socket_updated" && u.id === id && u.transport === "websocket"), 6000);
  });

  it("accepts a session id after the worker that issued it restarted", T, async () => {
    const a = await login(cluster, 1);
    const token = a.seen.session;
    a.close();
    const pid = cluster.pids.get(1);
    process.kill(pid, "SIGKILL");
    await waitFor(() => cluster.pids.get(1) && cluster.pids.get(1) !== pid, 10000);
    const b = await waitFor(async () => {
      try {
        return await login(cluster, 1, { sessionId: token });
      } catch {
        return null;
      }
    }, 10000, 200);
    assert.deepEqual(b.seen.config.supportedFeatures, ALL_FEATURES);
  });

  it("disconnects, joins and emits to a socket of the other worker", T, async () => {
    const c1 = await connectWorker(cluster, 1, WS);
    const a = await login(cluster, 0);
    a.emit("join", "/", "vip", c1.id);
    await waitFor(() => a.seen.events.some(([ev, , room, sid]) => ev === "room_joined" && room === "vip" && sid === c1.id));
    const got = once(c1, "hello-from-admin", 3000);
    a.emit("emit", "/", "vip", "hello-from-admin", 1, { two: 2 });
    assert.deepEqual(await got, [1, { two: 2 }]);
    a.emit("leave", "/", "vip", c1.id);
    await waitFor(() => a.seen.events.some(([ev, , room, sid]) => ev === "room_left" && room === "vip" && sid === c1.id));
    const reason = once(c1, "disconnect", 3000);
    a.emit("_disconnect", "/", false, c1.id);
    assert.equal((await reason)[0], "io server disconnect");
  });

  it("serves the page under /admin/", T, async (t) => {
    if (!existsSync(DIST)) {
      assert.fail(`no ${DIST}: run scripts/setup (npm ci in admin-ui)`);
    }
    const res = await fetch(`${cluster.urls[1]}/admin/`, { signal: AbortSignal.timeout(3000) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /text\/html/);
    assert.match(await res.text(), /Socket\.IO Admin UI/);
    const redirect = await fetch(`${cluster.urls[0]}/admin`, { redirect: "manual", signal: AbortSignal.timeout(3000) });
    assert.equal(redirect.headers.get("location"), "/admin/");
    const missing = await fetch(`${cluster.urls[0]}/admin/../Cargo.toml`, { signal: AbortSignal.timeout(3000) });
    assert.notEqual(missing.status, 200);
  });
});

describe("admin UI protocol (read-only, no auth)", { skip: clusterSkipReason() }, () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({
      workers: 2,
      args: ["--admin-ui", "none", "--admin-ui-readonly", "--metrics", "127.0.0.1:0"],
    });
  }, HOOK);
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    if (cluster) await cluster.stop();
  }, HOOK);

  it("sends nothing while no page is open, and starts when one opens", T, async () => {
    const [, metricsUrl] = await cluster.waitForLog(/metrics on (http:\/\/127\.0\.0\.1:\d+)\/metrics/);
    const broadcasts = async () => {
      const text = await (await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
      return text
        .split("\n")
        .filter((l) => l.startsWith("rsio_broadcasts_sent_total{"))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    };
    for (let i = 0; i < 4; i++) {
      const c = await connectWorker(cluster, i % 2, WS);
      await call(c, "join", "room-nobody-watches");
      c.disconnect();
    }
    await sleep(2600); // a stats round, and the workers' metrics reports
    assert.equal(await broadcasts(), 0, "no admin event, no stats");
    const a = await login(cluster, 1, {});
    await waitFor(async () => (await broadcasts()) > 0, 5000, 200);
    const c = await connectWorker(cluster, 0, WS);
    await waitFor(() => a.seen.events.some(([ev, s]) => ev === "socket_connected" && s.id === c.id));
  });

  it("offers no operation and ignores them", T, async () => {
    const c1 = await connectWorker(cluster, 1, WS);
    const a = await login(cluster, 0, {});
    assert.deepEqual(a.seen.config.supportedFeatures, ["AGGREGATED_EVENTS", "ALL_EVENTS"]);
    assert.equal(a.seen.session, undefined, "no session without authentication");
    assert.ok(a.seen.allSockets.some((s) => s.id === c1.id));
    let disconnected = false;
    c1.on("disconnect", () => (disconnected = true));
    a.emit("_disconnect", "/", false, c1.id);
    a.emit("_disconnect", "/", true);
    // The stats round trip through both workers shows the request was processed.
    const before = a.seen.stats.length;
    await waitFor(() => a.seen.stats.length >= before + 2, 6000);
    assert.equal(disconnected, false);
    assert.equal(c1.connected, true);
  });
});

// The chat example (its own page and routes, no CORS of its own) with the admin UI
// turned on by the environment, as systemd's Environment= would.
describe("admin UI on the chat example (RSIO_ADMIN_UI, RSIO_ADMIN_UI_HOSTED)", { skip: clusterSkipReason() }, () => {
  let chat;
  let tmp;
  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "rsio-admin-chat-"));
    Object.assign(process.env, { RSIO_ADMIN_UI: "none", RSIO_ADMIN_UI_HOSTED: "true" });
    try {
      chat = await startChat(path.join(tmp, "chat.db"));
    } finally {
      delete process.env.RSIO_ADMIN_UI;
      delete process.env.RSIO_ADMIN_UI_HOSTED;
    }
  }, HOOK);
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    if (chat) await chat.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, HOOK);

  it("serves the chat and the admin page, and lets https://admin.socket.io in with credentials", T, async () => {
    const page = await fetch(`${chat.urls[0]}/`, { signal: AbortSignal.timeout(3000) });
    assert.equal(page.status, 200);
    const admin = await fetch(`${chat.urls[0]}/admin/`, { signal: AbortSignal.timeout(3000) });
    assert.match(await admin.text(), /Socket\.IO Admin UI/);
    const url = `${chat.urls[1]}/socket.io/?EIO=4&transport=polling`;
    const hosted = await fetch(url, { headers: { origin: "https://admin.socket.io" }, signal: AbortSignal.timeout(3000) });
    assert.equal(hosted.status, 200);
    assert.equal(hosted.headers.get("access-control-allow-origin"), "https://admin.socket.io");
    assert.equal(hosted.headers.get("access-control-allow-credentials"), "true");
    const foreign = await fetch(url, { headers: { origin: "https://evil.example" }, signal: AbortSignal.timeout(3000) });
    assert.equal(foreign.status, 403);
    // The hosted page's socket, as the browser would open it from that origin.
    const s = client(`${chat.urls[1]}/admin`, { ...WS, extraHeaders: { origin: "https://admin.socket.io" } });
    s.connect();
    const [config] = await once(s, "config", 5000);
    assert.deepEqual(config.supportedFeatures, ALL_FEATURES);
  });
});
