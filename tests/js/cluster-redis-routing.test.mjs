// Room routing with --redis: two rsio hosts of 2 workers each on one throwaway
// redis-server. A host's primary reads each broadcast once and forwards a
// broadcast to named rooms only to the workers whose rooms are in the interest
// hints (`redisReceived` in a worker's /stats counts what it was forwarded),
// with recovery (streams) too: a worker restoring a session sets its bits
// for the session's rooms before it reads what the session missed.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import {
  once,
  fires,
  call,
  waitFor,
  sleep,
  client,
  connectWorker,
  clusterSkipReason,
  workerStats,
  collect,
  TEST_TIMEOUT,
} from "./harness.mjs";
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
      assert.equal(after - before, 0, "worker 1 of host A was forwarded none of them");
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
      // Once each worker of host A applied the join, the room is routed by
      // members again: worker 0 of host A, which has none, gets no entry of it.
      await waitFor(async () => {
        const before = await received(0, 0);
        const got = once(a1, "to-remote", 5000);
        await call(b0, "broadcast", { event: "to-remote", to: ["remote-19"], args: [-1] });
        await got;
        await sleep(50);
        return (await received(0, 0)) === before;
      }, 10000, 50);
    });

    if (recovery) {
      it("a session restored on a worker without members of its room gets every broadcast to it once, in order", { timeout: TEST_TIMEOUT * 12 }, async () => {
        // A numbered sequence from host B to a room of one socket on worker 1
        // of host A; mid-sequence the socket's transport closes and it
        // recovers on worker 0 of host A, which has no member of the room:
        // what it missed, what came during the restore and what follows,
        // each number once. Several sockets (one room each) restore at
        // once, each round, and each room gets a number every few ms, so
        // that restores land at varied points of the sequence: the gap
        // between a restore's last XRANGE and its join is under a
        // millisecond, and a restore that does not hold its rooms first
        // loses a number there within a few rounds.
        const [, , b0] = await everywhere();
        const hostA = env.hosts[0];
        const ROUNDS = 6;
        const SOCKETS = 8;
        const N = 50;
        const PERIOD = 3;
        const fast = { transports: ["websocket"] };
        const redis = new Redis(env.redis.url);
        try {
          for (let round = 0; round < ROUNDS; round++) await restoreRound(round);
        } finally {
          redis.disconnect();
        }

        async function restoreRound(round) {
          const rooms = Array.from({ length: SOCKETS }, (_, k) => `restore-${round}-${k}`);
          const olds = await Promise.all(rooms.map(() => connectWorker(hostA, 1, fast)));
          await Promise.all(olds.map((s, k) => call(s, "join", rooms[k])));
          const got = olds.map((s) => collect(s, "seq"));
          let stop = false;
          const emitter = (async () => {
            for (let i = 0; i < N && !stop; i++) {
              await Promise.all(rooms.map((room) => call(b0, "broadcast", { event: "seq", to: [room], args: [i] })));
              await sleep(PERIOD);
            }
          })();
          const restored = olds.map(async (s, k) => {
            // An offset first (a client without one does not recover), then
            // a close at a different point for each socket.
            await waitFor(() => got[k].length >= 1 + ((round * SOCKETS + k) % 7), 10000, 2);
            const gone = once(s, "disconnect");
            s.io.engine.close();
            await gone;
            // Its worker stored the session (else there is nothing to recover).
            await waitFor(async () => (await redis.exists(`sio:session:${s._pid}`)) === 1, 5000, 2);
            await sleep((k * 3) % 11);
            const moved = client(hostA.urls[0], { ...fast, auth: s.auth });
            moved._pid = s._pid;
            moved._lastOffset = s._lastOffset;
            moved.on("seq", (...args) => got[k].push(args));
            moved.connect();
            await once(moved, "connect", 5000);
            return moved;
          });
          let moved;
          try {
            moved = await Promise.all(restored);
          } finally {
            stop = (await Promise.allSettled(restored)).some((r) => r.status === "rejected");
            await emitter;
          }
          for (const [k, m] of moved.entries()) {
            assert.equal(m.recovered, true, `round ${round}, socket ${k}`);
            assert.equal(await call(m, "worker"), 0);
          }
          await waitFor(() => got.every((g) => g.length >= N), 5000).catch(() => {});
          // Time for a second copy to show up, if one were sent.
          await sleep(200);
          const want = Array.from({ length: N }, (_, i) => i);
          for (const [k, g] of got.entries()) {
            assert.deepEqual(g.map((args) => args[0]), want, `round ${round}, socket ${k}`);
          }
        }
      });
    }

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
