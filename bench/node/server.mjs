// The Node reference of the rsio benchmark: socket.io 4.8.4 running the bench
// contract (shared/bench-contract.md), like examples/bench.rs does for rsio.
//
//   PORT=3000 node server.mjs                            # one process
//   WORKERS=2 BASE_PORT=4000 node server.mjs cluster     # worker i on BASE_PORT + i
//
// In cluster mode the primary forks one worker per core (or WORKERS), each on
// its own port, and relays broadcasts between them with
// @socket.io/cluster-adapter (setupPrimary() + createAdapter()).
// REDIS_URL=redis://127.0.0.1:6379: every process (the one server, or each
// worker) is a member of the Redis cluster with @socket.io/redis-streams-adapter
// instead (as rsio --redis), for the cross-host scenario.
// Connection state recovery is off (socket.io's default).
// PARSER=msgpack: socket.io-msgpack-parser instead of the default parser.
// DEFLATE=1: perMessageDeflate on with its default threshold (1024 bytes), as
// rsio's --per-message-deflate.
import cluster from "node:cluster";
import { createServer } from "node:http";
import { availableParallelism } from "node:os";
import { Server } from "socket.io";
import { createAdapter, setupPrimary } from "@socket.io/cluster-adapter";
import { createAdapter as createStreamsAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { createRequire } from "node:module";

const clustered = process.argv[2] === "cluster";
const redisUrl = process.env.REDIS_URL;

if (clustered && cluster.isPrimary) {
  const workers = Number(process.env.WORKERS || availableParallelism());
  const base = Number(process.env.BASE_PORT || 3000);
  // Each worker accepts on its own listening socket (no round-robin through
  // the primary, which would add the primary's CPU to every connection).
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  if (!redisUrl) setupPrimary();
  for (let i = 0; i < workers; i++) {
    cluster.fork({ WORKER_INDEX: String(i), PORT: String(base + i) });
  }
  cluster.on("exit", (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const port = Number(process.env.PORT || 3000);
  let adapter;
  if (redisUrl) {
    const redis = createClient({ url: redisUrl });
    redis.on("error", (err) => console.error("redis:", err.message));
    await redis.connect();
    adapter = createStreamsAdapter(redis);
  } else if (clustered) {
    adapter = createAdapter();
  }
  const httpServer = createServer();
  const io = new Server(httpServer, {
    path: "/socket.io/",
    transports: ["polling", "websocket"],
    ...(process.env.PARSER === "msgpack"
      ? { parser: createRequire(import.meta.url)("socket.io-msgpack-parser") }
      : {}),
    ...(process.env.DEFLATE === "1" ? { perMessageDeflate: { threshold: 1024 } } : {}),
    ...(adapter ? { adapter } : {}),
  });

  io.on("connection", (socket) => {
    socket.on("echo", (...args) => {
      if (typeof args[args.length - 1] === "function") {
        const ack = args.pop();
        ack(...args);
      } else {
        socket.emit("echo", ...args);
      }
    });
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack("ok");
    });
    socket.on("broadcast", (room, payload, ack) => {
      io.to(room).emit("bcast", payload);
      if (typeof ack === "function") ack("ok");
    });
    socket.on("broadcast_all", (payload) => {
      io.emit("bcast", payload);
    });
  });

  httpServer.listen(port, "127.0.0.1", () => {
    console.log(`listening on http://127.0.0.1:${port}` + (clustered ? ` (worker ${process.env.WORKER_INDEX})` : ""));
  });
  if (!clustered) {
    process.on("SIGTERM", () => process.exit(0));
    process.on("SIGINT", () => process.exit(0));
  }
}
