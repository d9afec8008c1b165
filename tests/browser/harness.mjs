// What the headless-Chromium tests share: the paths, playwright-core, the
// browser's launch, and a cluster process started on a random base port that
// resolves once its primary logged `ready:`.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, "..", "..");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const SHOTS = path.join(REPO_ROOT, "target", "screenshots");

/** `name` as `from` would import it, or null when it is not installed. */
export function load(from, name) {
  try {
    return createRequire(from)(name);
  } catch {
    return null;
  }
}

export const playwright = load(import.meta.url, "playwright-core");

/** Why the tests are skipped (RSIO_SKIP_BROWSER=1), or false. A missing part
 * fails them (scripts/setup installs it): each of `needs` is [ok, what to say]. */
export function skipReason(needs = []) {
  if (process.env.RSIO_SKIP_BROWSER === "1") return "RSIO_SKIP_BROWSER=1";
  if (!playwright) throw new Error("playwright-core is not installed (run scripts/setup, or npm ci in tests/browser)");
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (run scripts/setup: apt-get install chromium)`);
  for (const [ok, what] of needs) if (!ok) throw new Error(what);
  return false;
}

/** Debian's Chromium, headless, with the flags this machine's closed network needs. */
export function launchChromium() {
  return playwright.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: 30_000,
  });
}

/** `bin` with `argsAt(base)` as a cluster of `workers` at a random base port
 * (another port on a bind failure); resolves once the primary logged `ready:`.
 * `label` names it in errors. */
export async function startCluster(bin, argsAt, { workers = 2, label = "cluster" } = {}) {
  if (!existsSync(bin)) throw new Error(`${label} binary not found: ${bin}`);
  for (let attempt = 0; ; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    try {
      return await spawnCluster(bin, argsAt(base), base, workers, label);
    } catch (e) {
      if (!e.bindFailure || attempt >= 5) throw e;
    }
  }
}

function spawnCluster(bin, args, base, workers, label) {
  const env = { ...process.env };
  delete env.NOTIFY_SOCKET;
  const proc = spawn(bin, args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stdout.resume();
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => {
    if (err.length < 2_000_000) err += d;
    if (process.env.INTEROP_SERVER_LOG) process.stderr.write(d);
  });
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const cluster = {
    urls: Array.from({ length: workers }, (_, i) => `http://127.0.0.1:${base + i}`),
    stderr: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
      const res = await exited;
      clearTimeout(timer);
      return res;
    },
  };
  const ready = new RegExp(`ready: http://127\\.0\\.0\\.1:${base}\\.\\.${base + workers - 1} \\(${workers} workers\\)`);
  return new Promise((resolve, reject) => {
    const poll = setInterval(() => {
      if (ready.test(err)) {
        clearInterval(poll);
        clearTimeout(deadline);
        resolve(cluster);
      }
    }, 20);
    const deadline = setTimeout(async () => {
      clearInterval(poll);
      await cluster.stop();
      reject(new Error(`${label} not ready within 15 s; stderr:\n${err.slice(-4000)}`));
    }, 15000);
    exited.then(({ code }) => {
      clearInterval(poll);
      clearTimeout(deadline);
      const e = new Error(`${label} exited early (code ${code}); stderr:\n${err.slice(-4000)}`);
      e.bindFailure = code === 69 && /cannot listen on/.test(err);
      reject(e);
    });
  });
}
