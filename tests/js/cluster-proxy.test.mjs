// `--trust-proxy` (RSIO_TRUST_PROXY) reaches every worker's server: only then
// does the same-origin check believe `X-Forwarded-Host`. Without it, a page on
// another origin that sends the header itself is refused (403), on polling and
// on the WebSocket handshake alike.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startCluster, clusterSkipReason } from "./harness.mjs";

const skip = clusterSkipReason();
const T = { timeout: 30000 };

/** Status and body of a raw GET (raw, so `Origin` is ours to set). */
function get(port, path, headers) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, headers, timeout: 3000 }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("upgrade", (res, socket) => { socket.destroy(); resolve({ status: res.statusCode, body: "" }); });
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: no answer within 3 s`)));
    req.on("error", reject);
  });
}

const POLLING = "/socket.io/?EIO=4&transport=polling";
const WEBSOCKET = "/socket.io/?EIO=4&transport=websocket";
const WS_HEADERS = {
  Connection: "Upgrade", Upgrade: "websocket",
  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
};
// A page on evil.example naming its own host, as a proxy would.
const FORGED = { Origin: "https://evil.example", "X-Forwarded-Host": "evil.example" };

/** The answers to the forged request on polling and WebSocket, from a 1-worker cluster. */
async function answers(options) {
  const cluster = await startCluster({ workers: 1, ...options });
  try {
    const port = cluster.ports[0];
    return {
      polling: (await get(port, POLLING, FORGED)).status,
      websocket: (await get(port, WEBSOCKET, { ...WS_HEADERS, ...FORGED })).status,
    };
  } finally {
    await cluster.stop("SIGTERM", 5000);
  }
}

describe("cluster --trust-proxy", { skip }, () => {
  it("without it a forged X-Forwarded-Host is refused", T, async () => {
    assert.deepEqual(await answers({}), { polling: 403, websocket: 403 });
  });

  it("--trust-proxy reaches the workers: the proxy's X-Forwarded-Host is same-origin", T, async () => {
    assert.deepEqual(await answers({ args: ["--trust-proxy"] }), { polling: 200, websocket: 101 });
  });

  it("RSIO_TRUST_PROXY=true does the same", T, async () => {
    assert.deepEqual(await answers({ env: { RSIO_TRUST_PROXY: "true" } }), { polling: 200, websocket: 101 });
  });
});
