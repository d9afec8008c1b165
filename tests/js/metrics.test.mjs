// `--metrics`: the primary serves the whole cluster's numbers in the Prometheus
// (OpenMetrics) text format, and `/health` on the same address and on every worker port.
// A real Prometheus (Debian's package, see scripts/setup) scrapes a 2-worker cluster:
// - the connection gauge summed over workers equals the clients connected;
// - a counter survives a worker's SIGKILL without going backwards (`resets()` is 0);
// - `promtool check metrics` accepts the output;
// - `/health` is 200 while serving, 503 while a worker is down and while draining.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  startCluster, connectWorker, clusterSkipReason, closeAll, call, waitFor, sleep, freePort,
} from "./harness.mjs";

function prometheusSkipReason() {
  for (const bin of ["prometheus", "promtool"]) {
    if (spawnSync(bin, ["--version"], { stdio: "ignore" }).status !== 0) {
      return `${bin} is not installed (scripts/setup installs Debian's prometheus)`;
    }
  }
  return false;
}

const skip = clusterSkipReason() || prometheusSkipReason();
const HOOK = { timeout: 30000 };

async function get(url, ms = 2000) {
  const res = await fetch(url, { signal: AbortSignal.timeout(ms) });
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type") };
}

/** `sum` of the samples of `name` in an exposition text. */
function sumOf(text, name) {
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      total += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return total;
}

/** Polls `url` every few ms until its status is `status`; returns the body. */
async function untilStatus(url, status, ms) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await get(url, 500);
      if (last.status === status) return last.body;
    } catch (e) {
      last = e.message;
    }
    await sleep(5);
  }
  throw new Error(`${url} did not answer ${status} within ${ms} ms (last: ${JSON.stringify(last)})`);
}

