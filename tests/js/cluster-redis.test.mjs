// Two rsio clusters ("two hosts", 2 workers each, examples/interop --cluster
// --redis) and one Node server (@socket.io/redis-streams-adapter 0.3.1) on one
// throwaway redis-server: every worker is a member of the Redis cluster, so
// broadcasts, requests, server counts and recovery span hosts and Node.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  client,
  connect,
  connectWorker,
  closeAll,
  once,
  fires,
  call,
  waitFor,
  sleep,
  startCluster,
  clusterSkipReason,
  TEST_TIMEOUT,
} from "./harness.mjs";
import { rawWebSocket } from "./raw-ws.mjs";
import { redisSkipReason, redisClusterSkipReason, randomPort, startRedis, startRedisCluster, startNode } from "./redis-harness.mjs";

const skip = redisSkipReason() || clusterSkipReason();
const OFFSET = /^\d+-\d+$/;
const T = { timeout: TEST_TIMEOUT * 2 };

/** Asserts the last arg is a stream id offset and returns [args, offset]. */
function split(args) {
  const offset = args[args.length - 1];
  assert.match(offset, OFFSET, `expected a stream id offset last in ${JSON.stringify(args)}`);
  return [args.slice(0, -1), offset];
}

/** An rsio host: a cluster of 2 workers, each a member of the Redis at `url`. */
function startHost(url, extra = []) {
  return startCluster({ workers: 2, args: ["--recovery", "--per-message-deflate", "--redis", url, ...extra] });
}

