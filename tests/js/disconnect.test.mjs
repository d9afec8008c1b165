// Disconnect reasons as seen by the client and recorded by the server
// (`last-disconnect` → {reason, roomsAtDisconnecting}).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import {
  useServer, connect, once, fires, call, lastDisconnect, waitForDisconnectRecord, TEST_TIMEOUT,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const ctx = useServer();

/** A long-lived observer on "/" used to query the server-side records. */
let observer;
async function obs() {
  if (!observer || !observer.connected) observer = await connect(ctx.url);
  return observer;
}

for (const transports of [["websocket"], ["polling"]]) {
  const label = transports[0];
  describe(`disconnect reasons (${label})`, () => {
    it("client socket.disconnect() → client 'io client disconnect', server 'client namespace disconnect'", T, async () => {
      const s = await connect(ctx.url, { transports });
      const id = s.id;
      await call(s, "join", ["a", "b"]);
      const p = once(s, "disconnect");
      s.disconnect();
      assert.equal((await p)[0], "io client disconnect");
      assert.deepEqual(await waitForDisconnectRecord(await obs(), id), {
        reason: "client namespace disconnect",
        roomsAtDisconnecting: [id, "a", "b"].sort(),
      });
    });

    it("server-disconnect false → client 'io server disconnect', server 'server namespace disconnect'", T, async () => {
      const s = await connect(ctx.url, { transports });
      const id = s.id;
      await call(s, "join", "room-x");
      const p = once(s, "disconnect");
      s.emit("server-disconnect", false);
      assert.equal((await p)[0], "io server disconnect");
      assert.equal(s.connected, false);
      assert.deepEqual(await waitForDisconnectRecord(await obs(), id), {
        reason: "server namespace disconnect",
        roomsAtDisconnecting: [id, "room-x"].sort(),
      });
    });

    it("server-disconnect false keeps the Engine.IO connection for other namespaces", T, async () => {
      const m = new Manager(ctx.url, { transports, reconnection: false, autoConnect: false });
      const root = m.socket("/");
      const custom = m.socket("/custom");
      root.connect();
      custom.connect();
      await Promise.all([once(root, "connect"), once(custom, "connect")]);
      try {
        const engineId = m.engine.id;
        const p = once(root, "disconnect");
        const customGone = fires(custom, "disconnect", 300);
        root.emit("server-disconnect", false);
        assert.equal((await p)[0], "io server disconnect");
        assert.equal(await customGone, false);
        assert.equal(m.engine.id, engineId);
        assert.equal(await call(custom, "echo", "still here"), "still here");
      } finally {
        custom.disconnect();
      }
    });

    it("server-disconnect true → every namespace of the connection gets 'io server disconnect'; server 'server namespace disconnect'", T, async () => {
      const m = new Manager(ctx.url, { transports, reconnection: false, autoConnect: false });
      const root = m.socket("/");
      const custom = m.socket("/custom");
      root.connect();
      custom.connect();
      await Promise.all([once(root, "connect"), once(custom, "connect")]);
      const rootId = root.id;
      const customId = custom.id;
      await call(root, "join", "zz");
      const pr = once(root, "disconnect");
      const pc = once(custom, "disconnect");
      const closed = once(m, "close");
      root.emit("server-disconnect", true);
      assert.equal((await pr)[0], "io server disconnect");
      assert.equal((await pc)[0], "io server disconnect");
      await closed;
      assert.deepEqual(await waitForDisconnectRecord(await obs(), rootId), {
        reason: "server namespace disconnect",
        roomsAtDisconnecting: [rootId, "zz"].sort(),
      });
      assert.equal((await waitForDisconnectRecord(await obs(), customId)).reason, "server namespace disconnect");
    });

    it("client closes its transport (engine.close()) → client 'forced close', server 'transport close'", T, async () => {
      const s = await connect(ctx.url, { transports });
      const id = s.id;
      await call(s, "join", ["t1"]);
      const p = once(s, "disconnect");
      s.io.engine.close();
      assert.equal((await p)[0], "forced close");
      assert.deepEqual(await waitForDisconnectRecord(await obs(), id), {
        reason: "transport close",
        roomsAtDisconnecting: [id, "t1"].sort(),
      });
    });

    it("no record while connected; unknown id → null", T, async () => {
      const s = await connect(ctx.url, { transports });
      assert.equal(await lastDisconnect(s, s.id), null);
      assert.equal(await lastDisconnect(s, "no-such-id"), null);
    });
  });
}

describe("heartbeat", () => {
  it("a client that stops answering pings → server 'ping timeout' (≈ pingInterval + pingTimeout = 2 s), client 'transport close'", T, async () => {
    const s = await connect(ctx.url, { transports: ["websocket"] });
    const id = s.id;
    const engine = s.io.engine;
    const orig = engine._sendPacket.bind(engine);
    // engine.io-client internal: drop every pong, keep everything else
    engine._sendPacket = (type, ...rest) => (type === "pong" ? undefined : orig(type, ...rest));
    const t0 = Date.now();
    const [reason] = await once(s, "disconnect", 5000);
    const elapsed = Date.now() - t0;
    assert.equal(reason, "transport close");
    assert.ok(elapsed >= 900 && elapsed < 4000, `closed after ${elapsed} ms`);
    assert.deepEqual(await waitForDisconnectRecord(await obs(), id), {
      reason: "ping timeout",
      roomsAtDisconnecting: [id],
    });
  });

  it("the server pings every pingInterval (1 s) and the connection survives idle periods", T, async () => {
    const s = await connect(ctx.url, { transports: ["websocket"] });
    assert.equal(s.io.engine._pingInterval, 1000);
    assert.equal(s.io.engine._pingTimeout, 1000);
    let pings = 0;
    s.io.engine.on("ping", () => pings++);
    await new Promise((r) => setTimeout(r, 2600));
    assert.ok(pings >= 2 && pings <= 3, `${pings} pings in 2.6 s`);
    assert.equal(s.connected, true);
    assert.equal(await call(s, "echo", "idle"), "idle");
  });
});

describe("disconnect of a /custom socket is recorded too", () => {
  it("client 'io client disconnect' on /custom → server 'client namespace disconnect'", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const custom = m.socket("/custom");
    custom.connect();
    await once(custom, "connect");
    const id = custom.id;
    custom.disconnect();
    assert.deepEqual(await waitForDisconnectRecord(await obs(), id), {
      reason: "client namespace disconnect",
      roomsAtDisconnecting: [id],
    });
  });
});
