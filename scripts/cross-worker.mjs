// Cross-worker broadcast cost against the same-worker case, measured side by side.
//
//   node scripts/cross-worker.mjs [receivers=200] [broadcasts=1000] [rate=200]
//
// Starts `examples/interop --cluster --workers 2` (release build) pinned to CPU 0
// (`taskset -c 0`; this script should run on CPU 1: `taskset -c 1 node …`).
// Case "same": the sender and every receiver are on worker 0. Case "cross": the
// sender is on worker 0, every receiver on worker 1 (each packet crosses the
// primary's relay). For each case: deliveries/s, lost deliveries (must be 0) and
// server CPU time (primary + workers, from /proc) per delivery. The cases
// alternate, 3 rounds; medians are printed. Loopback only; bounded in count and time.
import { spawn, execSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests/js/package.json"));
const { io } = require("socket.io-client");
const [R, B, RATE] = [Number(process.argv[2] || 200), Number(process.argv[3] || 1000), Number(process.argv[4] || 200)];
setTimeout(() => { console.error("timed out"); process.exit(2); }, 300_000).unref();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const base = 20000 + Math.floor(Math.random() * 30000);

const bin = path.join(root, "target/release/examples/interop");
const primary = spawn("taskset", ["-c", "0", bin, "--cluster", "--workers", "2", "--port", String(base), "--log-level", "warn"], { stdio: ["ignore", "ignore", "pipe"] });
let log = "";
primary.stderr.on("data", (d) => (log += d));
for (let i = 0; i < 100 && !/ready:/.test(log); i++) await sleep(100);
if (!/ready:/.test(log)) {
  // --log-level warn hides the ready line: wait for the ports instead.
  await sleep(1500);
}
const pids = () => [primary.pid, ...execSync(`pgrep -P ${primary.pid}`).toString().trim().split("\n").map(Number)];
const cpuTicks = () => pids().reduce((sum, pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return sum + Number(f[11]) + Number(f[12]);
}, 0);
const TICK_US = 1e6 / Number(execSync("getconf CLK_TCK").toString());

const connect = (port) => new Promise((resolve, reject) => {
  const s = io(`http://127.0.0.1:${port}`, { transports: ["websocket"], reconnection: false });
  s.on("connect", () => resolve(s));
  s.on("connect_error", reject);
});
const call = (s, ev, ...a) => new Promise((r) => s.emit(ev, ...a, r));

async function round(kind) {
  const sender = await connect(base);
  const receivers = [];
  for (let i = 0; i < R; i += 50) {
    receivers.push(...(await Promise.all(Array.from({ length: Math.min(50, R - i) }, () => connect(kind === "same" ? base : base + 1)))));
  }
  const room = `r-${kind}-${Math.random()}`;
  await Promise.all(receivers.map((s) => call(s, "join", room)));
  let received = 0;
  for (const s of receivers) s.on("tick", () => received++);
  await sleep(300);
  const cpu0 = cpuTicks();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < B; i++) {
    sender.emit("broadcast", { event: "tick", args: [i, "x".repeat(32)], to: [room] });
    if (i % 10 === 9) await sleep(1000 / RATE * 10);
  }
  const expected = B * R;
  for (let i = 0; i < 200 && received < expected; i++) await sleep(50);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpuUs = (cpuTicks() - cpu0) * TICK_US;
  for (const s of [sender, ...receivers]) s.close();
  await sleep(300);
  return { kind, deliveries: received, lost: expected - received, perSec: received / secs, cpuUsPerDelivery: cpuUs / received };
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = { same: [], cross: [] };
for (let r = 0; r < 3; r++) {
  for (const kind of r % 2 ? ["cross", "same"] : ["same", "cross"]) results[kind].push(await round(kind));
}
primary.kill("SIGTERM");
for (const kind of ["same", "cross"]) {
  const rs = results[kind];
  console.log(`${kind.padEnd(5)}: ${R} receivers x ${B} broadcasts: ${median(rs.map((x) => x.perSec)).toFixed(0)} deliveries/s, lost ${rs.reduce((a, x) => a + x.lost, 0)}, server CPU ${median(rs.map((x) => x.cpuUsPerDelivery)).toFixed(2)} µs/delivery (median of ${rs.length})`);
}
const ratio = median(results.cross.map((x) => x.cpuUsPerDelivery)) / median(results.same.map((x) => x.cpuUsPerDelivery));
console.log(`cross/same server CPU per delivery: ${ratio.toFixed(2)}`);
process.exit(0);
