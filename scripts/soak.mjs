// The load and the bookkeeping of scripts/soak (run it through that script).
//
//   node scripts/soak.mjs --ports 4000,4001 --primary-pid 1234 --csv out.csv --summary out.md
//
// Against a cluster of the interop example (`interop --cluster --recovery`):
//   - a churning population of SOAK_CLIENTS clients (default 200; websocket,
//     polling and upgrading transports, spread over the workers), each in 2 of 10
//     rooms; every SOAK_CHURN_EVERY s (3) a fraction SOAK_CHURN_FRACTION (0.1) of
//     them leaves (half of those first `leave` a room): half of the leavers
//     reconnect later on the same socket object, half are replaced by new clients;
//   - 2 senders (one per worker) broadcast SOAK_RATE messages/s (20), half to
//     everyone, half to one room, each with a unique id and an ack;
//   - every SOAK_KILL_EVERY s (30; 0: never) a random worker is SIGKILLed;
//   - every SOAK_SAMPLE_EVERY s (2) one CSV row: /stats of each worker, and the
//     RSS of each worker and of the primary from /proc/<pid>/status.
// After SOAK_SECONDS (300) every client leaves; sampling goes on until the
// counts of both workers are 0 (at most 30 s). Then the summary (stdout and
// --summary): RSS per process, the slope of a linear fit over the second half,
// the final counts, messages sent / owed / received / lost.
//
// Exit status 1 when: the counts do not return to 0, a process's RSS slope over
// the second half exceeds SOAK_MAX_SLOPE_KIB_MIN (1024 KiB/min = 1 MiB/min), a
// message owed to a connection is lost or one arrives twice, or the primary dies.
// The slope of a worker is fitted within each incarnation (pooled least squares:
// one slope, an intercept per pid), leaving out the first SOAK_WARMUP s (10) of each.
//
// Owed messages: a broadcast acked to its sender is owed to every client life
// (one socket id, across recovered reconnections) that was connected, and in the
// target room (joined: join acked; left: leave sent), from before its send until
// 1 s after its ack.
import { createRequire } from "node:module";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests/js/package.json"));
const { io } = require("socket.io-client");

// ---- options ------------------------------------------------------------------
const argv = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const env = (name, dflt) => (process.env[name] !== undefined && process.env[name] !== "" ? Number(process.env[name]) : dflt);
const PORTS = String(arg("ports", "")).split(",").filter(Boolean).map(Number);
const PRIMARY = Number(arg("primary-pid", 0));
const CSV = arg("csv", "soak.csv");
const SUMMARY = arg("summary", "");
const SECONDS = env("SOAK_SECONDS", 300);
const KILL_EVERY = env("SOAK_KILL_EVERY", 30);
const CLIENTS = env("SOAK_CLIENTS", 200);
const RATE = env("SOAK_RATE", 20);
const CHURN_EVERY = env("SOAK_CHURN_EVERY", 3);
const CHURN_FRACTION = env("SOAK_CHURN_FRACTION", 0.1);
const SAMPLE_EVERY = env("SOAK_SAMPLE_EVERY", 2);
const MAX_SLOPE = env("SOAK_MAX_SLOPE_KIB_MIN", 1024);
const WARMUP = env("SOAK_WARMUP", 10);
const SEED = env("SOAK_SEED", Math.floor(Math.random() * 2 ** 32));
const ROOMS = 10;
const GRACE_MS = 1000;
if (PORTS.length === 0 || !PRIMARY) {
  console.error("usage: node scripts/soak.mjs --ports P0,P1 --primary-pid PID --csv FILE [--summary FILE]");
  process.exit(2);
}
// A hard bound on the whole run.
setTimeout(() => {
  console.error("soak.mjs: over its time bound; giving up");
  process.exit(3);
}, (SECONDS + 150) * 1000).unref();

let seed = SEED >>> 0;
const rnd = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (n) => Math.floor(rnd() * n);
const T0 = performance.now();
const now = () => performance.now() - T0; // ms since start
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => console.log(`[${(now() / 1000).toFixed(1).padStart(6)}s] ${msg}`);
const urls = PORTS.map((p) => `http://127.0.0.1:${p}`);

