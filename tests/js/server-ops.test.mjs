// Server-side operations: fetchSockets, socketsJoin, socketsLeave, disconnectSockets, socket.data.
import { describe, it, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import {
  useServer, connect, once, onceEvent, fires, call, waitFor, waitForDisconnectRecord, TEST_TIMEOUT,
} from "./harness.mjs";

const T = { timeout: TEST_TIMEOUT };
const ctx = useServer();

let A, B, C;
const byId = (a, b) => (a.id < b.id ? -1 : 1);

/** fetch-sockets over everything, waiting until stale sockets of earlier tests are gone. */
async function fetchAll(via, expectedCount) {
  let last;
  await waitFor(async () => {
    last = await call(via, "fetch-sockets", {});
    return last.length === expectedCount;
  }, 3000).catch(() => {
    throw new Error(`expected ${expectedCount} sockets, server has ${JSON.stringify(last)}`);
  });
  return last.sort(byId);
}

describe("server-side operations", () => {
  beforeEach(async () => {
    A = await connect(ctx.url);
    B = await connect(ctx.url);
    C = await connect(ctx.url);
    await call(A, "join", ["g1"]);
    await call(B, "join", ["g1", "g2"]);
    await call(C, "join", ["g2"]);
    // sockets of the previous test must be gone before the assertions below
    await fetchAll(A, 3);
  });

  it("set-data / get-data round-trip; default data is {}", T, async () => {
    assert.deepEqual(await call(A, "get-data"), {});
    const value = { name: "A", n: 1.5, list: [1, "2", null], nested: { ok: true } };
    assert.equal(await call(A, "set-data", value), "ok");
    assert.deepEqual(await call(A, "get-data"), value);
    assert.deepEqual(await call(B, "get-data"), {});
  });

  it("fetch-sockets returns all three with sorted rooms and data", T, async () => {
    await call(A, "set-data", { name: "A" });
    await call(B, "set-data", { name: "B", roles: ["x"] });
    const all = await fetchAll(A, 3);
    const expected = [
      { id: A.id, rooms: [A.id, "g1"].sort(), data: { name: "A" } },
      { id: B.id, rooms: [B.id, "g1", "g2"].sort(), data: { name: "B", roles: ["x"] } },
      { id: C.id, rooms: [C.id, "g2"].sort(), data: {} },
    ].sort(byId);
    assert.deepEqual(all, expected);
  });

  it("fetch-sockets with an `in` filter (one room, two rooms, socket id, empty room)", T, async () => {
    await fetchAll(A, 3);
    const ids = async (rooms) => (await call(C, "fetch-sockets", { in: rooms })).map((s) => s.id).sort();
    assert.deepEqual(await ids(["g1"]), [A.id, B.id].sort());
    assert.deepEqual(await ids(["g2"]), [B.id, C.id].sort());
    assert.deepEqual(await ids(["g1", "g2"]), [A.id, B.id, C.id].sort());
    assert.deepEqual(await ids([C.id]), [C.id]);
    assert.deepEqual(await ids(["nobody"]), []);
  });

  it("fetch-sockets does not list sockets of other namespaces", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const custom = m.socket("/custom");
    custom.connect();
    await once(custom, "connect");
    try {
      const all = await fetchAll(A, 3);
      assert.ok(!all.some((s) => s.id === custom.id));
    } finally {
      custom.disconnect();
    }
  });

  it("sockets-join then broadcast to the new room", T, async () => {
    assert.equal(await call(C, "sockets-join", { in: ["g1"], rooms: ["new"] }), "ok");
    const got = { A: 0, B: 0, C: 0 };
    A.on("hey", () => got.A++);
    B.on("hey", () => got.B++);
    C.on("hey", () => got.C++);
    const pa = onceEvent(A, "hey");
    const pb = onceEvent(B, "hey");
    await call(C, "broadcast", { event: "hey", args: ["new room"], to: ["new"] });
    assert.deepEqual(await pa, ["new room"]);
    assert.deepEqual(await pb, ["new room"]);
    await call(C, "echo", "sync");
    assert.deepEqual(got, { A: 1, B: 1, C: 0 });
    // the joined room is visible in the socket's rooms
    assert.deepEqual((await call(A, "fetch-sockets", { in: [A.id] }))[0].rooms, [A.id, "g1", "new"].sort());
  });

  it("sockets-join several rooms without filter (everyone)", T, async () => {
    await fetchAll(A, 3);
    assert.equal(await call(A, "sockets-join", { rooms: ["all1", "all2"] }), "ok");
    const all = await call(A, "fetch-sockets", { in: ["all2"] });
    assert.deepEqual(all.map((s) => s.id).sort(), [A.id, B.id, C.id].sort());
    for (const s of all) assert.ok(s.rooms.includes("all1") && s.rooms.includes("all2"));
  });

  it("sockets-leave removes the room from the matching sockets only", T, async () => {
    assert.equal(await call(A, "sockets-leave", { in: ["g2"], rooms: ["g1"] }), "ok");
    // B (in g2) left g1; A (not in g2) keeps g1
    assert.deepEqual((await call(A, "fetch-sockets", { in: ["g1"] })).map((s) => s.id), [A.id]);
    const b = (await call(A, "fetch-sockets", { in: [B.id] }))[0];
    assert.deepEqual(b.rooms, [B.id, "g2"].sort());
  });

  it("sockets-leave of a socket's own id room", T, async () => {
    assert.equal(await call(A, "sockets-leave", { in: [C.id], rooms: [C.id] }), "ok");
    assert.deepEqual(await call(A, "fetch-sockets", { in: [C.id] }), []);
  });

  it("disconnect-sockets close=false: targets see 'io server disconnect', others stay", T, async () => {
    const bId = B.id;
    const cId = C.id;
    const pb = once(B, "disconnect");
    const pc = once(C, "disconnect");
    const aGone = fires(A, "disconnect", 300);
    assert.equal(await call(A, "disconnect-sockets", { in: ["g2"], close: false }), "ok");
    assert.equal((await pb)[0], "io server disconnect");
    assert.equal((await pc)[0], "io server disconnect");
    assert.equal(await aGone, false);
    assert.equal(A.connected, true);
    assert.deepEqual(await waitForDisconnectRecord(A, bId), {
      reason: "server namespace disconnect",
      roomsAtDisconnecting: [bId, "g1", "g2"].sort(),
    });
    assert.deepEqual((await waitForDisconnectRecord(A, cId)).reason, "server namespace disconnect");
    const all = await fetchAll(A, 1);
    assert.deepEqual(all.map((s) => s.id), [A.id]);
  });

  it("disconnect-sockets close=true: clients see 'io server disconnect', server 'server namespace disconnect'", T, async () => {
    const cId = C.id;
    const pc = once(C, "disconnect");
    assert.equal(await call(A, "disconnect-sockets", { in: [cId], close: true }), "ok");
    assert.equal((await pc)[0], "io server disconnect");
    assert.deepEqual(await waitForDisconnectRecord(A, cId), {
      reason: "server namespace disconnect",
      roomsAtDisconnecting: [cId, "g2"].sort(),
    });
    assert.equal(A.connected, true);
    assert.equal(B.connected, true);
  });

  it("disconnect-sockets close=true closes the whole connection (other namespaces too)", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const root = m.socket("/");
    const custom = m.socket("/custom");
    root.connect();
    custom.connect();
    await Promise.all([once(root, "connect"), once(custom, "connect")]);
    const rootId = root.id;
    const customId = custom.id;
    await call(root, "join", "victim");
    const pr = once(root, "disconnect");
    const pc = once(custom, "disconnect");
    assert.equal(await call(A, "disconnect-sockets", { in: ["victim"], close: true }), "ok");
    assert.equal((await pr)[0], "io server disconnect");
    assert.equal((await pc)[0], "io server disconnect");
    assert.equal((await waitForDisconnectRecord(A, rootId)).reason, "server namespace disconnect");
    assert.equal((await waitForDisconnectRecord(A, customId)).reason, "server namespace disconnect");
  });

  it("disconnect-sockets close=false on / leaves the /custom socket of the same connection connected", T, async () => {
    const m = new Manager(ctx.url, { reconnection: false, autoConnect: false });
    const root = m.socket("/");
    const custom = m.socket("/custom");
    root.connect();
    custom.connect();
    await Promise.all([once(root, "connect"), once(custom, "connect")]);
    try {
      await call(root, "join", "victim2");
      const pr = once(root, "disconnect");
      const customGone = fires(custom, "disconnect", 300);
      await call(A, "disconnect-sockets", { in: ["victim2"], close: false });
      assert.equal((await pr)[0], "io server disconnect");
      assert.equal(await customGone, false);
      assert.equal(await call(custom, "echo", "alive"), "alive");
    } finally {
      custom.disconnect();
    }
  });
});
