// The chat example on a 2-worker cluster behind Debian's real nginx, configured
// by scripts/nginx.conf: one public port, ip_hash stickiness over the worker
// ports, the chat's client scenario with polling, WebSocket and the upgrade,
// sessions idle past the ping interval (the proxy timeouts), a worker killed
// while clients keep arriving, and a worker port that refuses (proxy_next_upstream).
//
// ip_hash keys on the first three octets of the client's IPv4 address, so on
// loopback every client would land on one worker. Linux routes all of
// 127.0.0.0/8 to lo: the clients here bind source addresses 127.0.K.1 (an
// http.Agent for polling, `localAddress` for WebSocket), and the test picks one
// that nginx sends to each worker.
//
// Needs nginx (NGINX, else /usr/sbin/nginx; `scripts/setup` installs nginx-light)
// and the chat binary (see chat-cluster.mjs). nginx runs once for this file, in
// a temporary prefix folder, on a free loopback port; one test reloads it.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
// socket.io-client's own Engine.IO client (pinned through it in package-lock.json)
import { Socket as EngineSocket } from "engine.io-client";
import { REPO_ROOT, client, connect, call, once, collect, sleep, waitFor, closeAll, stripOffset, freePort } from "./harness.mjs";
import { startChat } from "./chat-cluster.mjs";

const NGINX = process.env.NGINX || "/usr/sbin/nginx";
const TEMPLATE = path.join(REPO_ROOT, "scripts", "nginx.conf");
const T = { timeout: 20000 };
const uniq = () => Math.random().toString(36).slice(2, 10);

/** Transport choices the chat scenario runs with. */
const TRANSPORTS = {
  polling: { transports: ["polling"] },
  websocket: { transports: ["websocket"] },
  "default (polling, then upgrade)": {},
};

/**
 * scripts/nginx.conf with its placeholders filled in, the way its header says:
 * comment lines unchanged, a line with @WORKER@ once per worker, @LISTEN@ replaced.
 */
function renderConf(template, { listen, workers }) {
  const out = [];
  for (const line of template.split("\n")) {
    if (/^[ \t]*#/.test(line)) out.push(line);
    else if (line.includes("@WORKER@")) for (const w of workers) out.push(line.replace("@WORKER@", w));
    else out.push(line.replaceAll("@LISTEN@", listen));
  }
  return out.join("\n");
}

/**
 * Resolves once nginx answers on `url` (its `Server` header: not some other process
 * that took the port meanwhile); rejects after `ms`, or when nginx exited.
 */
async function waitForNginx(url, ms, exited) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (exited()) throw new Error("nginx exited");
    const server = await fetch(url, { signal: AbortSignal.timeout(2000) }).then(
      async (res) => {
        await res.arrayBuffer();
        return res.headers.get("server") ?? "";
      },
      () => null,
    );
    if (server !== null) {
      if (!server.startsWith("nginx")) throw new Error(`${url} is served by ${JSON.stringify(server)}, not nginx`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`nginx does not answer on ${url} after ${ms} ms`);
    await sleep(25);
  }
}

/** The pids of the processes whose parent is `pid` (from /proc). */
function childrenOf(pid) {
  const kids = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // "pid (comm) state ppid ...": comm may hold spaces, so read after its ")"
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) kids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

/**
 * Renders scripts/nginx.conf for the chat's worker ports into `prefix` and runs
 * `nginx -p prefix -c nginx.conf -e stderr -g 'daemon off;'` on a free port (another
 * one if that port was taken meanwhile). Resolves with {url, port, stderr(), accessLog(), stop()}.
 */