describe("metrics: Prometheus scrapes a 2-worker cluster", { skip }, () => {
  let cluster;
  let metricsUrl;
  let prom;
  let promUrl;
  let dir;
  let promLog = "";

  before(async () => {
    cluster = await startCluster({ workers: 2, args: ["--metrics", "127.0.0.1:0"] });
    const m = await cluster.waitForLog(/metrics on (http:\/\/127\.0\.0\.1:\d+)\/metrics/);
    metricsUrl = m[1];
  }, HOOK);

  after(async () => {
    closeAll();
    if (prom) {
      prom.kill("SIGKILL");
    }
    if (cluster) await cluster.stop("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a PromQL instant query; resolves with the result vector. */
  async function query(q) {
    const { status, body } = await get(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
    assert.equal(status, 200, body);
    return JSON.parse(body).data.result;
  }

  /** The single value of a scalar-like query, or NaN when it has no result. */
  async function value(q) {
    const r = await query(q);
    return r.length === 1 ? Number(r[0].value[1]) : NaN;
  }

  it("counts connections, survives a SIGKILL and reports health", { timeout: 90000 }, async () => {
    // Serving: the primary and both workers say so.
    await untilStatus(`${metricsUrl}/health`, 200, 3000);
    for (const url of cluster.urls) {
      const h = await get(`${url}/health`);
      assert.deepEqual([h.status, h.body], [200, "serving\n"]);
    }

    // Clients: polling and WebSocket on both workers.
    const clients = [];
    for (let i = 0; i < 6; i++) {
      const transports = i % 2 === 0 ? ["polling"] : ["websocket"];
      clients.push(await connectWorker(cluster, i % 2 === 0 ? 0 : 1, { transports, reconnection: false }));
    }
    for (let i = 0; i < 5; i++) {
      for (const c of clients) await call(c, "broadcast", { event: "news", args: [i] });
    }
    // A broadcast with acks nobody gives (worker 1 asks; 6 deliveries), and a socket
    // that leaves by itself on worker 0.
    const noAnswer = await call(clients[1], "broadcast-with-ack", { event: "nobody-answers", timeout: 200 });
    assert.match(String(noAnswer.err), /timed out/, JSON.stringify(noAnswer));
    const leaver = await connectWorker(cluster, 0, { transports: ["websocket"], reconnection: false });
    leaver.disconnect();

    // The primary's own output: every worker reported, and promtool accepts it.
    const text = await waitFor(async () => {
      const r = await get(`${metricsUrl}/metrics`);
      return sumOf(r.body, "rsio_connections") === clients.length ? r.body : null;
    }, 5000, 100);
    assert.match(text, /^rsio_connections\{worker="0",transport="polling"\} 3$/m);
    assert.match(text, /^rsio_connections\{worker="1",transport="websocket"\} 3$/m);
    assert.match(text, /^rsio_event_loop_lag_seconds_bucket\{le="\+Inf",worker="1"\} [1-9]\d*$/m);
    assert.ok(sumOf(text, "rsio_broadcasts_received_total") > 0, text);
    // 30 broadcasts to the 6 clients, then the one with acks: one delivery per socket reached.
    const delivered = await waitFor(async () => {
      const r = await get(`${metricsUrl}/metrics`);
      return sumOf(r.body, "rsio_broadcast_deliveries_total") === 30 * 6 + 6 ? r.body : null;
    }, 5000, 100).catch(async () => {
      throw new Error(`deliveries: ${sumOf((await get(`${metricsUrl}/metrics`)).body, "rsio_broadcast_deliveries_total")}`);
    });
    assert.match(delivered, /^rsio_broadcast_ack_timeouts_total\{worker="1"\} 1$/m);
    assert.match(delivered, /^rsio_broadcast_ack_timeouts_total\{worker="0"\} 0$/m);
    assert.match(delivered, /^rsio_socket_disconnects_total\{worker="0",reason="client namespace disconnect"\} 1$/m);
    assert.match(delivered, /^rsio_socket_disconnects_total\{worker="1",reason="server namespace disconnect"\} 0$/m);
    const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`);

    // A real Prometheus scraping the primary every second.
    dir = mkdtempSync(path.join(os.tmpdir(), "rsio-prom-"));
    const promPort = await freePort();
    promUrl = `http://127.0.0.1:${promPort}`;
    writeFileSync(path.join(dir, "prometheus.yml"), [
      "global:",
      "  scrape_interval: 1s",
      "  evaluation_interval: 1s",
      "scrape_configs:",
      "  - job_name: rsio",
      "    static_configs:",
      `      - targets: ["${new URL(metricsUrl).host}"]`,
      "",
    ].join("\n"));
    prom = spawn("prometheus", [
      `--config.file=${path.join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    prom.stderr.setEncoding("utf8");
    prom.stderr.on("data", (d) => { if (promLog.length < 200_000) promLog += d; });
    await waitFor(async () => {
      try {
        return (await value("sum(rsio_connections)")) === clients.length;
      } catch {
        return false;
      }
    }, 20000, 250).catch((e) => {
      throw new Error(`${e.message}; prometheus log:\n${promLog.slice(-3000)}`);
    });

    // Traffic on worker 1 before it dies, scraped.
    const before1 = await waitFor(async () => {
      const v = await value('rsio_packets_received_total{worker="1"}');
      return v > 0 ? v : null;
    }, 5000, 250);

    // SIGKILL worker 1: /health says so until its successor is ready.
    const pid1 = cluster.pids.get(1);
    process.kill(pid1, "SIGKILL");
    const down = await untilStatus(`${metricsUrl}/health`, 503, 3000);
    assert.equal(down, "1 of 2 workers ready\n");
    await untilStatus(`${metricsUrl}/health`, 200, 10000);
    await waitFor(() => cluster.pids.get(1) !== pid1, 5000);

    // More traffic on the new worker 1, then let Prometheus see its restart.
    const fresh = await connectWorker(cluster, 1, { transports: ["websocket"], reconnection: false });
    for (let i = 0; i < 3; i++) await call(fresh, "broadcast", { event: "news", args: [i] });
    await waitFor(async () => (await value('rsio_worker_restarts_total{worker="1"}')) === 1, 10000, 250);
    const after1 = await waitFor(async () => {
      const v = await value('rsio_packets_received_total{worker="1"}');
      return v > before1 ? v : null;
    }, 10000, 250);
    assert.ok(after1 > before1);
    // The counter never went back: no reset for rate() to guess at.
    assert.equal(await value('resets(rsio_packets_received_total{worker="1"}[5m])'), 0);
    assert.equal(await value('sum(resets(rsio_connects_total[5m]))'), 0);
    assert.ok((await value('rate(rsio_packets_received_total{worker="1"}[30s])')) >= 0);

    // Draining: a polling session that nobody polls keeps worker 0 draining for a
    // while; /health on the primary and on that worker says so meanwhile.
    for (const c of clients) c.close();
    fresh.close();
    const open = await get(`${cluster.urls[0]}/socket.io/?EIO=4&transport=polling`);
    assert.equal(open.status, 200, open.body);
    cluster.proc.kill("SIGTERM");
    assert.equal(await untilStatus(`${metricsUrl}/health`, 503, 2000), "draining\n");
    assert.equal(await untilStatus(`${cluster.urls[0]}/health`, 503, 2000), "draining\n");
    const res = await cluster.stop("SIGTERM", 10000);
    assert.equal(res.code, 0, cluster.log().slice(-3000));
  });
});
