// Memory per idle Engine.IO / Socket.IO session of examples/conformance.
//
//   node scripts/idle-memory.mjs [N] [eio|sio]
//
// Starts the release build of examples/conformance pinned to core 0 (taskset),
// opens N WebSocket sessions from this process on core 1, answers pings, and
// prints the server's RSS before and after, and the difference per session.
// Loopback only; bounded in count (N) and time (60 s).
import { spawn, execSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests/js/package.json"));
const WebSocket = require("ws");
const N = Number(process.argv[2] || 2000);
const mode = process.argv[3] || "eio";
const deadline = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60_000);

const bin = path.join(root, "target/release/examples/conformance");
const server = spawn("heaptrack", ["-o", "/tmp/idleht", bin, "--port", "0", "--ping-interval", "25000", "--ping-timeout", "20000"], { stdio: ["ignore", "pipe", "inherit"] });
const url = await new Promise((resolve) => server.stdout.on("data", (d) => {
  const m = /listening on (http:\/\/[\d.:]+)/.exec(String(d));
  if (m) resolve(m[1]);
}));
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, "utf8"))[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await sleep(300);
const before = rss();
const wsUrl = url.replace("http", "ws") + (mode === "sio" ? "/socket.io/" : "/engine.io/") + "?EIO=4&transport=websocket";
const sockets = [];
for (let i = 0; i < N; i += 100) {
  await Promise.all(Array.from({ length: Math.min(100, N - i) }, () => new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    ws.on("message", (data) => {
      const s = String(data);
      if (s === "2") ws.send("3");
      else if (s.startsWith("0")) { if (mode === "sio") ws.send("40"); else resolve(); }
      else if (s.startsWith("40")) resolve();
    });
    ws.on("error", reject);
    sockets.push(ws);
  })));
}
await sleep(1000);
const after = rss();
console.log(`${mode}: ${N} idle websocket sessions: RSS ${before} KiB -> ${after} KiB, ${((after - before) / N).toFixed(2)} KiB per session`);
server.kill("SIGKILL"); await sleep(500); for (const ws of sockets) ws.terminate();

clearTimeout(deadline);
