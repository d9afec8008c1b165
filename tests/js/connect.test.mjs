// Connection, namespace middleware, dynamic namespaces, multiplexing.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { useServer, connect, client, once, onceEvent, call, TEST_TIMEOUT } from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };

/** Connect expecting a refusal; resolves with the connect_error Error. */
async function refused(url, opts = {}) {
  const socket = client(url, opts);
  let didConnect = false;
  socket.on("connect", () => (didConnect = true));
  const p = once(socket, "connect_error");
  socket.connect();
  const [err] = await p;
  socket.disconnect();
  assert.equal(didConnect, false);
  assert.equal(socket.connected, false);
  return err;
}

const ctx = useServer();

describe("connect", () => {

  it("connects to / with a socket id distinct from the Engine.IO id", T, async () => {
    const s = await connect(ctx.url);
    assert.equal(s.connected, true);
    assert.equal(typeof s.id, "string");
    assert.ok(s.id.length > 0);
    assert.equal(typeof s.io.engine.id, "string");
    assert.notEqual(s.id, s.io.engine.id);
    // and the socket works
    assert.deepEqual(await call(s, "echo", "hi"), "hi");
  });

  it("two clients get distinct socket ids", T, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    assert.notEqual(a.id, b.id);
    assert.notEqual(a.io.engine.id, b.io.engine.id);
  });

  it("CONNECT reply carries a pid (connection state recovery on)", T, async () => {
    const s = await connect(ctx.url);
    assert.equal(typeof s._pid, "string");
    assert.ok(s._pid.length > 0);
    assert.equal(s.recovered, false);
    assert.equal(await call(s, "recovered"), false);
  });

  it("/auth without token is refused with message and data", T, async () => {
    const err = await refused(ctx.url + "/auth");
    assert.ok(err instanceof Error);
    assert.equal(err.message, "unauthorized");
    assert.deepEqual(err.data, { code: 401 });
  });

  it("/auth with a wrong token is refused", T, async () => {
    const err = await refused(ctx.url + "/auth", { auth: { token: "nope" } });
    assert.equal(err.message, "unauthorized");
    assert.deepEqual(err.data, { code: 401 });
  });

  it("/auth with the token is accepted and welcomed with socket.data", T, async () => {
    const s = client(ctx.url + "/auth", { auth: { token: "secret" } });
    const welcome = onceEvent(s, "welcome");
    s.connect();
    await once(s, "connect");
    assert.deepEqual(await welcome, [{ user: "alice" }]);
  });

  it("unknown namespace is refused with 'Invalid namespace'", T, async () => {
    const err = await refused(ctx.url + "/nope");
    assert.equal(err.message, "Invalid namespace");
    assert.equal(err.data, undefined);
  });

  it("dynamic namespace /dyn-7 connects and says hello with its name", T, async () => {
    const s = client(ctx.url + "/dyn-7");
    const hello = onceEvent(s, "hello");
    s.connect();
    await once(s, "connect");
    assert.deepEqual(await hello, ["/dyn-7"]);
  });

  it("dynamic namespace /dyn-123 is a distinct child", T, async () => {
    const s = client(ctx.url + "/dyn-123");
    const hello = onceEvent(s, "hello");
    s.connect();
    assert.deepEqual(await hello, ["/dyn-123"]);
  });

  it("dynamic namespace /dyn-0 is refused by the parent middleware", T, async () => {
    const err = await refused(ctx.url + "/dyn-0");
    assert.equal(err.message, "dyn-0 refused");
    assert.equal(err.data, undefined);
  });

  it("names not matching the regex are invalid (/dyn-x, /dyn-)", T, async () => {
    assert.equal((await refused(ctx.url + "/dyn-x")).message, "Invalid namespace");
    assert.equal((await refused(ctx.url + "/dyn-")).message, "Invalid namespace");
  });

  it("/custom echoes handshake.auth", T, async () => {
    const s = client(ctx.url + "/custom", { auth: { a: 1 } });
    const auth = onceEvent(s, "auth");
    s.connect();
    assert.deepEqual(await auth, [{ a: 1 }]);
  });

  it("/custom without auth gets {}", T, async () => {
    const s = client(ctx.url + "/custom");
    const auth = onceEvent(s, "auth");
    s.connect();
    assert.deepEqual(await auth, [{}]);
  });

  it("nothing is emitted unprompted on /", T, async () => {
    const s = client(ctx.url);
    const seen = [];
    s.onAny((...args) => seen.push(args));
    s.connect();
    await once(s, "connect");
    // round-trip to be sure anything sent right after CONNECT has arrived
    assert.equal(await call(s, "echo", 1), 1);
    assert.deepEqual(seen, []);
  });

  it("two namespaces multiplexed over one Engine.IO connection", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const a = m.socket("/");
    const b = m.socket("/custom", { auth: { b: true } });
    const auth = onceEvent(b, "auth");
    a.connect();
    b.connect();
    await Promise.all([once(a, "connect"), once(b, "connect")]);
    try {
      assert.equal(a.io, b.io);
      assert.notEqual(a.id, b.id);
      assert.deepEqual(await auth, [{ b: true }]);
      assert.deepEqual(await call(a, "echo", "on /"), "on /");
      assert.deepEqual(await call(b, "echo", "on /custom"), "on /custom");
      // only one engine: both sockets share it, and the server sees them as different sockets
      const all = await call(a, "fetch-sockets", {});
      assert.ok(all.some((x) => x.id === a.id));
      assert.ok(!all.some((x) => x.id === b.id), "fetch-sockets on / must not list /custom sockets");
      // leaving one namespace keeps the other alive
      b.disconnect();
      assert.equal(await call(a, "echo", "still"), "still");
      assert.equal(a.connected, true);
    } finally {
      a.disconnect();
      b.disconnect();
    }
  });

  it("an /auth socket and a / socket share a connection; refusal on one does not affect the other", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const a = m.socket("/");
    const bad = m.socket("/auth");
    a.connect();
    await once(a, "connect");
    const errP = once(bad, "connect_error");
    bad.connect();
    try {
      const [err] = await errP;
      assert.equal(err.message, "unauthorized");
      assert.deepEqual(err.data, { code: 401 });
      assert.equal(await call(a, "echo", 42), 42);
      assert.equal(a.connected, true);
    } finally {
      bad.disconnect();
      a.disconnect();
    }
  });

  it("a connection that never sends a namespace CONNECT is closed after connectTimeout (2 s)", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const t0 = Date.now();
    const closed = once(m, "close", 5000);
    m.open();
    await once(m, "open");
    const [reason] = await closed;
    const elapsed = Date.now() - t0;
    assert.equal(reason, "transport close");
    assert.ok(elapsed >= 1500 && elapsed < 4000, `closed after ${elapsed} ms`);
  });
});