// ---- clients ------------------------------------------------------------------
const TRANSPORTS = [["websocket"], ["websocket"], ["websocket"], ["websocket"], ["websocket"],
  ["polling"], ["polling"], ["polling", "websocket"], ["polling", "websocket"], ["polling", "websocket"]];
const OPTS = { forceNew: true, reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 1000, timeout: 5000 };
const lives = []; // every life of every client
const clients = new Set(); // current population
let nextClient = 0;
let deliveries = 0;
let duplicates = 0;

function makeClient() {
  const worker = pick(PORTS.length);
  const transports = TRANSPORTS[pick(TRANSPORTS.length)];
  const rooms = [];
  while (rooms.length < 2) {
    const r = `room-${pick(ROOMS)}`;
    if (!rooms.includes(r)) rooms.push(r);
  }
  const socket = io(urls[worker], { ...OPTS, transports, autoConnect: false });
  const c = { name: `c${nextClient++}`, worker, transport: transports.length > 1 ? "upgrade" : transports[0], rooms, socket, life: null };
  socket.on("connect", () => {
    if (c.life && socket.recovered && c.life.sid === socket.id && c.life.endAt === null) {
      c.life.recoveries += 1;
      c.life.up = true;
      return;
    }
    if (c.life && c.life.endAt === null) c.life.endAt = c.life.downAt ?? now();
    const life = { client: c.name, worker, transport: c.transport, sid: socket.id, connectAt: now(), endAt: null, downAt: null,
      up: true, involuntary: 0, recoveries: 0, rooms: new Map(), ids: new Map() };
    c.life = life;
    lives.push(life);
    socket.timeout(5000).emit("join", rooms, (err) => {
      if (!err && c.life === life) for (const r of rooms) life.rooms.set(r, { from: now(), to: null });
    });
  });
  socket.on("disconnect", (reason) => {
    const life = c.life;
    if (!life || life.endAt !== null) return;
    life.up = false;
    life.downAt = now();
    if (reason !== "io client disconnect") life.involuntary += 1;
  });
  socket.on("m", (id) => {
    const life = c.life;
    if (!life || life.endAt !== null) return;
    deliveries += 1;
    const n = life.ids.get(id) ?? 0;
    if (n > 0) duplicates += 1;
    life.ids.set(id, n + 1);
  });
  clients.add(c);
  socket.connect();
  return c;
}

/** Voluntary leave: half first leave a room; the life ends now. */
async function leave(c) {
  const life = c.life;
  if (life && life.endAt === null && c.socket.connected && rnd() < 0.5) {
    const room = c.rooms[0];
    const m = life.rooms.get(room);
    if (m) m.to = now();
    await new Promise((resolve) => c.socket.timeout(2000).emit("leave", room, () => resolve()));
  }
  if (c.life && c.life.endAt === null) c.life.endAt = now();
  c.socket.disconnect();
}

// ---- senders --------------------------------------------------------------------
const sent = []; // { id, room, sendAt, ackAt }
const senders = PORTS.map((_, i) => io(urls[i], { ...OPTS, transports: ["websocket"] }));
let rr = 0;
function broadcast() {
  for (let j = 0; j < senders.length; j++) {
    const s = senders[(rr + j) % senders.length];
    if (!s.connected) continue;
    rr = (rr + j + 1) % senders.length;
    const room = rnd() < 0.5 ? null : `room-${pick(ROOMS)}`;
    const entry = { id: sent.length, room, sendAt: now(), ackAt: null };
    sent.push(entry);
    s.emit("broadcast", { event: "m", args: [entry.id], to: room ? [room] : [] }, (ok) => {
      if (ok === "ok") entry.ackAt = now();
    });
    return;
  }
}

// ---- sampling --------------------------------------------------------------------
const rssOf = (pid) => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);
  } catch {
    return null;
  }
};
async function stats(i) {
  try {
    const res = await fetch(`${urls[i]}/stats`, { signal: AbortSignal.timeout(1500) });
    return res.ok ? await res.json() : null;
  } catch {
    return null;
  }
}
const samples = []; // { t, phase, primary, w: [{pid, rss, engine, sockets, rooms}] }
const events = [];
const lastPid = PORTS.map(() => 0);
const kills = [];
const header = ["t_s", "phase", "primary_pid", "primary_rss_kib",
  ...PORTS.flatMap((_, i) => [`w${i}_pid`, `w${i}_rss_kib`, `w${i}_engine`, `w${i}_sockets`, `w${i}_rooms`]),
  "clients_connected", "sent", "acked", "delivered", "event"];
