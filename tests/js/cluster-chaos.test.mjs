// Chaos under load: a 2-worker cluster (`interop --cluster --recovery`) serving
// ~20 receivers and 4 senders that broadcast ~100 messages/s to everyone, while a
// randomly chosen worker is SIGKILLed every 4–7 s for ~25 s.
//
// Recovery is ON: it exercises the most server machinery under the kills (the
// primary's offset sequence and session store, replay on reconnect) and lets the
// test check that a recovered session neither misses nor repeats a message.
//
// Checks:
//   (a) no lost delivery: every broadcast acked to its sender reached every
//       connection that was up from before the send until 1 s after the ack;
//       a recovered session (same socket id across a reconnect) got every such
//       broadcast of its whole span; no client ever got an id twice;
//   (b) the primary restarted each killed worker (new pid, serving a new client);
//   (c) no leaks: once every client left, `/stats` of both workers reaches
//       engineClients = sockets = rooms = 0 within 10 s. (The clients leave with a
//       namespace disconnect, which is not recoverable; the recovery sessions of
//       sockets cut by the kills live in the primary, out of /stats's sight, and
//       expire 5 s after their cut. What must reach 0 are the workers' Engine.IO
//       sessions, sockets and rooms);
//   (d) SIGTERM: the primary exits 0 and no process of the cluster is left.
//
// The kill schedule comes from a seeded PRNG; the seed is printed. Replay a run
// with CHAOS_SEED=<seed>. CHAOS_LOAD_MS changes the load's length (default 25000).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import {
  startCluster, clusterSkipReason, client, connectWorker, closeAll, call, waitFor, sleep, processExists,
  workerStats as stats,
} from "./harness.mjs";

const skip = clusterSkipReason();
const SEED = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) >>> 0 : Math.floor(Math.random() * 2 ** 32);
const LOAD_MS = Number(process.env.CHAOS_LOAD_MS || 25000);
const RECEIVERS = 20;
const SENDERS = 4; // two per worker
const RATE = 100; // broadcasts per second, all senders together
const GRACE_MS = 1000; // a connection must outlive the ack by this much to owe the message
const now = () => performance.now();

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Kill times (ms after the load started) and targets: every 4–7 s, both workers hit. */
function killPlan(seed, loadMs) {
  const rnd = prng(seed);
  const plan = [];
  let at = 0;
  for (;;) {
    at += 4000 + Math.floor(rnd() * 3000);
    if (at > loadMs - 3000) break;
    plan.push({ at, worker: rnd() < 0.5 ? 0 : 1 });
  }
  if (plan.length > 1 && plan.every((k) => k.worker === plan[0].worker)) {
    plan[plan.length - 1].worker = 1 - plan[0].worker;
  }
  return plan;
}

const RECONNECTING = {
  reconnection: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 300,
  randomizationFactor: 0.5,
  reconnectionAttempts: Infinity,
  timeout: 3000,
};
const TRANSPORTS = [["websocket"], ["polling"], ["polling", "websocket"]];
const transportName = (t) => (t.length === 2 ? "upgrade" : t[0]);

/**
 * A client whose every connection is recorded: conns[] of
 * { sid, recovered, connectAt, endAt, reason, ids[] }, and seen: id → [conn index…].
 */
async function recordedClient(cluster, name, worker, transports) {
  const socket = client(cluster.urls[worker], { ...RECONNECTING, transports });
  const rec = { name, worker, transport: transportName(transports), socket, conns: [], seen: new Map(), connectErrors: 0 };
  socket.on("connect", () => {
    rec.conns.push({ sid: socket.id, recovered: socket.recovered, connectAt: now(), endAt: null, reason: null, ids: [] });
  });
  socket.on("disconnect", (reason) => {
    const c = rec.conns[rec.conns.length - 1];
    if (c && c.endAt === null) {
      c.endAt = now();
      c.reason = reason;
    }
  });
  socket.on("connect_error", () => {
    rec.connectErrors += 1;
  });
  socket.on("m", (id) => {
    const at = rec.conns.length - 1;
    const c = rec.conns[at];
    if (!c || c.endAt !== null) {
      (rec.stray ??= []).push(id); // cannot happen: an event outside a connection
      return;
    }
    c.ids.push(id);
    const list = rec.seen.get(id);
    if (list) list.push(at);
    else rec.seen.set(id, [at]);
  });
  socket.connect();
  await waitFor(() => socket.connected, 5000).catch(() => {
    throw new Error(`${name} did not connect to worker ${worker}`);
  });
  const served = await call(socket, "worker");
  if (served !== worker) throw new Error(`${name} on port ${cluster.ports[worker]} is served by worker ${served}`);
  return rec;
}

