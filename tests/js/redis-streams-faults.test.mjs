// Faults of the Redis Streams adapter: Redis unreachable when rsio starts, and a
// stream reader whose connection drops.
import { describe, it, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "redis";
import { connect, closeAll, once, call, waitFor, TEST_TIMEOUT } from "./harness.mjs";
import { redisSkipReason, randomPort, startRedis, startRsio, startNode } from "./redis-harness.mjs";

const skip = redisSkipReason();

describe("redis streams faults", { skip, timeout: 90000 }, () => {
  const stops = [];
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    for (const stop of stops.reverse()) await stop();
  });

  it("rsio serves while Redis is unreachable, and joins once it is up", { timeout: 45000 }, async () => {
    const port = randomPort();
    const url = `redis://127.0.0.1:${port}`;
    const rsio = await startRsio(url);
    stops.push(rsio.stop);
    // Local clients are served meanwhile (with recovery on, socket.emit falls
    // back to local delivery when Redis cannot take it).
    const a = await connect(rsio.url);
    await call(a, "join", "local-room");
    const echo = once(a, "local");
    await call(a, "broadcast", { event: "local", args: [1] });
    assert.equal((await echo)[0], 1);
    assert.match(rsio.output(), /redis[^\n]*(refused|unreachable|error)[^\n]*retrying/i);

    const redis = await startRedis({ port });
    stops.push(redis.stop);
    const node = await startNode(url);
    stops.push(node.stop);
    const b = await connect(node.url);
    // The reader retries with backoff (at most 5 s apart): then Node's broadcasts arrive.
    await waitFor(async () => (await call(b, "server-count")) === 2, 15000, 200);
    const got = once(a, "across", 10000);
    await waitFor(async () => {
      await call(b, "broadcast", { event: "across", args: ["hi"] });
      return true;
    });
    assert.equal((await got)[0], "hi");
  });

  it("a stream reader resumes from its last entry after its connection drops", { timeout: TEST_TIMEOUT * 2 }, async () => {
    const redis = await startRedis();
    stops.push(redis.stop);
    const [rsio, node] = await Promise.all([startRsio(redis.url), startNode(redis.url)]);
    stops.push(rsio.stop, node.stop);
    const cmd = createClient({ url: redis.url });
    await cmd.connect();
    stops.push(() => cmd.quit().catch(() => {}));
    const a = await connect(rsio.url);
    const first = once(a, "before");
    await call(a, "broadcast", { event: "before", args: [] });
    await first; // the reader has a last id now

    const got = once(a, "while-down", 5000);
    // Drop every XREAD connection, then write at once, before the readers reconnect:
    // a reader that restarted at "$" would never see this entry.
    const clients = String(await cmd.sendCommand(["CLIENT", "LIST"])).split("\n");
    const readers = clients.filter((l) => /cmd=xread/.test(l)).map((l) => l.match(/id=(\d+)/)[1]);
    assert.ok(readers.length >= 1, `no XREAD client in ${clients.join("\n")}`);
    for (const id of readers) await cmd.sendCommand(["CLIENT", "KILL", "ID", id]);
    await cmd.sendCommand(["XADD", "socket.io", "*", "uid", "emitter", "nsp", "/", "type", "3", "data",
      '{"packet":{"type":2,"data":["while-down","x"],"nsp":"/"},"opts":{"rooms":[],"except":[],"flags":{}}}']);
    const args = await got;
    assert.equal(args[0], "x");
  });
});
