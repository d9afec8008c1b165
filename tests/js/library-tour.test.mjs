// examples/library_tour.rs, the program of issue 15 written with rsio's
// library API (prelude, builder, state, extractors, extensions), against the
// official client: greeting, a message with a good and a bad payload, a ping
// ack with no arguments, and a Vec sent as one argument.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import {
  REPO_ROOT, client, closeAll, once, ack, sleep, stripOffset, TEST_TIMEOUT, freePort,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const BIN = path.join(REPO_ROOT, "target", "debug", "examples", "library_tour");

/** Resolves once `port` accepts connections; rejects after `ms`. */
async function listening(port, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const sock = net.connect(port, "127.0.0.1");
      sock.once("connect", () => { sock.destroy(); resolve(true); });
      sock.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`library_tour not listening on ${port} after ${ms} ms`);
    await sleep(50);
  }
}

describe("the library tour example", () => {
  let proc;
  let url;

  before(async () => {
    if (!existsSync(BIN)) {
      throw new Error(`${BIN} not found (build it with \`cargo build --example library_tour\`)`);
    }
    const port = await freePort();
    proc = spawn(BIN, [], { env: { ...process.env, PORT: String(port) }, stdio: "inherit" });
    url = `http://127.0.0.1:${port}`;
    await listening(port);
  });

  after(async () => {
    closeAll();
    if (proc && proc.exitCode === null) {
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGKILL");
      await exited;
    }
  });

  /** A connected client, with the greeting it got on connecting. */
  async function connected(opts = {}) {
    const s = client(url, opts);
    const greeting = once(s, "greeting");
    const up = once(s, "connect");
    s.connect();
    await up;
    return { s, greeting: stripOffset(await greeting) };
  }

  it("greets from the application state, at /socket.io/", T, async () => {
    const { greeting } = await connected();
    assert.deepEqual(greeting, ["hello"]);
  });

  it("acks msg with its text and a per-socket count; a bad payload gets the error", T, async () => {
    const { s } = await connected();
    assert.deepEqual(await ack(s, "msg", { text: "hi" }), ["hi", 1]);
    assert.deepEqual(await ack(s, "msg", { text: "again" }), ["again", 2]);
    const [bad] = await ack(s, "msg", 42);
    assert.match(bad, /^bad message: /);
    // The count is the socket's own: a second client starts at 1.
    const { s: other } = await connected();
    assert.deepEqual(await ack(other, "msg", { text: "x" }), ["x", 1]);
    assert.deepEqual(await ack(s, "msg", { text: "third" }), ["third", 4]);
  });

  it("acks ping with no arguments", T, async () => {
    const { s } = await connected();
    assert.deepEqual(await ack(s, "ping"), []);
  });

  it("sends a Vec as one argument", T, async () => {
    const { s } = await connected({ transports: ["websocket"] });
    const list = once(s, "list");
    s.emit("list");
    assert.deepEqual(stripOffset(await list), [[1, 2, 3]]);
  });
});
