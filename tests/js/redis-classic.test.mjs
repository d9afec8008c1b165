// One rsio server (examples/interop --redis-classic) and one Node server
// (@socket.io/redis-adapter 8.3 on ioredis) on one throwaway Redis, and on a
// three-node Redis Cluster: rooms, broadcasts and requests work across both, a
// message from the Redis emitter (uid "emitter") is delivered, and a garbage
// message is logged and skipped.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { Redis } from "ioredis";
import { client, connect, closeAll, once, fires, call, waitFor, sleep, TEST_TIMEOUT } from "./harness.mjs";
import {
  redisSkipReason, redisClusterSkipReason, startRedis, startRedisCluster, startRsio, startNode, serverOpsAcross, broadcastsAcross,
} from "./redis-harness.mjs";

// The msgpack encoder the adapter itself uses (notepack.io 3.0.x).
const require = createRequire(import.meta.url);
const msgpack = createRequire(require.resolve("@socket.io/redis-adapter"))("notepack.io");

/** A connected client on each side of `servers` ([rsio, node]). */
function pairOf(servers) {
  return Promise.all(servers.map((s) => connect(s.url)));
}

describe("redis classic: rsio and Node on one Redis", { skip: redisSkipReason(), timeout: 90000 }, () => {
  let redis, rsio, node, cmd;
  before(async () => {
    redis = await startRedis();
    [rsio, node] = await Promise.all([startRsio(redis.url, "classic"), startNode(redis.url, "classic")]);
    cmd = new Redis(redis.url);
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    cmd?.disconnect();
    await Promise.all([rsio?.stop(), node?.stop()]);
    await redis?.stop();
  });

  const pair = () => pairOf([rsio, node]);

  it("both count two servers (PUBSUB NUMSUB of the request channel)", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    await waitFor(async () => (await call(a, "server-count")) === 2, 4000);
    assert.equal(await call(b, "server-count"), 2);
    const [, n] = await cmd.call("PUBSUB", "NUMSUB", "socket.io-request#/#");
    assert.equal(n, 2);
  });

  for (const [from, label] of [[0, "rsio → Node"], [1, "Node → rsio"]]) {
    it(`broadcast to all, ${label}, without an offset (no recovery with this adapter)`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      const got = clients.map((c) => once(c, "hello"));
      assert.equal(await call(clients[from], "broadcast", { event: "hello", args: [1, "two", { three: [3] }, 4.5, -7] }), "ok");
      for (const args of await Promise.all(got)) assert.deepEqual(args, [1, "two", { three: [3] }, 4.5, -7]);
    });
  }
  broadcastsAcross(pair, (args) => args);

  it("rsio publishes the same broadcast bytes as Node (but for the uid)", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    const sub = new Redis(redis.url);
    try {
      const seen = [];
      sub.on("pmessageBuffer", (_pattern, channel, msg) => {
        if (msg.includes(Buffer.from("same-bytes"))) seen.push({ channel: channel.toString(), msg });
      });
      await sub.psubscribe("socket.io#/#*");
      const opts = { event: "same-bytes", to: ["r"], except: ["x"], args: [1, "a", { b: null }, Buffer.from([9])] };
      await call(a, "broadcast", opts);
      await call(b, "broadcast", opts);
      await waitFor(() => seen.length >= 2);
      // [uid, packet, opts]: past the array header and the uid, the bytes are the same.
      const rest = ({ msg }) => msg.subarray(2 + (msg[1] & 0x1f));
      assert.deepEqual(seen.map((s) => s.channel), ["socket.io#/#r#", "socket.io#/#r#"]);
      assert.equal(rest(seen[0]).toString("hex"), rest(seen[1]).toString("hex"));
      const [uid, packet, o] = msgpack.decode(seen[0].msg);
      assert.match(uid, /^[0-9a-f]{16}$/);
      assert.deepEqual(packet, { type: 2, data: ["same-bytes", 1, "a", { b: null }, Buffer.from([9])], nsp: "/" });
      assert.deepEqual(o, { rooms: ["r"], except: ["x"], flags: {} });
    } finally {
      sub.disconnect();
    }
  });

  serverOpsAcross(pair);

  it("a message published by the Redis emitter (uid \"emitter\") is delivered on both sides", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    const [a2, b2] = await pair();
    await Promise.all([call(a, "join", "em"), call(b, "join", "em")]);
    const all = [a, b, a2, b2].map((c) => once(c, "from-emitter"));
    await cmd.publish("socket.io#/#", msgpack.encode(["emitter", { type: 2, data: ["from-emitter", 1, { x: "y" }], nsp: "/" }, { rooms: [], except: [], flags: {} }]));
    for (const args of await Promise.all(all)) assert.deepEqual(args, [1, { x: "y" }]);
    // To one room, on the room's channel; the others do not get it.
    const inRoom = [once(a, "em-room"), once(b, "em-room")];
    const outside = [fires(a2, "em-room", 400), fires(b2, "em-room", 400)];
    await cmd.publish("socket.io#/#em#", msgpack.encode(["emitter", { type: 2, data: ["em-room", "r"], nsp: "/" }, { rooms: ["em"], except: [], flags: {} }]));
    for (const args of await Promise.all(inRoom)) assert.deepEqual(args, ["r"]);
    assert.deepEqual(await Promise.all(outside), [false, false]);
    // The emitter's requests are JSON: socketsJoin.
    await cmd.publish("socket.io-request#/#", JSON.stringify({ uid: "emitter", type: 2, opts: { rooms: [a2.id, b2.id], except: [] }, rooms: ["by-emitter"] }));
    const joined = async (asker) => (await call(asker, "fetch-sockets", { in: ["by-emitter"] })).map((s) => s.id).sort();
    await waitFor(async () => (await joined(a)).length === 2);
    assert.deepEqual(await joined(b), [a2.id, b2.id].sort());
  });

  it("a garbage message is logged and skipped, and later ones still arrive", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    // Shapes Node's adapter also survives: a one-element array on the broadcast
    // channel, text that is neither JSON nor msgpack on the request channel.
    await cmd.publish("socket.io#/#", Buffer.from([0x91, 0x01]));
    await cmd.publish("socket.io-request#/#", "{not json");
    await cmd.publish("socket.io-request#/#", Buffer.from([0xc1, 0xc1]));
    await cmd.publish("socket.io-response#/#", "{\"requestId\":");
    const got = [once(a, "after-garbage"), once(b, "after-garbage")];
    await call(b, "broadcast", { event: "after-garbage", args: ["fine"] });
    for (const args of await Promise.all(got)) assert.deepEqual(args, ["fine"]);
    assert.equal(rsio.proc.exitCode, null, "rsio is still running");
    await waitFor(() => (rsio.output().match(/invalid message skipped/g) ?? []).length >= 4);
  });

  for (const [side, index] of [["rsio", 0], ["Node", 1]]) {
    it(`with recovery configured, a dropped client is not recovered on ${side} (as Node's adapter)`, { timeout: TEST_TIMEOUT }, async () => {
      const url = [rsio.url, node.url][index];
      const c1 = await connect(url);
      await call(c1, "set-data", { who: "c1" });
      const { _pid: pid, id } = c1;
      c1.io.engine.close();
      await sleep(200);
      const c2 = client(url, { auth: { pid, offset: "0-0" } });
      c2.connect();
      await once(c2, "connect");
      assert.equal(await call(c2, "recovered"), false);
      assert.notEqual(c2.id, id);
    });
  }
});

