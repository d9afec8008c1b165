// Helpers for the tests that mix rsio and Node servers on one Redis: a
// throwaway redis-server on a free loopback port (no persistence, its own
// temporary directory), and servers started with extra arguments.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO_ROOT } from "./harness.mjs";

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

/** A random loopback port for a Redis that is not started yet. */
export function randomPort() {
  return 20000 + Math.floor(Math.random() * 40000);
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

/** The rsio interop example as a member of the Redis Streams cluster at `url`. */
export async function startRsio(url) {
  const bin = path.join(REPO_ROOT, "target", "debug", "examples", "interop");
  const r = await spawnUntil(bin, ["--port", "0", "--redis-streams", url], /listening on (http:\/\/127\.0\.0\.1:\d+)/, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  return { url: r.match[1], proc: r.proc, stop: r.stop, output: r.output };
}

/** The Node server (redis-node-server.mjs) on the same Redis. */
export async function startNode(url) {
  const script = path.join(REPO_ROOT, "tests", "js", "redis-node-server.mjs");
  const r = await spawnUntil(process.execPath, [script, "--port", "0", "--redis", url], /listening on (http:\/\/127\.0\.0\.1:\d+)/);
  return { url: r.match[1], proc: r.proc, stop: r.stop, output: r.output };
}
