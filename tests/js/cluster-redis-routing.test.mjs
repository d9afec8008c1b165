// Room routing with --redis: two rsio hosts of 2 workers each on one throwaway
// redis-server. A host's primary reads each broadcast once and forwards a
// broadcast to named rooms only to the workers whose rooms are in the interest
// hints (`redisReceived` in a worker's /stats counts what it was forwarded);
// with recovery (streams) every worker still gets every entry: it keeps the
// last seconds of broadcasts for the sockets it restores, whatever their rooms.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { once, fires, call, waitFor, clusterSkipReason, workerStats, collect, TEST_TIMEOUT } from "./harness.mjs";
import { redisSkipReason, redisHostsFor, connectEverywhere } from "./redis-harness.mjs";

const skip = redisSkipReason() || clusterSkipReason();
const T = { timeout: TEST_TIMEOUT * 4 };
const HOSTS = 2;
const WORKERS = 2;

for (const [kind, recovery] of [["streams", false], ["streams", true], ["classic", false]]) {
  const label = `${kind}${recovery ? ", recovery" : ""}`;
  describe(`two rsio hosts on Redis (${label}): room broadcasts go to the workers with members`, { skip, timeout: 120000 }, () => {
    const env = redisHostsFor({ kind, recovery, count: HOSTS, workers: WORKERS });

    /** One client on each worker of each host ([a0, a1, b0, b1]), once every worker counts every other and broadcasts cross. */
    async function everywhere() {
      const list = await connectEverywhere(env.hosts, WORKERS);
      // The first broadcast crosses once every reader is up (they may be in backoff).
      await waitFor(async () => {
        const got = list.map((c) => fires(c, "warm", 300));
        await call(list[3], "broadcast", { event: "warm", args: [] });
        return (await Promise.all(got)).every(Boolean);
      }, 20000, 50);
      return list;
    }

    /** `redisReceived` of worker `i` of host `h`. */
    async function received(h, i) {
      const stats = await workerStats(env.hosts[h], i);
      assert.equal(typeof stats.redisReceived, "number", JSON.stringify(stats));
      return stats.redisReceived;
    }

    it("a broadcast to a room of worker 0 only reaches it, and worker 1 gets no entry of it", T, async () => {
      const [a0, a1, b0, b1] = await everywhere();
      await call(a0, "join", "only-a0");
      // Joined and left: the room's bit goes with its last member.
      await call(a1, "join", "gone-a1");
      await call(a1, "leave", "gone-a1");
      const before = await received(0, 1);
      const n = 5;
      for (let i = 0; i < n; i++) {
        const got = once(a0, "to-a0", 5000);
        const outside = [a1, b0, b1].map((c) => fires(c, "to-a0", 300));
        await call(i % 2 ? b0 : b1, "broadcast", { event: "to-a0", to: ["only-a0"], args: [i] });
        assert.equal((await got)[0], i);
        assert.deepEqual(await Promise.all(outside), [false, false, false]);
        // To a room whose only member left: nobody.
        const none = [a0, a1, b0, b1].map((c) => fires(c, "to-gone", 300));
        await call(b0, "broadcast", { event: "to-gone", to: ["gone-a1"], args: [i] });
        assert.deepEqual(await Promise.all(none), [false, false, false, false]);
      }
      const after = await received(0, 1);
      if (recovery) {
        // It keeps every broadcast of the last seconds for restores.
        assert.ok(after - before >= 2 * n, `worker 1 received ${after - before} entries`);
      } else {
        assert.equal(after - before, 0, "worker 1 of host A was forwarded none of them");
      }
    });

    it("a broadcast to every socket still reaches every worker", T, async () => {
      const list = await everywhere();
      const before = await received(0, 1);
      const got = list.map((c) => once(c, "to-all", 5000));
      await call(list[2], "broadcast", { event: "to-all", args: ["x"] });
      for (const args of await Promise.all(got)) assert.equal(args[0], "x");
      await waitFor(async () => (await received(0, 1)) > before, 3000, 50);
    });

    it("a socket that joined a room then gets the other host's broadcast to it at once", T, async () => {
      const [, a1, b0] = await everywhere();
      for (let i = 0; i < 20; i++) {
        const room = `fresh-${i}`;
        await call(a1, "join", room);
        // The join returned: its room is in the hints before this is written.
        const got = once(a1, "to-fresh", 5000);
        await call(b0, "broadcast", { event: "to-fresh", to: [room], args: [i] });
        assert.equal((await got)[0], i, `round ${i}`);
      }
    });

    it("sockets the other host joins to a room then get its broadcast to it", T, async () => {
      // The join goes over Redis too: a host's primary reads it before the
      // broadcast, maybe before its worker applied it.
      const [, a1, b0] = await everywhere();
      for (let i = 0; i < 20; i++) {
        const room = `remote-${i}`;
        const got = once(a1, "to-remote", 5000);
        await call(b0, "sockets-join", { in: [a1.id], rooms: [room] });
        await call(b0, "broadcast", { event: "to-remote", to: [room], args: [i] });
        assert.equal((await got)[0], i, `round ${i}`);
      }
    });

    it("a room with members on both workers of a host reaches each of them once", T, async () => {
      const [a0, a1, b0, b1] = await everywhere();
      await Promise.all([call(a0, "join", "both"), call(a1, "join", "both"), call(b1, "join", "both")]);
      const seen = [a0, a1, b1].map((c) => collect(c, "to-both"));
      const notB0 = fires(b0, "to-both", 1000);
      await call(b0, "broadcast", { event: "to-both", to: ["both", "other"], args: [1] });
      await waitFor(() => seen.every((s) => s.length >= 1), 5000);
      assert.equal(await notB0, false);
      // Time for a second copy to show up, if one were sent.
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(seen.map((s) => s.length), [1, 1, 1]);
    });
  });
}
