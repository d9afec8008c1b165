// Socket.IO v2 clients (socket.io-client 2.5.0 over Engine.IO v3) against a
// server started with --allow-eio3 (Node: allowEIO3): polling, WebSocket and
// the upgrade, events, acks, binary, rooms shared with a v4 client,
// namespaces with query auth and CONNECT_ERROR, reconnection.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import ioV2 from "socket.io-client-v2";
import {
  useServer,
  serverCommand,
  connect as connectV4,
  call,
  once,
  stripOffset,
  DEFAULT_TIMEOUT_MS,
  TEST_TIMEOUT,
} from "./harness.mjs";

// The same server as the other files, with v3 clients allowed.
{
  const { cmd, args } = serverCommand();
  process.env.RSIO_INTEROP_SERVER = [cmd, ...args, "--allow-eio3"].join(" ");
  delete process.env.INTEROP_REFERENCE;
}

const T = { timeout: TEST_TIMEOUT };
const ctx = useServer();

const v2Clients = new Set();

/** A v2 socket on `nsp` (`/` by default), connecting. */
function openV2(nsp = "/", opts = {}) {
  const socket = ioV2(ctx.url + nsp, {
    forceNew: true,
    reconnection: false,
    timeout: DEFAULT_TIMEOUT_MS,
    ...opts,
  });
  v2Clients.add(socket);
  return socket;
}

/** Resolves once `socket` connected; rejects on a refusal (with its data) or a timeout. */
function connected(socket, ms = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`v2 connect to ${socket.nsp} timed out`)), ms);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(Object.assign(new Error("v2 connect refused"), { data: err }));
    });
  });
}

function connectV2(nsp = "/", opts = {}) {
  return connected(openV2(nsp, opts));
}

function closeV2() {
  for (const s of v2Clients) {
    s.io.reconnection(false);
    s.close();
  }
  v2Clients.clear();
}

/** Emits with an ack on a v2 socket (it has no `timeout()`); resolves with the ack args. */
function ackV2(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ack for "${event}" within ${DEFAULT_TIMEOUT_MS} ms`)),
      DEFAULT_TIMEOUT_MS,
    );
    socket.emit(event, ...args, (...res) => {
      clearTimeout(timer);
      resolve(res);
    });
  });
}

const bytes = (...b) => Buffer.from(b);

// Under Node, engine.io-client 3 always polls in base64 (`b64=1`: its XHR
// polyfill has no `responseType`); the binary polling payload is covered by
// tests/engine_eio3.rs and the eio3 conformance suite.
for (const [name, opts, binary] of [
  ["polling", { transports: ["polling"] }, false],
  ["websocket", { transports: ["websocket"] }, true],
  ["websocket, base64", { transports: ["websocket"], forceBase64: true }, false],
]) {
  describe(`socket.io-client 2.x over ${name}`, () => {
    it("connects to / without a CONNECT, with the engine id as socket id", T, async () => {
      try {
        const s = await connectV2("/", opts);
        assert.equal(s.io.engine.transport.name, opts.transports[0]);
        // Binary frames unless base64 was asked for (`b64=1`).
        assert.equal(s.io.engine.transport.supportsBinary, binary);
        // `join` acks socket.rooms: the server-side id comes first.
        const [rooms] = await ackV2(s, "join", "r-id");
        assert.deepEqual(rooms, [s.id, "r-id"]);
        assert.equal(s.id, s.io.engine.id);
      } finally {
        closeV2();
      }
    });

    it("events and acks, both directions", T, async () => {
      try {
        const s = await connectV2("/", opts);
        const echoed = once(s, "echo");
        s.emit("echo", "hé😀", 1, { a: [true, null] });
        assert.deepEqual(stripOffset(await echoed), ["hé😀", 1, { a: [true, null] }]);
        assert.deepEqual(await ackV2(s, "echo", "x", 2), ["x", 2]);
      } finally {
        closeV2();
      }
    });

    it("binary arguments, in events and acks", T, async () => {
      try {
        const s = await connectV2("/", opts);
        const [b, nested] = await ackV2(s, "echo", bytes(1, 2, 3), { deep: [bytes(255, 0)] });
        assert.ok(Buffer.isBuffer(b), `got ${JSON.stringify(b)}`);
        assert.deepEqual([...b], [1, 2, 3]);
        assert.deepEqual([...nested.deep[0]], [255, 0]);
        const echoed = once(s, "echo");
        s.emit("echo", bytes(9, 8), "text");
        const [e, text] = stripOffset(await echoed);
        assert.ok(Buffer.isBuffer(e));
        assert.deepEqual([...e], [9, 8]);
        assert.equal(text, "text");
      } finally {
        closeV2();
      }
    });
  });
}

describe("socket.io-client 2.x with a v4 client", () => {
  it("upgrades from polling to WebSocket and keeps talking", T, async () => {
    try {
      const s = await connectV2("/");
      if (s.io.engine.transport.name !== "websocket") await once(s.io.engine, "upgrade");
      assert.equal(s.io.engine.transport.name, "websocket");
      assert.deepEqual(await ackV2(s, "echo", bytes(7)), [bytes(7)]);
    } finally {
      closeV2();
    }
  });

  it("a v2 and a v4 client in the same room get each other's broadcasts", T, async () => {
    try {
      const v2 = await connectV2("/", { transports: ["websocket"] });
      const v4 = await connectV4(ctx.url, { transports: ["websocket"] });
      await ackV2(v2, "join", "mixed");
      await call(v4, "join", "mixed");
      const toV2 = once(v2, "news");
      const toV4 = once(v4, "news");
      assert.deepEqual(await call(v4, "broadcast", { event: "news", to: ["mixed"], args: ["from v4", 1] }), "ok");
      assert.deepEqual(stripOffset(await toV2), ["from v4", 1]);
      assert.deepEqual(stripOffset(await toV4), ["from v4", 1]);
      const back = once(v4, "news2");
      const [ok] = await ackV2(v2, "broadcast", { event: "news2", to: ["mixed"], broadcast: true, args: [{ b: 2 }] });
      assert.equal(ok, "ok");
      assert.deepEqual(stripOffset(await back), [{ b: 2 }]);
    } finally {
      closeV2();
    }
  });

  it("namespace auth from the CONNECT query; a refusal is the error's data", T, async () => {
    try {
      // `/custom` emits handshake.auth on connection.
      const custom = openV2("/custom", { query: { token: "abc", n: "a b" } });
      const auth = once(custom, "auth");
      await connected(custom);
      assert.deepEqual(stripOffset(await auth), [{ token: "abc", n: "a b" }]);
      const ok = openV2("/auth", { query: { token: "secret" } });
      const welcome = once(ok, "welcome");
      await connected(ok);
      assert.deepEqual(stripOffset(await welcome), [{ user: "alice" }]);
      await assert.rejects(connectV2("/auth", { query: { token: "wrong" } }), (err) => {
        assert.deepEqual(err.data, { code: 401 });
        return true;
      });
    } finally {
      closeV2();
    }
  });

  it("reconnects after the connection drops", T, async () => {
    try {
      const s = await connectV2("/", { transports: ["websocket"], reconnection: true, reconnectionDelay: 50 });
      const firstId = s.id;
      const reconnected = once(s, "reconnect", 5000);
      // Not a client-side close: the manager sees a lost connection.
      s.io.engine.close();
      await reconnected;
      if (!s.connected) await once(s, "connect");
      assert.notEqual(s.id, firstId, "a new engine session");
      assert.deepEqual(await ackV2(s, "echo", "again"), ["again"]);
    } finally {
      closeV2();
    }
  });
});