writeFileSync(CSV, header.join(",") + "\n");
let phase = "load";
let primaryDied = false;

async function sample() {
  const t = now() / 1000;
  const st = await Promise.all(PORTS.map((_, i) => stats(i)));
  const w = st.map((s, i) => {
    if (!s) return { pid: null, rss: null, engine: null, sockets: null, rooms: null };
    if (lastPid[i] && s.pid !== lastPid[i]) events.push(`restart w${i} pid ${s.pid}`);
    lastPid[i] = s.pid;
    return { pid: s.pid, rss: rssOf(s.pid), engine: s.engineClients, sockets: s.sockets, rooms: s.rooms };
  });
  const primary = rssOf(PRIMARY);
  if (primary === null) primaryDied = true;
  const row = { t, phase, primary, w };
  samples.push(row);
  const connected = [...clients].filter((c) => c.socket.connected).length;
  const cells = [t.toFixed(1), phase, PRIMARY, primary ?? "",
    ...w.flatMap((x) => [x.pid ?? "", x.rss ?? "", x.engine ?? "", x.sockets ?? "", x.rooms ?? ""]),
    connected, sent.length, sent.filter((e) => e.ackAt !== null).length, deliveries, events.splice(0).join("; ")];
  appendFileSync(CSV, cells.join(",") + "\n");
  return row;
}

// ---- the run -------------------------------------------------------------------
log(`seed ${SEED}; ${CLIENTS} clients, ${RATE} broadcasts/s, churn ${CHURN_FRACTION * 100}% every ${CHURN_EVERY} s, ` +
  `kill every ${KILL_EVERY || "never"} s, ${SECONDS} s`);
await sample();
for (let i = 0; i < CLIENTS; i++) {
  makeClient();
  if (i % 20 === 19) await sleep(100);
}
const loadStart = now();
const loadEnd = loadStart + SECONDS * 1000;
let nextSample = now() + SAMPLE_EVERY * 1000;
let nextChurn = now() + CHURN_EVERY * 1000;
let nextKill = KILL_EVERY > 0 ? now() + KILL_EVERY * 1000 * (0.8 + 0.4 * rnd()) : Infinity;
let nSent = 0;
while (now() < loadEnd && !primaryDied) {
  const due = loadStart + (nSent * 1000) / RATE;
  const wait = Math.min(due, nextSample, nextChurn, nextKill) - now();
  if (wait > 0) await sleep(Math.min(wait, 50));
  if (now() >= due) {
    broadcast();
    nSent += 1;
  }
  if (now() >= nextSample) {
    nextSample += SAMPLE_EVERY * 1000;
    const s = await sample();
    if (samples.length % 15 === 0) {
      log(`rss primary ${s.primary} KiB, ${s.w.map((x, i) => `w${i} ${x.rss} KiB/${x.sockets} sockets/${x.rooms} rooms`).join(", ")}; ` +
        `${sent.length} sent, ${deliveries} delivered`);
    }
  }
  if (now() >= nextChurn) {
    nextChurn += CHURN_EVERY * 1000;
    const live = [...clients].filter((c) => c.socket.connected);
    const n = Math.round(CLIENTS * CHURN_FRACTION);
    for (let k = 0; k < n && live.length; k++) {
      const c = live.splice(pick(live.length), 1)[0];
      const again = rnd() < 0.5;
      leave(c).then(async () => {
        if (again) {
          await sleep(500 + pick(1500));
          if (phase === "load") c.socket.connect(); // a new life, same socket object
        } else {
          clients.delete(c);
          if (phase === "load") makeClient();
        }
      });
    }
  }
  if (now() >= nextKill) {
    nextKill += KILL_EVERY * 1000 * (0.8 + 0.4 * rnd());
    const i = pick(PORTS.length);
    const pid = lastPid[i];
    if (pid) {
      try {
        process.kill(pid, "SIGKILL");
        kills.push({ t: now() / 1000, worker: i, pid });
        events.push(`kill w${i} pid ${pid} @${(now() / 1000).toFixed(1)}s`);
        log(`SIGKILL worker ${i} (pid ${pid})`);
      } catch (e) {
        log(`cannot kill worker ${i} (pid ${pid}): ${e.message}`);
      }
    }
  }
}
log(`load over: ${sent.length} broadcasts sent`);
await sleep(2000);

