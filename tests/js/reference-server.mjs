// Node reference implementation of the rsio interop server (examples/interop.rs).
//
// Both servers must behave identically as seen from socket.io-client; the
// interop tests in this folder run against either (INTEROP_REFERENCE=1 picks
// this one). Usage: PORT=0 node tests/js/reference-server.mjs  (or --port N)
// Prints "listening on http://127.0.0.1:<port>" on stdout once ready.
import { createServer } from "node:http";
import { Server } from "socket.io";

function portFromArgs() {
  const i = process.argv.indexOf("--port");
  if (i !== -1 && process.argv[i + 1] !== undefined) return Number(process.argv[i + 1]);
  return Number(process.env.PORT ?? 0);
}

const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  cors: { origin: "*" },
  pingInterval: 1000,
  pingTimeout: 1000,
  connectTimeout: 2000,
  connectionStateRecovery: { maxDisconnectionDuration: 5000, skipMiddlewares: true },
  // Socket.IO v2 clients (tests/js/eio3.test.mjs), as the rsio server's --allow-eio3.
  allowEIO3: process.argv.includes("--allow-eio3"),
});

// socket id -> { reason, roomsAtDisconnecting } for every socket of every namespace.
const reasons = new Map();

function recordDisconnect(socket) {
  let roomsAtDisconnecting = [];
  socket.on("disconnecting", () => {
    roomsAtDisconnecting = [...socket.rooms].sort();
  });
  socket.on("disconnect", (reason) => {
    reasons.set(socket.id, { reason, roomsAtDisconnecting });
  });
}

function isFn(f) {
  return typeof f === "function";
}

function echoHandler(socket) {
  socket.on("echo", (...args) => {
    const last = args[args.length - 1];
    if (isFn(last)) {
      args.pop();
      last(...args);
    } else {
      socket.emit("echo", ...args);
    }
  });
}

function rooms(list) {
  return Array.isArray(list) ? list : list == null ? [] : [list];
}

// ---- namespace "/" ----------------------------------------------------------
io.on("connection", (socket) => {
  recordDisconnect(socket);
  const ordered = [];

  socket.use(([event], next) => {
    if (event === "forbidden") next(new Error("forbidden event"));
    else next();
  });
  socket.on("error", (err) => {
    socket.emit("error-seen", err.message);
  });

  echoHandler(socket);

  socket.on("forbidden", () => {
    // Never reached: the socket middleware refuses it. Make it visible if it ever runs.
    socket.emit("forbidden-ran");
  });

  socket.on("join", (room, ack) => {
    socket.join(room);
    ack([...socket.rooms]);
  });
  socket.on("leave", (room, ack) => {
    socket.leave(room);
    ack([...socket.rooms]);
  });

  socket.on("broadcast", (opts, ack) => {
    let op = opts.broadcast ? socket.broadcast : io;
    if (opts.to && opts.to.length) op = op.to(opts.to);
    if (opts.except && opts.except.length) op = op.except(opts.except);
    if (opts.local) op = op.local;
    if (opts.volatile) op = op.volatile;
    op.emit(opts.event, ...(opts.args ?? []));
    if (isFn(ack)) ack("ok");
  });

  socket.on("broadcast-with-ack", (opts, ack) => {
    let op = io;
    if (opts.to && opts.to.length) op = op.to(opts.to);
    op.timeout(opts.timeout).emit(opts.event, ...(opts.args ?? []), (err, responses) => {
      ack({ err: err ? err.message : null, responses });
    });
  });

  socket.on("emit-with-ack", (opts, ack) => {
    socket.timeout(opts.timeout).emit(opts.event, ...(opts.args ?? []), (err, ...res) => {
      ack({ err: err ? err.message : null, response: res });
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
    io.in(rooms(opts.in)).disconnectSockets(!!opts.close);
    ack("ok");
  });

  socket.on("set-data", (value, ack) => {
    socket.data = value;
    ack("ok");
  });
  socket.on("get-data", (ack) => {
    ack(socket.data);
  });

  socket.on("server-disconnect", (close) => {
    socket.disconnect(!!close);
  });

  socket.on("ordered", (n) => {
    ordered.push(n);
  });
  socket.on("get-ordered", (ack) => {
    ack(ordered);
  });
  socket.on("slow", (ms, ack) => {
    setTimeout(() => ack("slow"), ms);
  });

  socket.on("last-disconnect", (id, ack) => {
    ack(reasons.get(id) ?? null);
  });
  socket.on("recovered", (ack) => {
    ack(socket.recovered);
  });
  // Names of the events sent to this socket (catch-all outgoing listener).
  const outgoing = [];
  socket.onAnyOutgoing((event) => outgoing.push(event));
  socket.on("outgoing", (ack) => ack([...outgoing]));
});

// ---- namespace "/auth" ------------------------------------------------------
const authNsp = io.of("/auth");
authNsp.use((socket, next) => {
  if (socket.handshake.auth.token !== "secret") {
    const e = new Error("unauthorized");
    e.data = { code: 401 };
    next(e);
  } else {
    socket.data.user = "alice";
    next();
  }
});
authNsp.on("connection", (socket) => {
  recordDisconnect(socket);
  socket.emit("welcome", socket.data);
});

// ---- dynamic namespaces /dyn-<digits> ---------------------------------------
const dyn = io.of(/^\/dyn-\d+$/);
dyn.use((socket, next) => {
  if (socket.nsp.name === "/dyn-0") next(new Error("dyn-0 refused"));
  else next();
});
dyn.on("connection", (socket) => {
  recordDisconnect(socket);
  socket.emit("hello", socket.nsp.name);
});

// ---- namespace "/custom" ----------------------------------------------------
io.of("/custom").on("connection", (socket) => {
  recordDisconnect(socket);
  socket.emit("auth", socket.handshake.auth);
  echoHandler(socket);
});

httpServer.listen(portFromArgs(), "127.0.0.1", () => {
  const { port } = httpServer.address();
  process.stdout.write(`listening on http://127.0.0.1:${port}\n`);
});

function shutdown() {
  io.close();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
