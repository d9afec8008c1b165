// One rsio server (examples/interop --redis-streams) and one Node server
// (@socket.io/redis-streams-adapter 0.3.1) on one throwaway Redis: rooms,
// broadcasts, requests and connection state recovery work across both.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "redis";
import { client, connect, closeAll, once, fires, call, waitFor, sleep, TEST_TIMEOUT } from "./harness.mjs";
import { redisSkipReason, startRedis, startRsio, startNode, serverOpsAcross, broadcastsAcross } from "./redis-harness.mjs";

const skip = redisSkipReason();
const OFFSET = /^\d+-\d+$/;

/** Asserts the last arg is a stream id offset and returns [args, offset]. */
function split(args) {
  const offset = args[args.length - 1];
  assert.match(offset, OFFSET, `expected a stream id offset last in ${JSON.stringify(args)}`);
  return [args.slice(0, -1), offset];
}

describe("redis streams: rsio and Node on one Redis", { skip, timeout: 60000 }, () => {
  let redis, rsio, node, cmd;
  before(async () => {
    redis = await startRedis();
    [rsio, node] = await Promise.all([startRsio(redis.url), startNode(redis.url)]);
    cmd = createClient({ url: redis.url });
    await cmd.connect();
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await cmd?.quit().catch(() => {});
    await Promise.all([rsio?.stop(), node?.stop()]);
    await redis?.stop();
  });

  /** A connected client on each side. */
  async function pair() {
    return Promise.all([connect(rsio.url), connect(node.url)]);
  }

  it("both count two servers", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    await waitFor(async () => (await call(a, "server-count")) === 2, 4000);
    assert.equal(await call(b, "server-count"), 2);
  });

  for (const [from, label] of [[0, "rsio → Node"], [1, "Node → rsio"]]) {
    it(`broadcast to all, ${label}, with the same offset everywhere`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      const got = clients.map((c) => once(c, "hello"));
      assert.equal(await call(clients[from], "broadcast", { event: "hello", args: [1, "two", { three: [3] }] }), "ok");
      const [[argsA, offA], [argsB, offB]] = (await Promise.all(got)).map(split);
      assert.deepEqual(argsA, [1, "two", { three: [3] }]);
      assert.deepEqual(argsB, argsA);
      assert.equal(offA, offB, "the stream entry id is the offset on both servers");
    });
  }
  broadcastsAcross(pair, (args) => split(args)[0]);

  it("rsio writes the same stream entry as Node for the same broadcast", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    await call(a, "broadcast", { event: "same-entry", to: ["r"], except: ["x"], args: [1, "a", { b: null }] });
    await call(b, "broadcast", { event: "same-entry", to: ["r"], except: ["x"], args: [1, "a", { b: null }] });
    // Both writes are asynchronous to the acks: wait for the two entries.
    const read = async () =>
      (await cmd.sendCommand(["XREVRANGE", "socket.io", "+", "-", "COUNT", "50"]))
        .map(([id, f]) => ({ id, ...Object.fromEntries(f.reduce((acc, v, i) => (i % 2 ? acc : [...acc, [v, f[i + 1]]]), [])) }))
        .filter((e) => e.data?.includes("same-entry"));
    const entries = await waitFor(async () => {
      const list = await read();
      return list.length >= 2 && list;
    });
    assert.equal(entries.length, 2, JSON.stringify(entries));
    const [fromNode, fromRsio] = entries;
    assert.equal(fromRsio.data, fromNode.data);
    assert.equal(fromRsio.data, '{"packet":{"type":2,"data":["same-entry",1,"a",{"b":null}]},"opts":{"rooms":["r"],"except":["x"],"flags":{}}}');
    assert.deepEqual([fromRsio.nsp, fromRsio.type], ["/", "3"]);
    assert.match(fromRsio.uid, /^[0-9a-f]{16}$/);
    assert.notEqual(fromRsio.uid, fromNode.uid);
  });

  for (const [from, label] of [[0, "rsio → Node"], [1, "Node → rsio"]]) {
    it(`local broadcasts stay home and volatile ones cross, neither with an offset, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      const here = once(clients[from], "home");
      const there = fires(clients[1 - from], "home", 500);
      await call(clients[from], "broadcast", { event: "home", local: true, args: ["l"] });
      assert.deepEqual(await here, ["l"]); // no offset: nothing went to the stream
      assert.equal(await there, false);
      const got = clients.map((c) => once(c, "vol"));
      await call(clients[from], "broadcast", { event: "vol", volatile: true, args: ["v"] });
      for (const args of await Promise.all(got)) assert.deepEqual(args, ["v"]);
    });
  }

  serverOpsAcross(pair);

  for (const [fromSide, toSide] of [["rsio", "node"], ["node", "rsio"]]) {
    it(`a session recovers after moving from ${fromSide} to ${toSide}`, { timeout: TEST_TIMEOUT }, async () => {
      const urls = { rsio: rsio.url, node: node.url };
      const helper = await connect(urls[toSide]);
      const c1 = await connect(urls[fromSide]);
      await call(c1, "join", "csr");
      await call(c1, "set-data", { who: "c1" });
      // A first packet, so the client holds an offset.
      const first = once(c1, "tick");
      await call(helper, "broadcast", { event: "tick", args: [0] });
      await first;
      const { _pid: pid, _lastOffset: offset, id } = c1;
      assert.ok(pid && OFFSET.test(offset), `pid ${pid} offset ${offset}`);
      c1.io.engine.close(); // transport close: a recoverable disconnect
      await sleep(300); // the session is SET fire-and-forget
      await call(helper, "broadcast", { event: "missed", to: ["csr"], args: ["m1"] });
      await call(helper, "broadcast", { event: "missed", to: ["elsewhere"], args: ["not for c1"] });
      await call(helper, "broadcast", { event: "missed", args: ["m2"] });

      const c2 = client(urls[toSide], { auth: { pid, offset } });
      const missed = [];
      c2.on("missed", (...args) => missed.push(split(args)[0][0]));
      c2.connect();
      await once(c2, "connect");
      assert.equal(c2.id, id, "the socket keeps its id");
      assert.equal(await call(c2, "recovered"), true);
      assert.deepEqual(await call(c2, "get-data"), { who: "c1" });
      await waitFor(() => missed.length >= 2);
      assert.deepEqual(missed, ["m1", "m2"]);
      const rooms = (await call(helper, "fetch-sockets", { in: ["csr"] })).map((s) => s.id);
      assert.deepEqual(rooms, [id], "the room membership came back");
    });
  }

  it("an invalid stream entry is skipped, and later ones still arrive", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    await cmd.sendCommand(["XADD", "socket.io", "*", "uid", "bad", "nsp", "/", "type", "3", "data", "%%not base64%%"]);
    await cmd.sendCommand(["XADD", "socket.io", "*", "uid", "bad", "nsp", "/", "type", "three"]);
    await cmd.sendCommand(["XADD", "socket.io", "*", "uid", "bad", "nsp", "/", "type", "3", "data", '{"packet":{"type":2,"data":[]}}']);
    await cmd.sendCommand(["XADD", "socket.io", "*", "uid", "bad", "type", "3"]);
    const got = [once(a, "after-bad"), once(b, "after-bad")];
    await call(b, "broadcast", { event: "after-bad", args: ["fine"] });
    for (const args of await Promise.all(got)) assert.deepEqual(split(args)[0], ["fine"]);
    assert.equal(rsio.proc.exitCode, null, "rsio is still running");
    assert.match(rsio.output(), /invalid stream entry skipped/);
  });
});