// ---- drain ------------------------------------------------------------------------
phase = "drain";
const drainAt = now();
for (const c of clients) {
  if (c.life && c.life.endAt === null) c.life.endAt = drainAt;
  c.socket.io.reconnection(false);
  c.socket.disconnect();
}
for (const s of senders) {
  s.io.reconnection(false);
  s.disconnect();
}
let final = null;
for (let k = 0; k < 15; k++) {
  await sleep(SAMPLE_EVERY * 1000);
  final = await sample();
  if (final.w.every((x) => x.engine === 0 && x.sockets === 0 && x.rooms === 0)) break;
}
final = await sample();
const zero = final.w.every((x) => x.engine === 0 && x.sockets === 0 && x.rooms === 0);

// ---- accounting -------------------------------------------------------------------
const acked = sent.filter((e) => e.ackAt !== null);
const tally = { clean: { lives: 0, owed: 0, received: 0, lost: 0 }, cut: { lives: 0, owed: 0, received: 0, lost: 0 } };
const lossExamples = [];
for (const life of lives) {
  const end = life.endAt ?? drainAt;
  // A life cut by a kill: its recovered gaps count, it is owed messages until its last cut
  // that was not recovered (or until it left).
  const t = tally[life.involuntary === 0 ? "clean" : "cut"];
  t.lives += 1;
  const lastUp = life.involuntary > life.recoveries ? life.downAt : end;
  for (const e of acked) {
    if (!(life.connectAt < e.sendAt && e.ackAt + GRACE_MS < lastUp)) continue;
    if (e.room) {
      const m = life.rooms.get(e.room);
      if (!m || !(m.from < e.sendAt) || (m.to !== null && !(e.ackAt + GRACE_MS < m.to))) continue;
    }
    t.owed += 1;
    if (life.ids.has(e.id)) t.received += 1;
    else {
      t.lost += 1;
      if (lossExamples.length < 10) {
        lossExamples.push(`${life.client} (worker ${life.worker}, ${life.transport}, sid ${life.sid}, ` +
          `${life.recoveries} recoveries) missed id ${e.id} (${e.room ?? "all"}, sent ${(e.sendAt / 1000).toFixed(2)} s, ` +
          `acked ${(e.ackAt / 1000).toFixed(2)} s; life ${(life.connectAt / 1000).toFixed(2)}..${(end / 1000).toFixed(2)} s)`);
      }
    }
  }
}

// ---- RSS figures ------------------------------------------------------------------
const load = samples.filter((s) => s.phase === "load");
const half = load.length ? load[0].t + (load[load.length - 1].t - load[0].t) / 2 : 0;
function series(get) {
  return samples.map((s) => ({ t: s.t, phase: s.phase, ...get(s) })).filter((p) => p.rss !== null && p.rss !== undefined);
}
/** Pooled least squares over the second half of the load: one slope, one intercept per pid. */
function pooledSlope(points) {
  const byPid = new Map();
  for (const p of points) {
    if (p.phase !== "load" || p.t < half) continue;
    if (!byPid.has(p.pid)) byPid.set(p.pid, []);
    byPid.get(p.pid).push(p);
  }
  let sxy = 0;
  let sxx = 0;
  for (const [pid, pts] of byPid) {
    const born = points.find((p) => p.pid === pid).t;
    const use = pts.filter((p) => p.t >= born + WARMUP || born <= (load[0]?.t ?? 0));
    if (use.length < 3) continue;
    const mt = use.reduce((a, p) => a + p.t, 0) / use.length;
    const my = use.reduce((a, p) => a + p.rss, 0) / use.length;
    for (const p of use) {
      sxy += (p.t - mt) * (p.rss - my);
      sxx += (p.t - mt) ** 2;
    }
  }
  return sxx > 0 ? (sxy / sxx) * 60 : null; // KiB per minute
}
const procs = [
  { name: "primary", pts: series((s) => ({ pid: PRIMARY, rss: s.primary })) },
  ...PORTS.map((_, i) => ({ name: `worker ${i}`, pts: series((s) => ({ pid: s.w[i].pid, rss: s.w[i].rss })) })),
];
const lines = [];
const out = (l = "") => lines.push(l);
out(`# rsio soak ${new Date().toISOString()}`);
out();
out(`seed ${SEED}; ${SECONDS} s of load; ${CLIENTS} clients churning ${CHURN_FRACTION * 100}% every ${CHURN_EVERY} s; ` +
  `${RATE} broadcasts/s (half to everyone, half to one of ${ROOMS} rooms); SIGKILL of a random worker every ` +
  `${KILL_EVERY || "—"} s (${kills.length} kills: ${kills.map((k) => `w${k.worker}@${k.t.toFixed(0)}s`).join(", ")}); ` +
  `samples every ${SAMPLE_EVERY} s.`);
