// examples/conformance with --allow-eio3, --parser msgpack and
// --per-message-deflate, each on its own and all together: the v5 suite's
// server at /socket.io/ answers the official client (with the msgpack parser
// when asked, deflate negotiated when asked), and a socket.io-client 2.x (or,
// with msgpack, a raw Engine.IO v3 handshake) when EIO3 is allowed.
//
// Binary: <repo>/target/debug/examples/conformance (`cargo build --example conformance`).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { createRequire } from "node:module";
import ioV2 from "socket.io-client-v2";
import { REPO_ROOT, startServer, connect, once, closeAll, TEST_TIMEOUT } from "./harness.mjs";

const parser = createRequire(import.meta.url)("socket.io-msgpack-parser");
const BIN = path.join(REPO_ROOT, "target", "debug", "examples", "conformance");
const T = { timeout: TEST_TIMEOUT };
const skip = process.env.INTEROP_REFERENCE === "1" ? "runs rsio's conformance example only" : false;

const COMBINATIONS = [
  ["--allow-eio3"],
  ["--parser", "msgpack"],
  ["--per-message-deflate"],
  ["--allow-eio3", "--parser", "msgpack", "--per-message-deflate"],
];

for (const flags of COMBINATIONS) {
  const eio3 = flags.includes("--allow-eio3");
  const msgpack = flags.includes("msgpack");
  const deflate = flags.includes("--per-message-deflate");

  describe(`conformance ${flags.join(" ")}`, { skip }, () => {
    let server;
    let url;
    before(async () => {
      const saved = process.env.RSIO_INTEROP_SERVER;
      process.env.RSIO_INTEROP_SERVER = [BIN, "--port", "0", ...flags].join(" ");
      try {
        server = await startServer();
      } finally {
        if (saved === undefined) delete process.env.RSIO_INTEROP_SERVER;
        else process.env.RSIO_INTEROP_SERVER = saved;
      }
      url = server.url;
    });
    afterEach(() => closeAll());
    after(async () => {
      closeAll();
      await server?.stop();
    });

    for (const transports of [["websocket"], ["polling"]]) {
      it(`the official client: a large message comes back (${transports[0]})`, T, async () => {
        const s = await connect(url, { transports, ...(msgpack ? { parser } : {}) });
        if (transports[0] === "websocket") {
          const extensions = s.io.engine.transport.ws.extensions;
          if (deflate) assert.match(extensions, /permessage-deflate/);
          else assert.equal(extensions, "");
        }
        const big = "conformance ".repeat(500);
        const back = once(s, "message-back");
        s.emit("message", big, 1);
        assert.deepEqual(await back, [big, 1]);
      });
    }

    if (eio3 && !msgpack) {
      it("a socket.io-client 2.x: a message comes back", T, async () => {
        const s = ioV2(url, { forceNew: true, reconnection: false, transports: ["websocket"] });
        try {
          await once(s, "connect");
          const back = once(s, "message-back");
          s.emit("message", "from v2");
          assert.deepEqual(await back, ["from v2"]);
        } finally {
          s.close();
        }
      });
    }

    if (eio3 && msgpack) {
      it("an Engine.IO v3 handshake is answered in the v3 payload format", T, async () => {
        const res = await fetch(`${url}/socket.io/?EIO=3&transport=polling&b64=1`, {
          signal: AbortSignal.timeout(2000),
        });
        assert.match(await res.text(), /^\d+:0\{"sid":/);
      });
    }

    if (!eio3) {
      it("an Engine.IO v3 handshake is refused", T, async () => {
        const res = await fetch(`${url}/socket.io/?EIO=3&transport=polling`, { signal: AbortSignal.timeout(2000) });
        assert.equal(res.status, 400);
      });
    }
  });
}