async function startNginx(prefix, workerPorts) {
  mkdirSync(path.join(prefix, "logs"), { recursive: true });
  mkdirSync(path.join(prefix, "tmp"), { recursive: true });
  // As root, nginx's workers run as nobody; they must reach tmp/ for request bodies.
  chmodSync(prefix, 0o755);
  const template = readFileSync(TEMPLATE, "utf8");
  let last;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const conf = renderConf(template, {
      listen: `127.0.0.1:${port}`,
      workers: workerPorts.map((p) => `127.0.0.1:${p}`),
    });
    writeFileSync(path.join(prefix, "nginx.conf"), conf);
    const proc = spawn(NGINX, ["-p", prefix, "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => {
      if (err.length < 1_000_000) err += d;
      if (process.env.INTEROP_SERVER_LOG) process.stderr.write(d);
    });
    let exitInfo = null;
    const exited = new Promise((resolve) =>
      proc.on("exit", (code, signal) => {
        exitInfo = { code, signal };
        resolve(exitInfo);
      }),
    );
    const nginx = {
      proc,
      port,
      /**
       * Renders the template for `workers` (host:port each), makes nginx reload it
       * (SIGHUP) and resolves once only new worker processes are left: until the old
       * ones exit, they too accept connections, with the old upstream list.
       */
      async reload(workers) {
        writeFileSync(path.join(prefix, "nginx.conf"), renderConf(template, { listen: `127.0.0.1:${port}`, workers }));
        const old = childrenOf(proc.pid);
        proc.kill("SIGHUP");
        await waitFor(() => {
          const now = childrenOf(proc.pid);
          return now.length > 0 && now.every((pid) => !old.includes(pid));
        }, 10000).catch(() => assert.fail(`nginx did not reload; stderr:\n${err.slice(-2000)}`));
      },
      url: `http://127.0.0.1:${port}`,
      stderr: () => err,
      /** The access log's complete lines so far (nginx may be writing the last one). */
      accessLog() {
        const text = readFileSync(path.join(prefix, "logs", "access.log"), "utf8");
        return text.slice(0, text.lastIndexOf("\n") + 1);
      },
      async stop() {
        if (exitInfo) return exitInfo;
        proc.kill("SIGTERM"); // fast shutdown: the master stops its workers
        const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
        const res = await exited;
        clearTimeout(timer);
        return res;
      },
    };
    try {
      await waitForNginx(nginx.url, 10000, () => exitInfo !== null);
      // a test runner that dies leaves no nginx behind (SIGTERM: the master stops its workers)
      process.once("exit", () => exitInfo || proc.kill("SIGTERM"));
      return nginx;
    } catch (e) {
      await nginx.stop();
      last = new Error(`nginx did not start (${e.message}); stderr:\n${err.slice(-4000)}`);
      if (!/Address already in use|not nginx/.test(last.message)) throw last;
    }
  }
  throw last;
}

/** The `upstream="…"` field of an access log line: the worker(s) nginx tried, comma separated. */
const upstreamOf = (line) => line.match(/upstream="([^"]*)"/)?.[1];

/**
 * socket.io-client options that make every request of the client come from
 * `addr`: polling goes through an http.Agent bound to it, WebSocket takes `localAddress`.
 */
function from(addr, opts = {}) {
  return { agent: new http.Agent({ localAddress: addr }), localAddress: addr, ...opts };
}

/** GET `nginx.url + urlPath` from source address `addr`; resolves with the status. */
function getFrom(nginx, addr, urlPath, ms = 5000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: nginx.port, path: urlPath, localAddress: addr, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.setTimeout(ms, () => req.destroy(new Error(`GET ${urlPath} from ${addr}: no answer within ${ms} ms`)));
    req.on("error", reject);
  });
}

function skipReason() {
  if (process.env.INTEROP_REFERENCE === "1") return "the Node reference server is not the chat";
  return false;
}

