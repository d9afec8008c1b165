// A Node socket.io server on @socket.io/redis-streams-adapter 0.3.1 (default)
// or @socket.io/redis-adapter 8.3 (`--adapter classic`, through ioredis, on one
// Redis or, with comma-separated node URLs, on a Redis Cluster), with the
// handlers of the rsio interop server (examples/interop) that the mixed Redis
// tests use, so one rsio and one Node server can share a Redis.
// Usage: node tests/js/redis-node-server.mjs --port 0 --redis redis://127.0.0.1:6379 [--adapter classic]
// Prints "listening on http://127.0.0.1:<port>" on stdout once ready.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createClient } from "redis";
import { Redis, Cluster } from "ioredis";
import { createAdapter as createStreamsAdapter } from "@socket.io/redis-streams-adapter";
import { createAdapter as createClassicAdapter } from "@socket.io/redis-adapter";

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i !== -1 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : dflt;
}

const url = arg("--redis", "redis://127.0.0.1:6379");
const kind = arg("--adapter", "streams");
const clients = [];
let adapter;
if (kind === "classic") {
  const urls = url.split(",");
  const pub = urls.length > 1
    ? new Cluster(urls.map((u) => { const { hostname: host, port } = new URL(u); return { host, port: Number(port) }; }))
    : new Redis(url);
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", (err) => console.error("redis:", err.message));
  clients.push(pub, sub);
  adapter = createClassicAdapter(pub, sub);
} else {
  const redisClient = createClient({ url });
  redisClient.on("error", (err) => console.error("redis:", err.message));
  await redisClient.connect();
  clients.push(redisClient);
  adapter = createStreamsAdapter(redisClient);
}

const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  pingInterval: 1000,
  pingTimeout: 1000,
  connectTimeout: 2000,
  connectionStateRecovery: { maxDisconnectionDuration: 5000, skipMiddlewares: true },
  adapter,
});

const rooms = (list) => (Array.isArray(list) ? list : list == null ? [] : [list]);

io.on("which-worker", (cb) => cb("node"));

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    ack([...socket.rooms]);
  });
  socket.on("broadcast", (opts, ack) => {
    let op = opts.broadcast ? socket.broadcast : io;
    if (opts.to && opts.to.length) op = op.to(opts.to);
    if (opts.except && opts.except.length) op = op.except(opts.except);
    if (opts.local) op = op.local;
    if (opts.volatile) op = op.volatile;
    if (opts.compress === false) op = op.compress(false);
    op.emit(opts.event, ...(opts.args ?? []));
    ack("ok");
  });
  socket.on("broadcast-with-ack", (opts, ack) => {
    let op = io;
    if (opts.to && opts.to.length) op = op.to(opts.to);
    op.timeout(opts.timeout ?? 1000).emit(opts.event, ...(opts.args ?? []), (err, responses) => {
      ack({ err: err ? err.message : null, responses });
    });
  });
  socket.on("fetch-sockets", async (opts, ack) => {
    const sockets = await io.in(rooms(opts?.in)).fetchSockets();
    ack(sockets.map((s) => ({ id: s.id, rooms: [...s.rooms].sort(), data: s.data })));
  });
  socket.on("sockets-join", (opts, ack) => {
    io.in(rooms(opts.in)).socketsJoin(opts.rooms);
    ack("ok");
  });
  socket.on("sockets-leave", (opts, ack) => {
    io.in(rooms(opts.in)).socketsLeave(opts.rooms);
    ack("ok");
  });
  socket.on("disconnect-sockets", (opts, ack) => {
    ack("ok");
    io.in(rooms(opts.in)).disconnectSockets(!!opts.close);
  });
  socket.on("set-data", (value, ack) => {
    socket.data = value;
    ack("ok");
  });
  socket.on("get-data", (ack) => ack(socket.data));
  socket.on("recovered", (ack) => ack(socket.recovered));
  socket.on("server-side-emit", (opts, ack) => {
    io.serverSideEmit(opts.event, ...(opts.args ?? []), (err, responses) => {
      ack({ err: err ? err.message : null, responses });
    });
  });
  socket.on("server-count", async (ack) => ack(await io.of("/").adapter.serverCount()));
});

httpServer.listen(Number(arg("--port", "0")), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${httpServer.address().port}`);
});

async function shutdown() {
  io.close();
  await Promise.all(clients.map((c) => c.quit().catch(() => {})));
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
