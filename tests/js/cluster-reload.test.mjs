// SIGHUP reload (`interop --cluster --recovery`): the primary replaces its workers
// one at a time with the binary now on disk; their clients reconnect and recover
// their sessions through the cluster recovery, and lose no message.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync, renameSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  startCluster,
  clusterBinary,
  clusterSkipReason,
  connectWorker,
  call,
  sleep,
  waitFor,
  closeAll,
} from "./harness.mjs";

const fast = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, transports: ["websocket"] };
const CLIENTS = 50;
const WORKERS = 2;

describe("cluster reload (SIGHUP)", { skip: clusterSkipReason() }, () => {
  const clusters = [];
  const dirs = [];
  after(async () => {
    closeAll();
    for (const c of clusters) await c.stop("SIGTERM", 8000);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("50 clients, a message every 20 ms, every worker reloaded: each message exactly once, in order, sessions recovered", { timeout: 90000 }, async () => {
    const cluster = await startCluster({ workers: WORKERS, args: ["--recovery"] });
    clusters.push(cluster);
    const before = new Map(cluster.pids);
    const clients = [];
    for (let k = 0; k < CLIENTS; k++) {
      const s = await connectWorker(cluster, k % WORKERS, fast, 10000);
      const c = { s, got: [], errors: [], connects: 0, recovered: [], id: s.id };
      s.on("chat", (n) => c.got.push(n));
      s.on("connect_error", (e) => c.errors.push(String(e && e.message)));
      s.on("connect", () => {
        c.connects++;
        c.recovered.push(s.recovered);
      });
      await call(s, "join", "chat");
      clients.push(c);
    }
    const sender = await connectWorker(cluster, 0, fast, 10000);
    const senderErrors = [];
    sender.on("connect_error", (e) => senderErrors.push(String(e && e.message)));
    // A chat client: one message every 20 ms while connected. A message counts as
    // sent once the server acknowledged it; one whose ack was lost in the reload
    // may or may not have gone out (then every client has it, or none).
    const confirmed = [];
    const unconfirmed = [];
    let n = 0;
    let sending = true;
    const loop = (async () => {
      while (sending) {
        if (sender.connected) {
          const id = n++;
          sender
            .timeout(10000)
            .emitWithAck("broadcast", { event: "chat", args: [id], to: ["chat"] })
            .then(() => confirmed.push(id), () => unconfirmed.push(id));
        }
        await sleep(20);
      }
    })();

    await sleep(1000);
    const from = cluster.log().length;
    process.kill(cluster.pid, "SIGHUP");
    await cluster.waitForLog(new RegExp(`reload complete: ${WORKERS} workers replaced`), 60000, from);
    await sleep(1000);
    sending = false;
    await loop;
    await waitFor(() => confirmed.length + unconfirmed.length === n, 15000);
    confirmed.sort((a, b) => a - b);

    for (let i = 0; i < WORKERS; i++) {
      assert.notEqual(cluster.pids.get(i), before.get(i), `worker ${i} was replaced`);
    }
    // Every client ends with the confirmed messages (and no other but the same
    // unconfirmed ones), each exactly once, in order.
    await waitFor(() => clients.every((c) => confirmed.every((id) => c.got.includes(id))), 15000).catch(() => {});
    await sleep(300);
    const reference = clients[0].got;
    for (const [k, c] of clients.entries()) {
      assert.deepEqual(c.errors, [], `client ${k}: no connect error`);
      assert.ok(c.connects >= 1, `client ${k} reconnected during the reload`);
      assert.ok(c.recovered.every((r) => r === true), `client ${k}: recovered after each reconnect (${c.recovered})`);
      assert.equal(c.s.id, c.id, `client ${k} kept its id`);
      for (let i = 1; i < c.got.length; i++) {
        assert.ok(c.got[i] > c.got[i - 1], `client ${k}: in order, once each (… ${c.got[i - 1]}, ${c.got[i]} …)`);
      }
      const missing = confirmed.filter((id) => !c.got.includes(id));
      assert.deepEqual(missing, [], `client ${k}: every confirmed message`);
      assert.deepEqual(c.got, reference, `client ${k}: the same messages as client 0`);
    }
    assert.deepEqual(senderErrors, [], "the sender saw no connect error");
    assert.ok(confirmed.length > 50, `messages were confirmed (${confirmed.length} of ${n})`);
    assert.ok(unconfirmed.length <= 5, `few messages lost their ack in the reload (${unconfirmed})`);
    closeAll();
  });

  it("a draining worker accepts no new connection: those made during its drain go to the new worker", { timeout: 60000 }, async () => {
    const cluster = await startCluster({ workers: 1, args: ["--recovery"] });
    clusters.push(cluster);
    // A polling session whose client never polls again holds the old worker's
    // drain open (until its sessions are gone, at most 3 s).
    const res = await fetch(`${cluster.urls[0]}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 200);
    await res.text();
    const from = cluster.log().length;
    process.kill(cluster.pid, "SIGHUP");
    await cluster.waitForLog(/reload: worker 0 replaced/, 15000, from);
    // Once the old worker acts on its drain (a connection it accepted just before
    // is closed with its sessions, and its client recovers elsewhere).
    await cluster.waitForLog(/worker\{i=0\}: cluster: draining/, 15000, from);
    await sleep(50);
    const late = [];
    for (let k = 0; k < 8; k++) {
      const s = await connectWorker(cluster, 0, { transports: ["websocket"] }, 5000);
      const c = { s, dropped: false };
      s.on("disconnect", () => (c.dropped = true));
      late.push(c);
    }
    await cluster.waitForLog(/reload: the old worker 0 \(pid \d+\) exited/, 15000, from);
    await sleep(300);
    assert.deepEqual(late.map((c) => c.dropped), late.map(() => false), "no connection made during the drain was dropped with the old worker");
    closeAll();
  });

  it("a new worker that fails to start stops the reload; the old workers keep serving; a second SIGHUP is queued", { timeout: 60000 }, async () => {
    // The cluster runs from a link, as a deployment that switches releases does;
    // the reload runs what the link names then.
    const dir = mkdtempSync(path.join(tmpdir(), "rsio-reload-"));
    dirs.push(dir);
    const link = path.join(dir, "rsio");
    symlinkSync(clusterBinary(), link);
    const saved = process.env.RSIO_CLUSTER_BIN;
    process.env.RSIO_CLUSTER_BIN = link;
    let cluster;
    try {
      cluster = await startCluster({ workers: WORKERS, args: ["--recovery"] });
    } finally {
      if (saved === undefined) delete process.env.RSIO_CLUSTER_BIN;
      else process.env.RSIO_CLUSTER_BIN = saved;
    }
    clusters.push(cluster);
    const before = new Map(cluster.pids);

    // A broken release: the new worker exits at once.
    const broken = path.join(dir, "broken");
    writeFileSync(broken, "#!/bin/sh\necho 'broken release' >&2\nexit 3\n");
    chmodSync(broken, 0o755);
    const tmpLink = path.join(dir, "rsio.new");
    symlinkSync(broken, tmpLink);
    renameSync(tmpLink, link);
    let from = cluster.log().length;
    process.kill(cluster.pid, "SIGHUP");
    await cluster.waitForLog(/reload stopped: the new worker 0 failed \(it exited before it was ready: exit status: 3\); the old workers keep serving/, 15000, from);
    await sleep(300);
    assert.doesNotMatch(cluster.log().slice(from), /reload complete/);
    for (let i = 0; i < WORKERS; i++) {
      const s = await connectWorker(cluster, i, fast, 5000);
      assert.equal(cluster.pids.get(i), before.get(i), `worker ${i} still the old one`);
      s.disconnect();
    }

    // The good release again; two SIGHUPs: one reload, then the queued one.
    symlinkSync(clusterBinary(), tmpLink);
    renameSync(tmpLink, link);
    from = cluster.log().length;
    process.kill(cluster.pid, "SIGHUP");
    await cluster.waitForLog(/reload: starting a new worker 0/, 15000, from);
    process.kill(cluster.pid, "SIGHUP");
    await cluster.waitForLog(/SIGHUP during a reload: another reload is queued/, 15000, from);
    const twice = new RegExp(`reload complete: ${WORKERS} workers replaced[\\s\\S]*reload complete: ${WORKERS} workers replaced`);
    await cluster.waitForLog(twice, 60000, from);
    // Not interleaved: each slot's new worker starts after the previous slot's old one exited.
    const steps = [...cluster.log().slice(from).matchAll(/reload: starting a new worker (\d)|reload: the old worker (\d) \(pid \d+\) exited/g)]
      .map((m) => (m[1] !== undefined ? `start ${m[1]}` : `exit ${m[2]}`));
    assert.deepEqual(steps, ["start 0", "exit 0", "start 1", "exit 1", "start 0", "exit 0", "start 1", "exit 1"]);
    for (let i = 0; i < WORKERS; i++) {
      assert.notEqual(cluster.pids.get(i), before.get(i), `worker ${i} replaced`);
      const s = await connectWorker(cluster, i, fast, 5000);
      s.disconnect();
    }
  });
});
