// permessage-deflate (server started with --per-message-deflate, Node's
// perMessageDeflate): the official client (which compresses its own sends of
// 1024 bytes and more) and Node's `ws` client, with deflate negotiated: text,
// binary, large, many small, and a broadcast to 100 clients that arrives
// compressed.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { useServer, serverCommand, connect, call, once, stripOffset, TEST_TIMEOUT } from "./harness.mjs";

{
  const { cmd, args } = serverCommand();
  process.env.RSIO_INTEROP_SERVER = [cmd, ...args, "--per-message-deflate"].join(" ");
  delete process.env.INTEROP_REFERENCE;
}

const T = { timeout: TEST_TIMEOUT * 2 };
const ctx = useServer();

/** The client's `ws` socket and the TCP bytes it has read so far. */
function wire(socket) {
  const ws = socket.io.engine.transport.ws;
  return { extensions: ws.extensions, bytesRead: () => ws._socket.bytesRead };
}

const WS_ONLY = { transports: ["websocket"] };

describe("permessage-deflate", () => {
  it("is negotiated by the official client, and large messages cross compressed both ways", T, async () => {
    const s = await connect(ctx.url, WS_ONLY);
    const w = wire(s);
    assert.match(w.extensions, /permessage-deflate/);
    const big = "compress me ".repeat(20_000); // 240 KB
    const before = w.bytesRead();
    const back = await call(s, "echo", big);
    assert.ok(back === big, "the echo is the message");
    const read = w.bytesRead() - before;
    assert.ok(read < big.length / 10, `the echo took ${read} bytes on the wire`);
    const bin = Buffer.alloc(200_000, 7);
    const binBack = await call(s, "echo", bin);
    assert.ok(Buffer.from(binBack).equals(bin));
  });

  it("an upgrade from polling negotiates it too", T, async () => {
    const s = await connect(ctx.url);
    if (s.io.engine.transport.name !== "websocket") await once(s.io.engine, "upgrade");
    assert.match(wire(s).extensions, /permessage-deflate/);
    const big = "upgraded ".repeat(10_000);
    assert.ok((await call(s, "echo", big)) === big, "the echo is the message");
  });

  it("many small messages in a row stay in order", T, async () => {
    const s = await connect(ctx.url, WS_ONLY);
    const got = [];
    s.on("echo", (...args) => got.push(stripOffset(args)[0]));
    for (let i = 0; i < 300; i++) s.emit("echo", `m${i}`);
    const deadline = Date.now() + 5000;
    while (got.length < 300 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got, Array.from({ length: 300 }, (_, i) => `m${i}`));
  });

  it("a broadcast to 100 clients arrives compressed at each", T, async () => {
    const clients = [];
    for (let i = 0; i < 100; i++) clients.push(await connect(ctx.url, WS_ONLY));
    const payload = "broadcast ".repeat(10_000); // 100 KB
    const before = clients.map((c) => wire(c).bytesRead());
    const arrived = clients.map((c) => once(c, "big", 8000));
    assert.equal(await call(clients[0], "broadcast", { event: "big", args: [payload] }), "ok");
    const got = await Promise.all(arrived);
    clients.forEach((c, i) => {
      assert.ok(got[i][0] === payload, `client ${i} got the payload`);
      const read = wire(c).bytesRead() - before[i];
      assert.ok(read < payload.length / 10, `client ${i} read ${read} bytes`);
    });
  });

  it("Node's ws client: deflate answered without context takeover, compressed echo", T, async () => {
    const url = ctx.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket";
    const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
    const messages = [];
    const next = () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no message")), 3000);
        const poll = () => (messages.length ? (clearTimeout(timer), resolve(messages.shift())) : setTimeout(poll, 5));
        poll();
      });
    ws.on("message", (data, isBinary) => messages.push(isBinary ? data : data.toString()));
    await once(ws, "open");
    assert.equal(ws.extensions, "permessage-deflate");
    const params = ws._extensions["permessage-deflate"].params;
    assert.equal(params.server_no_context_takeover, true);
    assert.equal(params.client_no_context_takeover, true);
    assert.match(await next(), /^0\{/);
    ws.send("40");
    assert.match(await next(), /^40\{/);
    const big = JSON.stringify(["echo", "x".repeat(50_000)]);
    ws.send("42" + big);
    // The echo carries a recovery offset as its last argument.
    const echoed = async () => JSON.parse((await next()).slice(2)).slice(0, 2);
    assert.ok(JSON.stringify(await echoed()) === big, "large echo");
    ws.send("42" + JSON.stringify(["echo", "tiny"]));
    assert.deepEqual(await echoed(), ["echo", "tiny"]);
    ws.close();
  });
});