describe("cluster on Redis: two rsio hosts and a Node server", { skip, timeout: 120000 }, () => {
  let redis, hostA, hostB, node;
  before(async () => {
    redis = await startRedis();
    [hostA, hostB, node] = await Promise.all([startHost(redis.url), startHost(redis.url), startNode(redis.url)]);
    // Workers are ready before Redis is: wait until each counts all 5 servers.
    const probes = await everywhere();
    await waitFor(async () => {
      const counts = await Promise.all(probes.map((c) => call(c, "server-count")));
      return counts.every((n) => n === 5);
    }, 15000, 100);
    closeAll();
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await Promise.all([hostA?.stop(), hostB?.stop(), node?.stop()]);
    await redis?.stop();
  });

  /** One client on each of A0, A1, B0, B1 and Node, in that order. */
  async function everywhere() {
    return Promise.all([
      connectWorker(hostA, 0),
      connectWorker(hostA, 1),
      connectWorker(hostB, 0),
      connectWorker(hostB, 1),
      connect(node.url),
    ]);
  }

  it("every server counts 5: each worker is one server, as Node sees it", T, async () => {
    const clients = await everywhere();
    const counts = await Promise.all(clients.map((c) => call(c, "server-count")));
    assert.deepEqual(counts, [5, 5, 5, 5, 5]);
  });

  for (const [from, label] of [[0, "host A"], [3, "host B worker 1"], [4, "Node"]]) {
    it(`a broadcast from ${label} reaches every worker of both hosts and Node, one offset`, T, async () => {
      const clients = await everywhere();
      const got = clients.map((c) => once(c, "hello", 5000));
      assert.equal(await call(clients[from], "broadcast", { event: "hello", args: [1, { two: 2 }] }), "ok");
      const results = (await Promise.all(got)).map(split);
      for (const [args] of results) assert.deepEqual(args, [1, { two: 2 }]);
      const offsets = new Set(results.map(([, o]) => o));
      assert.equal(offsets.size, 1, `one stream id for every client: ${[...offsets]}`);
    });
  }

  it("a room broadcast and an except broadcast cross hosts, both directions", T, async () => {
    const inA = await connectWorker(hostA, 1);
    const inB = await connectWorker(hostB, 0);
    const inNode = await connect(node.url);
    const outA = await connectWorker(hostA, 0);
    const mutedB = await connectWorker(hostB, 1);
    await Promise.all([call(inA, "join", "r1"), call(inB, "join", "r1"), call(inNode, "join", "r1"), call(mutedB, "join", "muted")]);
    for (const sender of [outA, mutedB, inNode]) {
      const members = [inA, inB, inNode].map((c) => once(c, "to-room", 5000));
      const outside = [fires(outA, "to-room", 500), fires(mutedB, "to-room", 500)];
      await call(sender, "broadcast", { event: "to-room", to: ["r1"], args: ["x"] });
      for (const args of await Promise.all(members)) assert.deepEqual(split(args)[0], ["x"]);
      assert.deepEqual(await Promise.all(outside), [false, false]);
    }
    const except = [inA, inB, inNode, outA].map((c) => once(c, "not-muted", 5000));
    const muted = fires(mutedB, "not-muted", 500);
    await call(outA, "broadcast", { event: "not-muted", except: ["muted"], args: [] });
    await Promise.all(except);
    assert.equal(await muted, false);
  });

  it("compress(false) crosses hosts both ways: rsio to rsio and Node to rsio", T, async () => {
    const [a0, , , , n] = await everywhere();
    const raw = await rawWebSocket(hostB.urls[1]);
    const big = "not compressed ".repeat(500); // over the 1024-byte threshold
    try {
      for (const [from, label] of [[a0, "A0"], [n, "Node"]]) {
        for (const compress of [false, true, false]) {
          const event = `big-${label}-${compress}`;
          assert.equal(await call(from, "broadcast", { event, to: [raw.sid], args: [big], compress }), "ok");
          const f = await raw.next();
          assert.ok(f.text.startsWith(`42${JSON.stringify([event, big]).slice(0, -1)}`), `${event}: ${f.text.slice(0, 40)}`);
          assert.equal(f.rsv1, compress, `${event}: RSV1 on host B`);
        }
      }
    } finally {
      raw.close();
    }
  });

  it("fetchSockets from any worker or from Node sees every socket of both hosts", T, async () => {
    const clients = await everywhere();
    await Promise.all(clients.map((c, i) => call(c, "join", "fs").then(() => call(c, "set-data", { i }))));
    for (const asker of [clients[0], clients[3], clients[4]]) {
      const list = await call(asker, "fetch-sockets", { in: ["fs"] });
      const byId = Object.fromEntries(list.map((s) => [s.id, s]));
      assert.deepEqual(Object.keys(byId).sort(), clients.map((c) => c.id).sort());
      clients.forEach((c, i) => assert.deepEqual(byId[c.id].data, { i }));
    }
  });

  it("serverSideEmit with acks gets one answer per worker and per Node server", T, async () => {
    const clients = await everywhere();
    // From A0: A1, B0, B1 answer with their index, Node with "node".
    const fromA = await call(clients[0], "server-side-emit", { event: "which-worker", args: [], timeout: 3000 });
    assert.equal(fromA.err, null, JSON.stringify(fromA));
    assert.deepEqual(fromA.responses.map(String).sort(), ["0", "1", "1", "node"]);
    // From Node: the four rsio workers.
    const fromNode = await call(clients[4], "server-side-emit", { event: "which-worker", args: [], timeout: 3000 });
    assert.equal(fromNode.err, null, JSON.stringify(fromNode));
    assert.deepEqual(fromNode.responses.sort(), [0, 0, 1, 1]);
  });

  it("broadcast with acks collects the clients of both hosts and Node", T, async () => {
    const clients = await everywhere();
    clients.forEach((c, i) => c.on("ask", (cb) => cb(`answer-${i}`)));
    const res = await call(clients[1], "broadcast-with-ack", { event: "ask", args: [], timeout: 3000 });
    assert.equal(res.err, null, JSON.stringify(res));
    assert.deepEqual(res.responses.sort(), ["answer-0", "answer-1", "answer-2", "answer-3", "answer-4"]);
  });

  it("a client that moves from host A to host B recovers its rooms, data and missed packets", T, async () => {
    const helper = await connectWorker(hostB, 1);
    const c1 = await connectWorker(hostA, 0);
    await call(c1, "join", "csr");
    await call(c1, "set-data", { who: "c1" });
    const first = once(c1, "tick", 5000);
    await call(helper, "broadcast", { event: "tick", args: [0] });
    await first; // c1 now holds an offset
    const { _pid: pid, _lastOffset: offset, id } = c1;
    assert.ok(pid && OFFSET.test(offset), `pid ${pid} offset ${offset}`);
    c1.io.engine.close(); // transport close: a recoverable disconnect
    await sleep(300); // the session is SET fire-and-forget
    await call(helper, "broadcast", { event: "missed", to: ["csr"], args: ["m1"] });
    await call(helper, "broadcast", { event: "missed", to: ["elsewhere"], args: ["not for c1"] });
    await call(helper, "broadcast", { event: "missed", args: ["m2"] });

    const c2 = client(hostB.urls[0], { auth: { pid, offset } });
    const missed = [];
    c2.on("missed", (...args) => missed.push(split(args)[0][0]));
    c2.connect();
    await once(c2, "connect");
    assert.equal(await call(c2, "worker"), 0, "served by host B's worker 0");
    assert.equal(c2.id, id, "the socket keeps its id");
    assert.equal(await call(c2, "recovered"), true);
    assert.deepEqual(await call(c2, "get-data"), { who: "c1" });
    await waitFor(() => missed.length >= 2);
    assert.deepEqual(missed, ["m1", "m2"]);
    const inRoom = (await call(helper, "fetch-sockets", { in: ["csr"] })).map((s) => s.id);
    assert.deepEqual(inRoom, [id], "the room membership came back");
  });
});