describe("the chat cluster behind nginx (scripts/nginx.conf)", { skip: skipReason() }, () => {
  let chat;
  let nginx;
  let tmp;
  /** A source address that nginx sends to worker i, for i = 0, 1. */
  const addrOf = [];
  /** Engine.IO sessions left idle from the start (closeAll() does not see them), with their events. */
  const idle = [];
  let idleSince;

  before(async () => {
    if (!existsSync(NGINX)) throw new Error(`no nginx at ${NGINX} (run scripts/setup: it installs nginx-light)`);
    tmp = mkdtempSync(path.join(os.tmpdir(), "rsio-nginx-"));
    chat = await startChat(path.join(tmp, "chat.db"));
    nginx = await startNginx(path.join(tmp, "nginx"), chat.ports);
    // ip_hash is deterministic: ask each candidate source address which worker it gets.
    for (let k = 1; k <= 40 && addrOf.filter(Boolean).length < 2; k++) {
      const addr = `127.0.${k}.1`;
      const s = await connect(nginx.url, from(addr, { transports: ["websocket"] }), 5000);
      const { worker } = await call(s, "whoami");
      s.disconnect();
      addrOf[worker] ??= addr;
    }
    closeAll();
    assert.ok(addrOf[0] && addrOf[1], `source addresses for both workers: ${JSON.stringify(addrOf)}`);
    // Idle through the tests that follow, until "idle sessions outlive a ping
    // interval": bare Engine.IO sessions (no namespace, so no chat broadcast
    // reaches them), one polling, one WebSocket, one on each worker.
    for (const [index, transport] of [
      [0, "polling"],
      [1, "websocket"],
    ]) {
      const e = new EngineSocket(nginx.url, from(addrOf[index], { path: "/socket.io/", transports: [transport] }));
      idle.push({ e, index, transport, closes: collect(e, "close"), pings: collect(e, "ping") });
    }
    await Promise.all(idle.map(({ e }) => once(e, "open", 5000)));
    idleSince = Date.now();
  });
  afterEach(() => closeAll());
  after(async () => {
    for (const { e } of idle) e.close();
    closeAll();
    const res = await nginx?.stop();
    if (nginx) assert.equal(res.code, 0, `nginx exit status; stderr:\n${nginx.stderr().slice(-2000)}`);
    if (chat) {
      const res = await chat.stop();
      assert.equal(res.code, 0, `chat exit status; stderr:\n${chat.stderr().slice(-2000)}`);
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A chat client through nginx from `addr`, checked to be served by worker `index`. */
  async function user(index, opts = {}) {
    const s = await connect(nginx.url, from(addrOf[index], opts), 5000);
    const who = await call(s, "whoami");
    assert.equal(who.worker, index, `${addrOf[index]} is served by worker ${index}`);
    return s;
  }

  /** The `chat message` events `s` gets, as {msg, id, nick}. */
  function messagesOf(s) {
    const seen = [];
    s.on("chat message", (...args) => {
      const [msg, id, nick] = stripOffset(args);
      seen.push({ msg, id, nick });
    });
    return seen;
  }

  async function say(s, msg) {
    const res = await call(s, "chat message", msg, `${s.id}-${uniq()}`);
    assert.equal(res.ok, true, JSON.stringify(res));
    return res;
  }

  /**
   * The chat's client scenario with these client options: a user on each worker,
   * messages both ways (one burst sent without waiting), the online list, a private
   * message, and the history a new client asks for.
   */
  async function scenario(opts) {
    const tag = uniq();
    const ann = await user(0, { ...opts, auth: { serverOffset: Number.MAX_SAFE_INTEGER, nick: `ann-${tag}` } });
    const bob = await user(1, { ...opts, auth: { serverOffset: Number.MAX_SAFE_INTEGER, nick: `bob-${tag}` } });
    const annGot = messagesOf(ann);
    const bobGot = messagesOf(bob);

    const hello = await say(ann, `hello ${tag}`);
    const reply = await say(bob, `hi ${tag}`);
    const burst = await Promise.all(
      Array.from({ length: 10 }, (_, i) => call(ann, "chat message", `${i} ${tag}`, `${tag}-${i}`)),
    );
    const ids = [hello.id, reply.id, ...burst.map((r) => r.id)];
    for (const got of [annGot, bobGot]) {
      await waitFor(() => ids.every((id) => got.some((m) => m.id === id)), 5000);
      assert.deepEqual(
        got.filter((m) => m.msg.endsWith(tag)).map((m) => m.id),
        ids,
        "every message once, in order, on both workers",
      );
    }
    assert.deepEqual(bobGot.find((m) => m.id === hello.id), { msg: `hello ${tag}`, id: hello.id, nick: `ann-${tag}` });

    const users = await call(bob, "users");
    assert.deepEqual(
      users.filter((u) => u.nick.endsWith(tag)).map(({ nick, worker }) => ({ nick, worker })),
      [
        { nick: `ann-${tag}`, worker: 0 },
        { nick: `bob-${tag}`, worker: 1 },
      ],
    );

    const pm = once(ann, "private message", 5000);
    assert.deepEqual(await call(bob, "private message", `ann-${tag}`, "psst"), {
      ok: true,
      delivered: 1,
      to: `ann-${tag}`,
    });
    assert.equal(stripOffset(await pm)[0].text, "psst");

    // a new client on worker 1 asking for what followed the first message
    const late = client(nginx.url, from(addrOf[1], { ...opts, auth: { serverOffset: hello.id } }));
    const history = messagesOf(late);
    late.connect();
    await once(late, "connect", 5000);
    await waitFor(() => history.some((m) => m.id === ids.at(-1)), 5000);
    assert.deepEqual(history.filter((m) => m.msg.endsWith(tag)).map((m) => m.id), ids.slice(1));
    return { ann, bob };
  }

  /** The engine.io session ids of `sockets`' current transports. */
  const sids = (...sockets) => sockets.map((s) => s.io.engine.id);

  /** Access log lines with `sid=` for each session id, and the worker addresses that served them. */
  function upstreamsOf(sid) {
    const lines = nginx.accessLog().split("\n").filter((l) => l.includes(`sid=${sid}`));
    return { lines, upstreams: new Set(lines.map(upstreamOf)) };
  }

  it("serves the page and the client bundle through the one port", T, async () => {
    const page = await fetch(`${nginx.url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script src="\/socket\.io\/socket\.io\.js"><\/script>/);
    const js = await fetch(`${nginx.url}/socket.io/socket.io.js`);
    assert.equal(js.status, 200);
    assert.match(await js.text(), /Socket\.IO v/);
  });

  it("polling only: each session sticks to its worker, and the workers see each other's clients", T, async () => {
    const { ann, bob } = await scenario(TRANSPORTS.polling);
    assert.deepEqual([ann.io.engine.transport.name, bob.io.engine.transport.name], ["polling", "polling"]);
    // every request of a session went to one worker, and not the same for both
    const [a, b] = sids(ann, bob).map(upstreamsOf);
    assert.ok(a.lines.length >= 3 && b.lines.length >= 3, "several polling requests each");
    assert.deepEqual([a.upstreams.size, b.upstreams.size], [1, 1], "one upstream per session");
    assert.deepEqual([...a.upstreams, ...b.upstreams], chat.ports.map((p) => `127.0.0.1:${p}`));
  });

  it("WebSocket only", T, async () => {
    const { ann, bob } = await scenario(TRANSPORTS.websocket);
    assert.deepEqual([ann.io.engine.transport.name, bob.io.engine.transport.name], ["websocket", "websocket"]);
  });

  it("the default: polling, then the upgrade to WebSocket through nginx", T, async () => {
    const { ann, bob } = await scenario(TRANSPORTS["default (polling, then upgrade)"]);
    for (const s of [ann, bob]) {
      await waitFor(() => s.io.engine.transport.name === "websocket", 5000);
    }
    // the upgrade request carried the polling session's sid to the same worker
    // (nginx logs a WebSocket request when it ends)
    const mine = sids(ann, bob).map((sid, i) => [sid, chat.ports[i]]);
    ann.disconnect();
    bob.disconnect();
    for (const [sid, port] of mine) {
      const upgraded = (l) => /transport=websocket/.test(l) && /" 101 /.test(l);
      await waitFor(() => upstreamsOf(sid).lines.some(upgraded), 5000);
      assert.deepEqual([...upstreamsOf(sid).upstreams], [`127.0.0.1:${port}`], `every request of ${sid}`);
    }
  });

  // Before the worker kill and the reload: both would end these sessions.
  it("idle sessions outlive a ping interval (proxy_read_timeout)", { timeout: 60000 }, async () => {
    // A long-poll GET is answered only by the server's ping, and a WebSocket
    // carries nothing else meanwhile: a shorter proxy_read_timeout cuts both.
    try {
      const pingInterval = idle[0].e._pingInterval;
      assert.equal(typeof pingInterval, "number");
      await sleep(idleSince + pingInterval + 3000 - Date.now());
      for (const { e, index, transport, closes, pings } of idle) {
        assert.deepEqual(closes.map(([reason]) => reason), [], `${transport} session on worker ${index}: not closed`);
        assert.ok(pings.length >= 1, `${transport}: the server's ping came through`);
        // and its worker still has it: a Socket.IO CONNECT to "/" (the Engine.IO
        // message "0") is answered
        const answer = once(e, "message", 5000);
        e.send("0");
        assert.match(String((await answer)[0]), /^0\{"sid":/);
      }
    } finally {
      // a held long-poll would keep an old nginx worker alive through the reload test
      for (const { e } of idle) e.close();
    }
  });

  it("a killed worker: new clients through nginx still connect while it restarts", { timeout: 30000 }, async () => {
    const pidLine = /worker 1 \(pid (\d+)\) listening/g;
    const oldPid = Number([...chat.stderr().matchAll(pidLine)].at(-1)[1]);
    const ann = await user(0, TRANSPORTS.websocket);
    const annGot = messagesOf(ann);

    process.kill(oldPid, "SIGKILL");
    // Connect at once, before the new worker 1 exists: the primary keeps the
    // port, so nginx's connection waits in the backlog instead of failing.
    const restarted = () => [...chat.stderr().matchAll(pidLine)].some((m) => Number(m[1]) !== oldPid);
    assert.equal(restarted(), false, "worker 1 is not back yet");
    const started = Object.entries(TRANSPORTS).map(async ([name, opts]) => {
      const s = await connect(nginx.url, from(addrOf[1], opts), 15000).catch((e) => {
        throw new Error(`${name}: ${e.message}; nginx:\n${nginx.stderr().slice(-2000)}`);
      });
      return { name, s, who: await call(s, "whoami") };
    });
    const fresh = await Promise.all(started);
    await waitFor(restarted, 5000).catch(() => assert.fail("worker 1 was restarted"));
    for (const { name, who } of fresh) assert.equal(who.worker, 1, `${name}: served by the new worker 1`);

    // and the new worker 1 is part of the chat again
    const tag = uniq();
    const ids = [];
    for (const { s } of fresh) ids.push((await say(s, `back ${tag}`)).id);
    await waitFor(() => ids.every((id) => annGot.some((m) => m.id === id)), 5000);

    // nothing reached the clients as an nginx error
    const errors = nginx
      .accessLog()
      .split("\n")
      .filter((l) => /" 50[234] /.test(l));
    assert.deepEqual(errors, [], "no 502/503/504 from nginx");
  });

  // Last: it reloads nginx with another upstream list, and puts the first one back.
  it("a worker port that refuses: nginx retries on another worker, and polling sessions stay on it", { timeout: 30000 }, async () => {
    // The port of a worker that is not there (rsio restarting, an upstream list
    // rendered for more workers than run): connections are refused.
    const dead = `127.0.0.1:${await freePort()}`;
    await nginx.reload([...chat.ports.map((p) => `127.0.0.1:${p}`), dead]);
    const logLine = (marker) =>
      waitFor(() => nginx.accessLog().split("\n").find((l) => l.includes(marker)), 5000);
    try {
      // a source address whose requests ip_hash now sends to the dead port first
      let addr;
      await waitFor(
        async () => {
          for (let k = 1; k <= 60 && !addr; k++) {
            const marker = `probe=${uniq()}`;
            const status = await getFrom(nginx, `127.0.${k}.1`, `/?${marker}`);
            const line = await logLine(marker);
            assert.equal(status, 200, line);
            if (upstreamOf(line).startsWith(`${dead}, `)) addr = `127.0.${k}.1`;
          }
          return addr;
        },
        10000,
        100,
      );

      // its polling session: the handshake and every request after it on one live worker
      const tag = uniq();
      const s = await connect(nginx.url, from(addr, { transports: ["polling"], auth: { nick: `refused-${tag}` } }), 5000);
      const { worker } = await call(s, "whoami");
      const other = await connect(nginx.url, { transports: ["websocket"] }, 5000);
      const got = messagesOf(other);
      const mine = messagesOf(s);
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push((await say(s, `${i} ${tag}`)).id);
      ids.push((await say(other, `to you ${tag}`)).id);
      for (const seen of [got, mine]) await waitFor(() => ids.every((id) => seen.some((m) => m.id === id)), 5000);
      assert.equal((await call(s, "whoami")).worker, worker, "still the same worker");

      const sid = s.io.engine.id;
      s.disconnect();
      const { lines } = upstreamsOf(sid);
      assert.ok(lines.length >= 3, "several polling requests");
      const live = `127.0.0.1:${chat.ports[worker]}`;
      for (const line of lines) {
        assert.ok([live, `${dead}, ${live}`].includes(upstreamOf(line)), `served by ${live}: ${line}`);
        assert.doesNotMatch(line, /" 50[234] /);
      }
    } finally {
      closeAll(); // an old nginx worker waits for its last connection to close
      await nginx.reload(chat.ports.map((p) => `127.0.0.1:${p}`));
    }
  });
});