out();
out(`RSS in MiB. Slope: least squares over the second half of the load (t ≥ ${half.toFixed(0)} s), within each pid, ` +
  `leaving out the first ${WARMUP} s of a restarted worker; bound ${MAX_SLOPE} KiB/min.`);
out();
out("| process | start | middle | end of load | after drain | max | slope KiB/min | pids | ok |");
out("|---|--:|--:|--:|--:|--:|--:|--:|---|");
const mib = (k) => (k === null || k === undefined ? "–" : (k / 1024).toFixed(1));
let slopeOk = true;
for (const p of procs) {
  const lp = p.pts.filter((x) => x.phase === "load");
  const mid = lp.reduce((best, x) => (best === null || Math.abs(x.t - half) < Math.abs(best.t - half) ? x : best), null);
  const slope = pooledSlope(p.pts);
  const ok = slope === null || slope <= MAX_SLOPE;
  slopeOk &&= ok;
  p.slope = slope;
  out(`| ${p.name} | ${mib(lp[0]?.rss)} | ${mib(mid?.rss)} | ${mib(lp[lp.length - 1]?.rss)} | ${mib(p.pts[p.pts.length - 1]?.rss)} | ` +
    `${mib(Math.max(...p.pts.map((x) => x.rss)))} | ${slope === null ? "–" : slope.toFixed(0)} | ` +
    `${new Set(p.pts.map((x) => x.pid)).size} | ${ok ? "yes" : "NO"} |`);
}
out();
out(`Final counts: ${final.w.map((x, i) => `worker ${i}: engineClients ${x.engine}, sockets ${x.sockets}, rooms ${x.rooms}`).join("; ")} ` +
  `→ ${zero ? "all zero" : "NOT ZERO"} (${((now() - drainAt) / 1000).toFixed(1)} s after the last client left).`);
out();
out(`Messages: ${sent.length} broadcasts sent, ${acked.length} acked, ${deliveries} deliveries in all, ${duplicates} duplicates; ` +
  `${lives.length} client lives (a life: one socket id, recovered reconnections included).`);
out(`- never disconnected (${tally.clean.lives} lives): ${tally.clean.owed} owed, ${tally.clean.received} received, ${tally.clean.lost} lost`);
out(`- cut involuntarily, by a kill or a timeout (${tally.cut.lives} lives; owed until their last cut that was not recovered): ${tally.cut.owed} owed, ` +
  `${tally.cut.received} received, ${tally.cut.lost} lost`);
for (const ex of lossExamples) out(`  - LOST: ${ex}`);
const failures = [];
if (!zero) failures.push("counts did not return to 0");
if (!slopeOk) failures.push(`RSS slope above ${MAX_SLOPE} KiB/min`);
if (tally.clean.lost + tally.cut.lost > 0) failures.push("lost messages");
if (duplicates > 0) failures.push("duplicate deliveries");
if (primaryDied) failures.push("the primary died");
out();
out(failures.length ? `RESULT: FAIL (${failures.join("; ")})` : "RESULT: pass");
const text = lines.join("\n") + "\n";
process.stdout.write("\n" + text);
if (SUMMARY) writeFileSync(SUMMARY, text);
process.exit(failures.length ? 1 : 0);