describe("redis classic: Redis restarted", { skip: redisSkipReason(), timeout: 60000 }, () => {
  afterEach(() => closeAll());

  it("after a Redis restart both sides subscribe again (patterns too) and broadcast across", { timeout: 30000 }, async () => {
    let redis = await startRedis();
    const port = redis.port;
    const [rsio, node] = await Promise.all([startRsio(redis.url, "classic"), startNode(redis.url, "classic")]);
    try {
      const [a, b] = await pairOf([rsio, node]);
      await waitFor(async () => (await call(a, "server-count")) === 2, 4000);
      await redis.stop();
      redis = await startRedis({ port });
      // Both reconnect with backoff; then each direction works again.
      for (const [from, to] of [[a, b], [b, a]]) {
        await waitFor(async () => {
          const got = fires(to, "again", 300);
          await call(from, "broadcast", { event: "again", args: [] });
          return got;
        }, 15000, 100);
      }
      assert.equal(rsio.proc.exitCode, null, "rsio is still running");
    } finally {
      await Promise.all([rsio.stop(), node.stop()]);
      await redis.stop();
    }
  });
});

describe("redis classic on a three-node Redis Cluster: rsio and Node", { skip: redisClusterSkipReason(), timeout: 90000 }, () => {
  let cluster, rsio, node;
  before(async () => {
    cluster = await startRedisCluster();
    const urls = cluster.urls.join(",");
    [rsio, node] = await Promise.all([startRsio(urls, "classic"), startNode(urls, "classic")]);
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await Promise.all([rsio?.stop(), node?.stop()]);
    await cluster?.stop();
  });

  const pair = () => pairOf([rsio, node]);

  it("both count the servers subscribed on every node (NUMSUB summed over the nodes)", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = await pair();
    await waitFor(async () => (await call(a, "server-count")) === 2, 4000);
    await waitFor(async () => (await call(b, "server-count")) === 2, 4000);
    // Two more "servers", subscribed on two different nodes: only a sum over
    // all the nodes counts 4, wherever rsio's and Node's subscribers are.
    const extra = [new Redis(cluster.urls[0]), new Redis(cluster.urls[2])];
    try {
      await Promise.all(extra.map((r) => r.subscribe("socket.io-request#/#")));
      await waitFor(async () => (await call(a, "server-count")) === 4, 4000);
      await waitFor(async () => (await call(b, "server-count")) === 4, 4000);
    } finally {
      for (const r of extra) r.disconnect();
    }
    await waitFor(async () => (await call(a, "server-count")) === 2, 4000);
  });

  for (const [from, label] of [[0, "rsio → Node"], [1, "Node → rsio"]]) {
    it(`broadcasts to all, to a room and except a room, with binary, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const [a1, b1] = await pair();
      const [a2, b2] = await pair();
      const sender = [a1, b1][from];
      const all = [a1, b1, a2, b2].map((c) => once(c, "hello"));
      await call(sender, "broadcast", { event: "hello", args: [1, "two", Buffer.from([3])] });
      for (const args of await Promise.all(all)) {
        assert.deepEqual(args.slice(0, 2), [1, "two"]);
        assert.deepEqual([...args[2]], [3]);
      }
      await Promise.all([call(a2, "join", "r1"), call(b2, "join", "r1"), call(b1, "join", "muted")]);
      const inRoom = [once(a2, "to-room"), once(b2, "to-room")];
      const outside = [fires(a1, "to-room", 400), fires(b1, "to-room", 400)];
      await call(sender, "broadcast", { event: "to-room", to: ["r1"], args: ["x"] });
      for (const args of await Promise.all(inRoom)) assert.deepEqual(args, ["x"]);
      assert.deepEqual(await Promise.all(outside), [false, false]);
      const except = [a1, a2, b2].map((c) => once(c, "not-muted"));
      const muted = fires(b1, "not-muted", 400);
      await call(sender, "broadcast", { event: "not-muted", except: ["muted"], args: [] });
      await Promise.all(except);
      assert.equal(await muted, false);
    });

    it(`fetchSockets and serverSideEmit with acks across the cluster, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const clients = await pair();
      await waitFor(async () => (await call(clients[from], "server-count")) === 2, 4000);
      const list = await call(clients[from], "fetch-sockets", {});
      const ids = list.map((s) => s.id);
      for (const c of clients) assert.ok(ids.includes(c.id), `${c.id} in ${ids}`);
      const res = await call(clients[from], "server-side-emit", { event: "which-worker", args: [], timeout: 2000 });
      assert.equal(res.err, null, JSON.stringify(res));
      assert.deepEqual(res.responses, [from === 0 ? "node" : 0]);
    });
  }
});
