// fetchSockets reports the handshake of a socket on another server (Node's
// `RemoteSocket.handshake`): on another worker of a cluster (the cluster
// adapter's answers carry it as JSON), and on another server on Redis, rsio's or
// Node's (the streams and classic adapters' answers carry Node's object).
// The interop server's fetch-sockets answers each socket's handshake auth,
// query and address when asked with `{ handshake: true }`.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startCluster, connectWorker, connect, clusterSkipReason, closeAll, call, waitFor, TEST_TIMEOUT,
} from "./harness.mjs";
import { redisSkipReason, startRedis, startRsio, startNode } from "./redis-harness.mjs";

const T = { timeout: TEST_TIMEOUT * 2 };
const HOOK = { timeout: 30000 };
const OPTS = { auth: { token: "x" }, query: { q: "1" } };

/** The fetched socket `id` as `via` sees it, once `via` lists it. */
async function fetchOne(via, id) {
  let list;
  await waitFor(async () => {
    list = await call(via, "fetch-sockets", { in: [id], handshake: true });
    return list.length === 1;
  }, 5000, 50).catch(() => {
    throw new Error(`${id} not fetched: ${JSON.stringify(list)}`);
  });
  return list[0];
}

function assertHandshake(socket, where) {
  assert.ok(socket.handshake, `no handshake for the socket on ${where}: ${JSON.stringify(socket)}`);
  assert.deepEqual(socket.handshake.auth, { token: "x" }, where);
  assert.equal(socket.handshake.query.q, "1", where);
  assert.equal(socket.handshake.query.EIO, "4", where);
  assert.match(socket.handshake.address ?? "", /127\.0\.0\.1$/, where);
}

describe("fetch-sockets: the handshake of a socket on another worker", { skip: clusterSkipReason() }, () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ workers: 2 });
  }, HOOK);
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await cluster?.stop("SIGTERM", 5000);
  }, HOOK);

  for (const transports of [["polling"], ["websocket"]]) {
    it(`a ${transports[0]} client on worker 1, fetched from worker 0`, T, async () => {
      const asker = await connectWorker(cluster, 0);
      const remote = await connectWorker(cluster, 1, { ...OPTS, transports });
      const fetched = await fetchOne(asker, remote.id);
      assertHandshake(fetched, "worker 1");
      // the local socket's, for comparison: the same fields
      const local = await fetchOne(remote, remote.id);
      assert.deepEqual(fetched.handshake, local.handshake);
    });
  }
});

for (const kind of ["streams", "classic"]) {
  describe(`fetch-sockets on Redis (${kind}): the handshake of another rsio's and a Node server's socket`,
    { skip: redisSkipReason(), timeout: 120000 }, () => {
      let redis, rsioA, rsioB, node;
      before(async () => {
        redis = await startRedis();
        [rsioA, rsioB, node] = await Promise.all([
          startRsio(redis.url, kind), startRsio(redis.url, kind), startNode(redis.url, kind),
        ]);
        const probe = await connect(rsioA.url);
        await waitFor(async () => (await call(probe, "server-count")) === 3, 15000, 100);
        closeAll();
      }, HOOK);
      afterEach(() => closeAll());
      after(async () => {
        closeAll();
        await Promise.all([rsioA?.stop(), rsioB?.stop(), node?.stop()]);
        await redis?.stop();
      }, HOOK);

      it("clients on the other rsio and on Node, fetched from rsio", T, async () => {
        const asker = await connect(rsioA.url);
        const onRsio = await connect(rsioB.url, OPTS);
        const onNode = await connect(node.url, OPTS);
        assertHandshake(await fetchOne(asker, onRsio.id), "the other rsio");
        assertHandshake(await fetchOne(asker, onNode.id), "Node");
      });
    });
}