function compactRanges(ids) {
  const sorted = [...ids].sort((a, b) => a - b);
  const out = [];
  for (const v of sorted) {
    const last = out[out.length - 1];
    if (last && v === last[1] + 1) last[1] = v;
    else out.push([v, v]);
  }
  const text = out.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(",");
  return text.length > 300 ? text.slice(0, 300) + "…" : text;
}

describe("cluster chaos: SIGKILLs under a broadcast load", { skip }, () => {
  let cluster;
  let pids = [];
  const clients = [];
  const sent = []; // id → { id, sender, senderWorker, sendAt, ackAt }
  const kills = []; // { worker, oldPid, at, newPid, listeningAt, servedAt, error }
  let loadStart = 0;
  let loadEnd = 0;

  before(async () => {
    console.log(`# cluster-chaos seed: CHAOS_SEED=${SEED}`);
    cluster = await startCluster({ workers: 2, args: ["--recovery"] });
  }, { timeout: 20000 });

  after(async () => {
    closeAll();
    if (cluster && cluster.proc.exitCode === null && cluster.proc.signalCode === null) {
      await cluster.stop("SIGKILL");
    }
  }, { timeout: 10000 });

  it(`(a)+(b) no lost or repeated message on live connections; killed workers restart (seed ${SEED})`, { timeout: LOAD_MS + 30000 }, async (t) => {
    const plan = killPlan(SEED, LOAD_MS);
    t.diagnostic(`seed ${SEED}; kills at ${plan.map((k) => `${k.at}ms→w${k.worker}`).join(", ")}`);
    assert.ok(plan.length >= 3 || LOAD_MS < 24000, `plan has ${plan.length} kills`);

    for (let i = 0; i < SENDERS; i++) {
      clients.push(await recordedClient(cluster, `sender${i}`, i % 2, ["websocket"]));
    }
    for (let i = 0; i < RECEIVERS; i++) {
      const transports = TRANSPORTS[Math.floor(i / 2) % TRANSPORTS.length];
      clients.push(await recordedClient(cluster, `recv${i}`, i % 2, transports));
    }
    const senders = clients.slice(0, SENDERS);

    // The load: broadcast i is due at loadStart + i * 10 ms, by the next connected sender.
    let skipped = 0;
    let nextId = 0;
    let rr = 0;
    loadStart = now();
    const killer = (async () => {
      for (const k of plan) {
        const wait = loadStart + k.at - now();
        if (wait > 0) await sleep(wait);
        // the target must be up again after an earlier kill
        await waitFor(() => !kills.some((x) => x.worker === k.worker && !x.newPid && !x.error), 10000).catch(() => {});
        const oldPid = cluster.pids.get(k.worker);
        const from = cluster.log().length;
        const kill = { worker: k.worker, oldPid, at: now() - loadStart, newPid: 0 };
        kills.push(kill);
        process.kill(oldPid, "SIGKILL");
        try {
          await cluster.waitForLog(new RegExp(`worker died .*worker=${k.worker}`), 5000, from);
          const m = await cluster.waitForLog(new RegExp(`worker ${k.worker} \\(pid (\\d+)\\) listening`), 10000, from);
          kill.listeningAt = now() - loadStart;
          const probe = await connectWorker(cluster, k.worker, { transports: ["websocket"] }, 5000);
          kill.servedAt = now() - loadStart;
          probe.disconnect();
          kill.newPid = Number(m[1]);
        } catch (e) {
          kill.error = e.message;
        }
      }
    })();

    const total = Math.floor((LOAD_MS * RATE) / 1000);
    for (let i = 0; i < total; i++) {
      const wait = loadStart + (i * 1000) / RATE - now();
      if (wait > 0) await sleep(wait);
      let s = null;
      for (let j = 0; j < SENDERS; j++) {
        const cand = senders[(rr + j) % SENDERS];
        if (cand.socket.connected) {
          s = cand;
          rr = (rr + j + 1) % SENDERS;
          break;
        }
      }
      if (!s) {
        skipped += 1;
        continue;
      }
      const id = nextId++;
      const entry = { id, sender: s.name, senderWorker: s.worker, sendAt: now(), ackAt: null };
      sent.push(entry);
      s.socket.emit("broadcast", { event: "m", args: [id] }, (ok) => {
        if (ok === "ok") entry.ackAt = now();
      });
    }
    loadEnd = now();
    await killer;

    // Settle: every connection still up gets what it owes (bounded).
    const owedOpen = () => {
      let missing = 0;
      for (const r of clients) {
        const c = r.conns[r.conns.length - 1];
        if (!c || c.endAt !== null) continue;
        for (const e of sent) {
          if (e.ackAt !== null && c.connectAt < e.sendAt && !r.seen.has(e.id)) missing += 1;
        }
      }
      return missing === 0;
    };
    await waitFor(owedOpen, 5000, 100).catch(() => {});
    await sleep(GRACE_MS);
    const recordEnd = now();

    const acked = sent.filter((e) => e.ackAt !== null);
    const failures = [];
    const rel = (x) => (x === null ? "open" : `${Math.round(x - loadStart)}ms`);

    // (a) connections: owed = acked broadcasts sent after connect, acked ≥ GRACE_MS before the end.
    let owedTotal = 0;
    let deliveries = 0;
    for (const r of clients) {
      r.conns.forEach((c, ci) => {
        deliveries += c.ids.length;
        const end = c.endAt ?? recordEnd;
        const got = new Set(c.ids);
        const missing = [];
        for (const e of acked) {
          if (c.connectAt < e.sendAt && e.ackAt + GRACE_MS < end) {
            owedTotal += 1;
            if (!got.has(e.id)) missing.push(e.id);
          }
        }
        if (missing.length) {
          const ex = acked.find((e) => e.id === missing[0]);
          failures.push(`LOST: ${r.name} (worker ${r.worker}, ${r.transport}) connection #${ci} sid=${c.sid} ` +
            `recovered=${c.recovered} up ${rel(c.connectAt)}..${rel(c.endAt)} (${c.reason ?? "still connected"}) ` +
            `missed ${missing.length} acked broadcasts: ${compactRanges(missing)}; first: sent by ${ex.sender} ` +
            `(worker ${ex.senderWorker}) at ${rel(ex.sendAt)}, acked at ${rel(ex.ackAt)}`);
        }
      });
      // recovered sessions: connections with the same sid, joined by a recovery
      let s0 = 0;
      for (let ci = 1; ci <= r.conns.length; ci++) {
        const c = r.conns[ci];
        if (c && c.recovered && c.sid === r.conns[ci - 1].sid) continue;
        if (ci - 1 > s0) {
          const span = r.conns.slice(s0, ci);
          const start = span[0].connectAt;
          const end = span[span.length - 1].endAt ?? recordEnd;
          const got = new Set(span.flatMap((x) => x.ids));
          const missing = acked.filter((e) => start < e.sendAt && e.ackAt + GRACE_MS < end && !got.has(e.id)).map((e) => e.id);
          if (missing.length) {
            failures.push(`LOST IN RECOVERY: ${r.name} (worker ${r.worker}, ${r.transport}) session sid=${span[0].sid} ` +
              `over connections #${s0}..#${ci - 1} (${span.map((x) => `${rel(x.connectAt)}..${rel(x.endAt)}`).join(", ")}) ` +
              `missed ${missing.length}: ${compactRanges(missing)}`);
          }
        }
        s0 = ci;
      }
      // duplicates, over every connection of the client
      const dups = [...r.seen].filter(([, where]) => where.length > 1);
      if (dups.length) {
        failures.push(`DUPLICATE: ${r.name} (worker ${r.worker}, ${r.transport}) got ${dups.length} ids more than once: ` +
          dups.slice(0, 10).map(([id, where]) => `${id} in connections ${where.map((w) => `#${w}(sid=${r.conns[w].sid},recovered=${r.conns[w].recovered})`).join("+")}`).join("; "));
      }
      if (r.stray) failures.push(`STRAY: ${r.name} got ${r.stray.length} messages outside any connection`);
    }

    // (b) restarts
    for (const k of kills) {
      if (k.error || !k.newPid) {
        failures.push(`RESTART: worker ${k.worker} (pid ${k.oldPid}) killed at ${Math.round(k.at)}ms: ${k.error ?? "not restarted"}`);
      } else if (k.newPid === k.oldPid || processExists(k.oldPid)) {
        failures.push(`RESTART: worker ${k.worker}: pid ${k.oldPid} still there (new ${k.newPid})`);
      }
    }
    if (kills.length < Math.min(3, plan.length)) failures.push(`only ${kills.length} kills`);

    const reconnects = clients.reduce((n, r) => n + r.conns.length - 1, 0);
    const recovered = clients.reduce((n, r) => n + r.conns.filter((c) => c.recovered).length, 0);
    t.diagnostic(`load ${Math.round(loadEnd - loadStart)} ms: ${sent.length} broadcasts sent, ${acked.length} acked, ` +
      `${skipped} skipped (no sender connected); ${deliveries} deliveries, ${owedTotal} owed and checked; ` +
      `${reconnects} reconnections (${recovered} recovered)`);
    t.diagnostic(`kills: ${kills.map((k) => `w${k.worker} pid ${k.oldPid}@${Math.round(k.at)}ms → pid ${k.newPid} ` +
      `listening +${Math.round((k.listeningAt ?? NaN) - k.at)}ms served +${Math.round((k.servedAt ?? NaN) - k.at)}ms`).join("; ")}`);

    assert.ok(acked.length > total * 0.5, `only ${acked.length} of ${total} broadcasts acked (seed ${SEED})`);
    if (failures.length) {
      const text = failures.slice(0, 30).join("\n") + (failures.length > 30 ? `\n… ${failures.length - 30} more` : "");
      assert.fail(`seed ${SEED} (replay: CHAOS_SEED=${SEED}): ${failures.length} failures\n${text}\n` +
        `primary log tail:\n${cluster.log().slice(-2500)}`);
    }
    assert.ok(new Set(kills.map((k) => k.worker)).size === 2 || plan.length < 2, "both workers were killed");
  });

  it("(c) no leaks: engine sessions, sockets and rooms return to 0 on both workers", { timeout: 20000 }, async () => {
    closeAll();
    let last = [];
    await waitFor(async () => {
      last = await Promise.all([0, 1].map((i) => stats(cluster, i).catch((e) => ({ worker: i, error: e.message }))));
      return last.every((s) => s.engineClients === 0 && s.sockets === 0 && s.rooms === 0);
    }, 10000, 250).catch(() => {
      assert.fail(`seed ${SEED}: counts did not reach 0 within 10 s of the last client leaving: ${JSON.stringify(last)}`);
    });
    // both served by live, restarted-as-needed workers
    for (const s of last) assert.equal(s.pid, cluster.pids.get(s.worker));
  });

  it("(d) SIGTERM: the primary exits 0 and no process of the cluster is left", { timeout: 15000 }, async () => {
    pids = cluster.allPids();
    const res = await cluster.stop("SIGTERM", 8000);
    assert.deepEqual(res, { code: 0, signal: null, killed: false },
      `seed ${SEED}: primary did not exit 0 on SIGTERM; stderr:\n${cluster.log().slice(-3000)}`);
    await waitFor(() => pids.every((p) => !processExists(p)), 3000).catch(() => {
      throw new Error(`still running: ${pids.filter(processExists).join(", ")}`);
    });
  });
});
