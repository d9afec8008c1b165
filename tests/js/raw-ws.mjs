// A raw WebSocket client for the tests that must see the frames themselves
// (RSV1: was this frame compressed?), which the official client hides.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import net from "node:net";
import zlib from "node:zlib";

/**
 * A raw WebSocket on `/socket.io/` offering deflate as browsers do, reading
 * frames itself so that RSV1 can be seen. `next()`: the next data frame as
 * `{ rsv1, text }`, inflated when RSV1 is set; pings are answered and skipped.
 */
export async function rawWebSocket(url) {
  const { port } = new URL(url);
  const sock = net.connect(Number(port), "127.0.0.1");
  const key = crypto.randomBytes(16).toString("base64");
  sock.write(
    "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
      "Sec-WebSocket-Version: 13\r\n" +
      "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
  );
  let buf = Buffer.alloc(0);
  let headers = null;
  const frames = [];
  const send = (text) => {
    const payload = Buffer.from(text);
    const len = payload.length;
    if (len > 0xffff) throw new Error("too long for this client");
    const head = len < 126 ? Buffer.from([0x81, 0x80 | len]) : Buffer.from([0x81, 0xfe, len >> 8, len & 0xff]);
    const mask = crypto.randomBytes(4);
    sock.write(Buffer.concat([head, mask, payload.map((b, i) => b ^ mask[i & 3])]));
  };
  sock.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    if (headers === null) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      headers = buf.subarray(0, end).toString();
      buf = buf.subarray(end + 4);
    }
    while (buf.length >= 2) {
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) [len, at] = [buf.length >= 4 ? buf.readUInt16BE(2) : Infinity, 4];
      else if (len === 127) [len, at] = [buf.length >= 10 ? Number(buf.readBigUInt64BE(2)) : Infinity, 10];
      if (buf.length < at + len) return;
      frames.push({ first: buf[0], payload: Buffer.from(buf.subarray(at, at + len)) });
      buf = buf.subarray(at + len);
    }
  });
  const next = async () => {
    const deadline = Date.now() + 3000;
    for (;;) {
      const f = frames.shift();
      if (!f) {
        if (Date.now() > deadline) throw new Error("no frame from the server");
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      assert.equal(f.first & 0x80, 0x80, "a final frame");
      const rsv1 = (f.first & 0x40) !== 0;
      const data = rsv1 ? zlib.inflateRawSync(f.payload, { finishFlush: zlib.constants.Z_SYNC_FLUSH }) : f.payload;
      const text = data.toString();
      if (text === "2") {
        send("3");
        continue;
      }
      return { rsv1, text };
    }
  };
  await new Promise((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  const open = await next();
  assert.match(open.text, /^0\{/);
  assert.match(headers, /sec-websocket-extensions: permessage-deflate/i);
  send("40");
  const connected = await next();
  const sid = JSON.parse(connected.text.slice(2)).sid;
  return { send, next, sid, close: () => sock.destroy() };
}
