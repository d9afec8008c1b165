// The official Socket.IO Admin UI page (@socket.io/admin-ui 0.5.1, served by rsio
// under /admin/ with --admin-ui) in headless Chromium against a 2-worker cluster:
// log in as a user would (server URL, username, password), see the servers and the
// sockets of both workers with their rooms, disconnect a socket of worker 1 from
// the page opened on worker 0 and see its client disconnected. Screenshots go to
// target/screenshots/admin-*.png.
//
//   cargo build --example interop && scripts/setup && node --test tests/browser/admin.browser.mjs
//
// Needs Debian's Chromium at /usr/bin/chromium (CHROMIUM overrides), playwright-core
// (tests/browser), socket.io-client (tests/js) and the page (admin-ui/, scripts/setup).
// Binary: RSIO_CLUSTER_BIN, else target/debug/examples/interop. The page asks for
// fonts on CDNs: every request that is not to the cluster is aborted.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";

import { REPO_ROOT, SHOTS, launchChromium, load, skipReason } from "./harness.mjs";
import { startCluster } from "../js/harness.mjs";

const BIN = process.env.RSIO_CLUSTER_BIN || path.join(REPO_ROOT, "target", "debug", "examples", "interop");
const DIST = path.join(REPO_ROOT, "admin-ui/node_modules/@socket.io/admin-ui/ui/dist/index.html");
const WAIT = 8000;
const USER = "admin";
const PASSWORD = "s3cret-pass";
// bcryptjs.hashSync(PASSWORD, 4)
const HASH = "$2a$04$QMWzuhrxcodfTUdmwSuYzucvjfkSBm2wOte0ulLkUbjTDUHdfwCFG";

const ioClient = load(path.join(REPO_ROOT, "tests/js/package.json"), "socket.io-client");

const NEEDS = [
  [ioClient, "socket.io-client is not installed in tests/js (run scripts/setup)"],
  [existsSync(DIST), `no Admin UI page at ${DIST} (run scripts/setup)`],
  [existsSync(BIN), `no ${BIN} (cargo build --example interop)`],
];

/** `interop --cluster` on 2 workers at a random base port with the admin UI on. */
function startAdminCluster(workers = 2) {
  return startCluster({ workers, args: ["--admin-ui", `${USER}:${HASH}`] });
}

/** A socket.io-client on `url`, connected, in `room` (the interop app's `join`). */
async function clientIn(url, room) {
  const s = ioClient.io(url, { transports: ["websocket"], reconnection: false, timeout: WAIT });
  await new Promise((resolve, reject) => {
    s.once("connect", resolve);
    s.once("connect_error", reject);
  });
  await s.timeout(WAIT).emitWithAck("join", room);
  return s;
}

function waitForText(page, text) {
  return page.waitForFunction((t) => document.body.innerText.includes(t), text, { timeout: WAIT });
}

describe("Admin UI page in Chromium (2 workers)", { skip: skipReason(NEEDS), timeout: 90_000 }, () => {
  let cluster;
  let browser;
  const clients = [];
  const errors = [];

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    cluster = await startAdminCluster();
    browser = await launchChromium();
  });

  after(async () => {
    for (const c of clients) c.close();
    await browser?.close().catch(() => {});
    if (cluster) {
      const res = await cluster.stop();
      assert.equal(res.code, 0, `cluster exit status; stderr:\n${cluster.log().slice(-2000)}`);
    }
  });

  it("logs in, shows both workers' sockets with their rooms, disconnects one", async () => {
    const c0 = await clientIn(cluster.urls[0], "red-room");
    const c1 = await clientIn(cluster.urls[1], "blue-room");
    clients.push(c0, c1);
    const c1Gone = new Promise((resolve) => c1.once("disconnect", resolve));

    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const origin = cluster.urls[0];
    // Loopback only: the page's CDN fonts are refused, not fetched.
    await page.route((u) => u.origin !== origin, (route) => route.abort());
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("response", (r) => {
      if (r.status() >= 400) errors.push(`${r.status()} for ${r.url()}`);
    });

    // Log in as a user would: the connection form opens by itself.
    await page.goto(`${origin}/admin/`, { timeout: WAIT });
    await page.getByLabel("Server URL").fill(origin);
    await page.getByLabel("Username").fill(USER);
    await page.getByLabel("Password").fill("not the password");
    await page.getByRole("button", { name: "Connect" }).click();
    await waitForText(page, "Invalid credentials");
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Connect" }).click();
    await waitForText(page, "CONNECTED");

    // Both workers report (server_stats through the adapter).
    await page.getByText("Servers", { exact: true }).first().click();
    await waitForText(page, "#worker-0");
    await waitForText(page, "#worker-1");
    await page.screenshot({ path: path.join(SHOTS, "admin-servers.png") });
    await page.getByText("Dashboard", { exact: true }).first().click();
    await page.waitForTimeout(2500); // one more stats round for the charts
    await page.screenshot({ path: path.join(SHOTS, "admin-dashboard.png") });

    // The sockets of both workers (the page is on worker 0).
    await page.getByText("Sockets", { exact: true }).first().click();
    await waitForText(page, c0.id);
    await waitForText(page, c1.id);
    await page.screenshot({ path: path.join(SHOTS, "admin-sockets.png") });

    // Worker 1's socket: its rooms, then disconnect it from here.
    await page.getByText(c1.id).click();
    await waitForText(page, "blue-room");
    const details = await page.locator("main").innerText();
    assert.ok(details.includes("blue-room") && !details.includes("red-room"), details);
    await page.screenshot({ path: path.join(SHOTS, "admin-socket-details.png") });
    // The socket's own disconnect button (the second of the page: the first is the client's).
    await page.locator("main button:has(.mdi-logout)").nth(1).click();
    const reason = await Promise.race([
      c1Gone,
      new Promise((_, reject) => setTimeout(() => reject(new Error("client not disconnected")), WAIT)),
    ]);
    assert.equal(reason, "io server disconnect");
    assert.equal(c0.connected, true, "the other client stays");
    await waitForText(page, "DISCONNECTED");
    await page.screenshot({ path: path.join(SHOTS, "admin-disconnected.png") });
    // Loopback aborts only: no error from the page or from rsio.
    assert.deepEqual(errors.filter((e) => !e.includes("fonts") && !e.includes("cdn")), []);
    await context.close();
  });
});
