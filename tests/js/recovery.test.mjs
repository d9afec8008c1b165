// Connection state recovery: {maxDisconnectionDuration: 5000, skipMiddlewares: true}.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  useServer, connect, client, once, call, stripOffset, waitForDisconnectRecord, sleep, TEST_TIMEOUT,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const ctx = useServer();

/**
 * Drops the transport of `s` (client reason "forced close", server reason
 * "transport close") and waits until the server recorded the disconnect.
 */
async function dropTransport(s, observer) {
  const id = s.id;
  const p = once(s, "disconnect");
  s.io.engine.close();
  assert.equal((await p)[0], "forced close");
  const rec = await waitForDisconnectRecord(observer, id);
  assert.equal(rec.reason, "transport close");
  return id;
}

/** Makes the client receive one event so that it has an offset to offer on reconnection. */
async function primeOffset(s) {
  const p = once(s, "echo");
  s.emit("echo", "prime");
  await p;
  assert.equal(typeof s._lastOffset, "string");
}

async function reconnect(s) {
  const p = once(s, "connect");
  s.connect();
  await p;
}

for (const transports of [["websocket"], ["polling"]]) {
  const label = transports[0];
  describe(`recovery (${label})`, () => {
    it("missed room broadcasts are delivered once, in order; id, rooms and data are restored", T, async () => {
      const a = await connect(ctx.url, { transports });
      const b = await connect(ctx.url, { transports });
      const missed = [];
      a.on("missed", (...args) => missed.push(stripOffset(args)));
      const other = [];
      a.on("not-for-a", (...args) => other.push(args));

      assert.deepEqual(await call(a, "join", "r"), [a.id, "r"]);
      assert.equal(await call(a, "set-data", { who: "a", n: 1 }), "ok");
      const pidBefore = a._pid;
      // one event received before the drop: the client's offset points at it
      const first = once(a, "missed");
      await call(b, "broadcast", { event: "missed", args: ["before"], to: ["r"] });
      await first;
      const offsetBefore = a._lastOffset;
      assert.equal(typeof offsetBefore, "string");

      const oldId = await dropTransport(a, b);

      // while `a` is away: two events for room r, one for a room it is not in, one volatile
      await call(b, "broadcast", { event: "missed", args: [1, { x: "one" }], to: ["r"] });
      await call(b, "broadcast", { event: "missed", args: [2, Buffer.from([2, 2])], to: ["r"] });
      await call(b, "broadcast", { event: "not-for-a", args: [3], to: ["elsewhere"] });
      await call(b, "broadcast", { event: "missed", args: ["volatile"], to: ["r"], volatile: true });
      await call(b, "broadcast", { event: "missed", args: ["except-r"], except: ["r"] });

      await reconnect(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, oldId);
      assert.equal(a._pid, pidBefore);
      assert.equal(await call(a, "recovered"), true);

      // missed events are emitted before `connect`; a round-trip makes sure nothing else is pending
      assert.equal(await call(a, "echo", "sync"), "sync");
      assert.deepEqual(missed, [["before"], [1, { x: "one" }], [2, Buffer.from([2, 2])]]);
      assert.deepEqual(other, []);
      assert.notEqual(a._lastOffset, offsetBefore);

      // still in room r
      assert.deepEqual(await call(a, "join", "r"), [oldId, "r"]);
      const mine = await call(b, "fetch-sockets", { in: ["r"] });
      assert.deepEqual(mine, [{ id: oldId, rooms: [oldId, "r"].sort(), data: { who: "a", n: 1 } }]);
      assert.deepEqual(await call(a, "get-data"), { who: "a", n: 1 });

      // and receives new broadcasts normally, exactly once
      const next = once(a, "missed");
      await call(b, "broadcast", { event: "missed", args: ["after"], to: ["r"] });
      assert.deepEqual(stripOffset(await next), ["after"]);
      await call(a, "echo", "sync");
      assert.equal(missed.length, 4);
    });

    it("an event sent to the socket id room while away is restored too", T, async () => {
      const a = await connect(ctx.url, { transports });
      const b = await connect(ctx.url, { transports });
      const got = [];
      a.on("direct", (...args) => got.push(stripOffset(args)));
      await primeOffset(a);
      const id = await dropTransport(a, b);
      // broadcast to its socket-id room (what socket.emit does under recovery)
      await call(b, "broadcast", { event: "direct", args: ["to-id"], to: [id] });
      await reconnect(a);
      assert.equal(a.recovered, true);
      await call(a, "echo", "sync");
      assert.deepEqual(got, [["to-id"]]);
    });

    it("nothing missed → recovered with no extra events", T, async () => {
      const a = await connect(ctx.url, { transports });
      const b = await connect(ctx.url, { transports });
      await primeOffset(a);
      const seen = [];
      a.onAny((...args) => seen.push(args));
      const id = await dropTransport(a, b);
      await reconnect(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await call(a, "echo", "sync");
      assert.deepEqual(seen, []);
    });

    it("a client that never received an event has no offset to offer and is not recovered", T, async () => {
      const a = await connect(ctx.url, { transports });
      const b = await connect(ctx.url, { transports });
      await call(a, "join", "r");
      assert.equal(a._lastOffset, undefined);
      const id = await dropTransport(a, b);
      await reconnect(a);
      assert.equal(a.recovered, false);
      assert.notEqual(a.id, id);
      assert.equal(await call(a, "recovered"), false);
    });
  });
}

describe("recovery: non-recoverable cases", () => {
  it("after a server-side namespace disconnect the session is not kept", T, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    await call(a, "set-data", { keep: false });
    await call(a, "join", "r");
    await primeOffset(a);
    const id = a.id;
    const p = once(a, "disconnect");
    a.emit("server-disconnect", false);
    assert.equal((await p)[0], "io server disconnect");
    assert.equal((await waitForDisconnectRecord(b, id)).reason, "server namespace disconnect");
    assert.equal(typeof a._pid, "string"); // the client still offers its pid...
    await reconnect(a);
    assert.equal(a.recovered, false); // ...but the server has no session for it
    assert.notEqual(a.id, id);
    assert.equal(await call(a, "recovered"), false);
    assert.deepEqual(await call(a, "get-data"), {});
    assert.deepEqual(await call(a, "join", "x"), [a.id, "x"]);
  });

  it("after a client namespace disconnect the session is not kept", T, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    await primeOffset(a);
    const id = a.id;
    a.disconnect();
    assert.equal((await waitForDisconnectRecord(b, id)).reason, "client namespace disconnect");
    await reconnect(a);
    assert.equal(a.recovered, false);
    assert.notEqual(a.id, id);
  });

  it("an unknown pid/offset in the CONNECT auth gives a fresh session", T, async () => {
    const s = client(ctx.url);
    s._pid = "not-a-real-pid";
    s._lastOffset = "nope";
    s.connect();
    await once(s, "connect");
    assert.equal(s.recovered, false);
    assert.notEqual(s._pid, "not-a-real-pid");
    assert.equal(await call(s, "recovered"), false);
  });

  it("a recovered /auth socket skips the middleware (skipMiddlewares: true) and keeps its data", T, async () => {
    const auth = { token: "secret" };
    const s = client(ctx.url + "/auth", { auth });
    const welcomes = [];
    s.on("welcome", (...args) => welcomes.push(stripOffset(args)));
    s.connect();
    await once(s, "connect");
    const b = await connect(ctx.url);
    const id = s.id;
    const p = once(s, "disconnect");
    s.io.engine.close();
    await p;
    assert.equal((await waitForDisconnectRecord(b, id)).reason, "transport close");
    auth.token = "now-wrong"; // the middleware would refuse this
    await reconnect(s);
    assert.equal(s.recovered, true);
    assert.equal(s.id, id);
    // the connection handler runs again (it emits welcome with the restored data)
    await sleep(100);
    assert.deepEqual(welcomes, [[{ user: "alice" }], [{ user: "alice" }]]);
    // control: a fresh connection with that token is refused
    const fresh = client(ctx.url + "/auth", { auth: { token: "now-wrong" } });
    fresh.connect();
    const [err] = await once(fresh, "connect_error");
    assert.equal(err.message, "unauthorized");
  });
});

describe("recovery: expiry", () => {
  it("a client away longer than maxDisconnectionDuration (5 s) is not recovered", { timeout: 12000 }, async () => {
    const a = await connect(ctx.url);
    const b = await connect(ctx.url);
    await call(a, "join", "r");
    await call(a, "set-data", { old: true });
    await primeOffset(a);
    const id = await dropTransport(a, b);
    await sleep(5600);
    await reconnect(a);
    assert.equal(a.recovered, false);
    assert.notEqual(a.id, id);
    assert.deepEqual(await call(a, "get-data"), {});
    assert.deepEqual(await call(b, "fetch-sockets", { in: ["r"] }), []);
  });
});

describe("recovery with automatic reconnection", () => {
  it("the manager reconnects by itself and the socket is recovered", T, async () => {
    const a = await connect(ctx.url, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    const b = await connect(ctx.url);
    await call(a, "join", "auto");
    await primeOffset(a);
    const id = a.id;
    const reconnected = once(a, "connect", 4000);
    a.io.engine.close();
    await reconnected;
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    const ids = (await call(b, "fetch-sockets", { in: ["auto"] })).map((s) => s.id);
    assert.deepEqual(ids, [id]);
  });
});
