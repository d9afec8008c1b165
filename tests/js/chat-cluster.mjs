// Starts the chat example (`examples/chat`) as a cluster for the tests that drive
// it (chat.test.mjs, nginx.test.mjs).
//
// Binary: RSIO_CHAT_BIN, else <repo>/target/debug/examples/chat
// (`cargo build --example chat`).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./harness.mjs";

/** The chat binary the tests start. */
export const CHAT_BIN = process.env.RSIO_CHAT_BIN || path.join(REPO_ROOT, "target", "debug", "examples", "chat");

/**
 * Starts the chat on 2 workers (random free base port), with `args` added to its
 * command line, and resolves once the primary logged `ready:`.
 */
export async function startChat(dbPath, workers = 2, args = []) {
  if (!existsSync(CHAT_BIN)) {
    throw new Error(`chat binary not found: ${CHAT_BIN} (build it with \`cargo build --example chat\`)`);
  }
  let last;
  for (let attempt = 0; attempt < 6; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    try {
      return await spawnChat(base, workers, dbPath, args);
    } catch (e) {
      last = e;
      if (!e.bindFailure) throw e;
    }
  }
  throw last;
}

function spawnChat(base, workers, dbPath, args) {
  const env = { ...process.env };
  delete env.NOTIFY_SOCKET;
  const proc = spawn(CHAT_BIN, ["--workers", String(workers), "--port", String(base), "--db", dbPath, ...args], {
    cwd: REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stdout.setEncoding("utf8");
  proc.stderr.setEncoding("utf8");
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => {
    if (err.length < 2_000_000) err += d;
    if (process.env.INTEROP_SERVER_LOG) process.stderr.write(d);
  });
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const ports = Array.from({ length: workers }, (_, i) => base + i);
  const chat = {
    proc,
    ports,
    urls: ports.map((p) => `http://127.0.0.1:${p}`),
    stdout: () => out,
    stderr: () => err,
    exited,
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
    const deadline = setTimeout(async () => {
      clearInterval(poll);
      await chat.stop();
      reject(new Error(`chat did not get ready within 15 s; stderr:\n${err.slice(-4000)}`));
    }, 15000);
    const poll = setInterval(() => {
      if (ready.test(err)) {
        clearInterval(poll);
        clearTimeout(deadline);
        resolve(chat);
      }
    }, 20);
    exited.then(({ code }) => {
      clearInterval(poll);
      clearTimeout(deadline);
      const e = new Error(`chat exited early (code ${code}); stderr:\n${err.slice(-4000)}`);
      e.bindFailure = code === 69 && /cannot listen on/.test(err);
      reject(e);
    });
  });
}