describe("cluster on Redis: Redis down at start", { skip, timeout: 90000 }, () => {
  const stops = [];
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    for (const stop of stops.reverse()) await stop();
  });

  it("the cluster serves its clients meanwhile, says so, and joins once Redis is up", { timeout: 60000 }, async () => {
    const port = randomPort();
    const url = `redis://127.0.0.1:${port}`;
    const host = await startHost(url);
    stops.push(() => host.stop());
    const a = await connectWorker(host, 0);
    const b = await connectWorker(host, 1);
    // Same-worker delivery works without Redis (recoverable packets that Redis
    // cannot take are delivered locally, without an offset).
    const echo = once(a, "local", 5000);
    await call(a, "broadcast", { event: "local", args: [1] });
    assert.deepEqual(await echo, [1]);
    await host.waitForLog(/redis at redis:\/\/127\.0\.0\.1:\d+ is unreachable: this worker serves its own clients, its broadcasts reach the other workers of this host/, 10000);
    assert.match(host.log(), /redis[^\n]*(refused|unreachable|error)[^\n]*retrying/i);

    const redis = await startRedis({ port });
    stops.push(redis.stop);
    // Backoff is at most 5 s: both workers subscribe, then count 2 servers.
    await waitFor(async () => (await call(a, "server-count")) === 2 && (await call(b, "server-count")) === 2, 20000, 200);
    await host.waitForLog(/member of the Redis cluster at [^\n]*after a wait/, 20000);
    // The stream readers may still be in their backoff: retry until one crosses.
    const got = once(b, "across", 15000);
    let stop = false;
    got.finally(() => (stop = true)).catch(() => {});
    while (!stop) {
      await call(a, "broadcast", { event: "across", args: ["hi"] });
      await sleep(300);
    }
    const args = await got;
    assert.equal(args[0], "hi");
    assert.equal(host.proc.exitCode, null, "the cluster is still running");
  });
});

describe("cluster on Redis with the classic adapter, on a three-node Redis Cluster", { skip: redisClusterSkipReason() || clusterSkipReason(), timeout: 120000 }, () => {
  let redis, hostA, hostB, node;
  before(async () => {
    redis = await startRedisCluster();
    const urls = redis.urls.join(",");
    const classic = (u) => startCluster({ workers: 2, args: ["--redis", u, "--redis-adapter", "classic"] });
    [hostA, hostB, node] = await Promise.all([classic(urls), classic(urls), startNode(urls, "classic")]);
    const probes = await everywhere();
    await waitFor(async () => {
      const counts = await Promise.all(probes.map((c) => call(c, "server-count")));
      return counts.every((n) => n === 5);
    }, 15000, 100);
    closeAll();
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await Promise.all([hostA?.stop(), hostB?.stop(), node?.stop()]);
    await redis?.stop();
  });

  async function everywhere() {
    return Promise.all([
      connectWorker(hostA, 0),
      connectWorker(hostA, 1),
      connectWorker(hostB, 0),
      connectWorker(hostB, 1),
      connect(node.url),
    ]);
  }

  for (const [from, label] of [[1, "host A worker 1"], [4, "Node"]]) {
    it(`a broadcast from ${label} reaches every worker of both hosts and Node, without an offset`, T, async () => {
      const clients = await everywhere();
      const got = clients.map((c) => once(c, "hello", 5000));
      assert.equal(await call(clients[from], "broadcast", { event: "hello", args: [1, { two: 2 }] }), "ok");
      for (const args of await Promise.all(got)) assert.deepEqual(args, [1, { two: 2 }]);
    });
  }

  it("a room broadcast from host B reaches the members on host A and Node only", T, async () => {
    const [a0, a1, b0, , n] = await everywhere();
    await Promise.all([call(a1, "join", "c1"), call(n, "join", "c1")]);
    const members = [a1, n].map((c) => once(c, "to-room", 5000));
    const outside = [fires(a0, "to-room", 500), fires(b0, "to-room", 500)];
    await call(b0, "broadcast", { event: "to-room", to: ["c1"], args: ["x"] });
    for (const args of await Promise.all(members)) assert.deepEqual(args, ["x"]);
    assert.deepEqual(await Promise.all(outside), [false, false]);
  });
});
