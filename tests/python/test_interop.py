#!/usr/bin/env python3
"""Interop tests: python-socketio client against the rsio interop example server.

Usage:  python3 tests/python/test_interop.py
  RSIO_INTEROP_SERVER="<command line>"  server to spawn (split on whitespace)
  INTEROP_REFERENCE=1                   spawn the Node reference (node tests/js/reference-server.mjs)
  default                               <repo>/target/debug/examples/interop --port 0
The server prints "listening on http://127.0.0.1:<port>" once ready.
Last line of output: "N passed, M failed"; exit status 1 if anything failed.
Needs the packages of tests/python/requirements.txt.

Note: the server runs with connection state recovery on, so every event it
sends without an ack id (and not volatile) carries its offset (a string) as
an extra last argument; the client passes it on to handlers.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback

try:
    import socketio
except ImportError as e:  # pragma: no cover
    print(f"python-socketio missing ({e}); pip install -r tests/python/requirements.txt")
    print("0 passed, 1 failed")
    sys.exit(1)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
START_TIMEOUT = 15.0
TIMEOUT = 3.0  # per wait / ack
WATCHDOG = 120.0  # whole run


def server_command():
    cmd = os.environ.get("RSIO_INTEROP_SERVER")
    if cmd:
        return shlex.split(cmd)
    if os.environ.get("INTEROP_REFERENCE") == "1":
        return ["node", os.path.join(REPO_ROOT, "tests", "js", "reference-server.mjs"), "--port", "0"]
    return [os.path.join(REPO_ROOT, "target", "debug", "examples", "interop"), "--port", "0"]


def start_server():
    cmd = server_command()
    if os.path.isabs(cmd[0]) and not os.path.exists(cmd[0]):
        raise RuntimeError(
            f"interop server binary not found: {cmd[0]} (cargo build --example interop, "
            "or set RSIO_INTEROP_SERVER / INTEROP_REFERENCE=1)"
        )
    env = dict(os.environ, PORT="0")
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    found = {}

    def reader():
        for line in proc.stdout:
            m = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
            if m and "url" not in found:
                found["url"] = m.group(1)
                ready.set()
        ready.set()  # EOF: exited

    ready = threading.Event()
    threading.Thread(target=reader, daemon=True).start()
    ready.wait(START_TIMEOUT)
    if "url" not in found:
        stop_server(proc)
        raise RuntimeError(f"server {cmd} did not print 'listening on' within {START_TIMEOUT}s")
    return proc, found["url"]


def stop_server(proc):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=3)


# ---- helpers ----------------------------------------------------------------

class Waiter:
    """Collects the args of every occurrence of an event."""

    def __init__(self):
        self.items = []
        self.cond = threading.Condition()

    def __call__(self, *args):
        with self.cond:
            self.items.append(list(args))
            self.cond.notify_all()

    def wait(self, count=1, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {count} event(s), got {self.items}")
                self.cond.wait(left)
            return self.items[count - 1]


def strip_offset(args):
    assert args and isinstance(args[-1], str) and args[-1], f"expected an offset as last arg: {args!r}"
    return args[:-1]


def eq(actual, expected):
    assert actual == expected, f"expected {expected!r}, got {actual!r}"


clients = []


def new_client(url, namespaces=None, transports=None, auth=None, handlers=None):
    sio = socketio.Client(reconnection=False, request_timeout=TIMEOUT)
    for (ns, ev), fn in (handlers or {}).items():
        sio.on(ev, fn, namespace=ns)
    clients.append(sio)
    sio.connect(url, namespaces=namespaces or ["/"], transports=transports, auth=auth, wait_timeout=TIMEOUT)
    return sio


def close_clients():
    while clients:
        sio = clients.pop()
        try:
            sio.disconnect()
        except Exception:
            pass


# ---- tests ------------------------------------------------------------------

MIXED = [1, 1.5, 9007199254740991, -3, "héllo 🎉 日本", {"a": {"b": [1, {"c": None}]}}, None, [1, "2", [3]], True, False]


def test_connect(url):
    sio = new_client(url)
    assert isinstance(sio.get_sid("/"), str) and sio.get_sid("/")
    assert sio.get_sid("/") != sio.eio.sid, "socket id must differ from the Engine.IO sid"
    eq(sio.transport(), "websocket")


def test_echo_ack_mixed(url):
    sio = new_client(url)
    eq(list(sio.call("echo", tuple(MIXED), timeout=TIMEOUT)), MIXED)
    eq(sio.call("echo", "single", timeout=TIMEOUT), "single")


def test_echo_event(url):
    w = Waiter()
    sio = new_client(url, handlers={("/", "echo"): w})
    sio.emit("echo", ("a", 2, {"x": None}))
    eq(strip_offset(w.wait()), ["a", 2, {"x": None}])


def test_binary(url):
    w = Waiter()
    sio = new_client(url, handlers={("/", "echo"): w})
    payload = [b"\x00\x01\xff", {"nested": [b"abc", 3]}, "text"]
    eq(list(sio.call("echo", tuple(payload), timeout=TIMEOUT)), payload)
    sio.emit("echo", tuple(payload))
    eq(strip_offset(w.wait()), payload)


def test_server_emit_with_ack(url):
    def question(*args):
        return [args[0] + 1, args[1] + "!"]

    sio = new_client(url, handlers={("/", "question"): question})
    res = sio.call("emit-with-ack", {"event": "question", "args": [1, "two"], "timeout": 2000}, timeout=TIMEOUT)
    eq(res, {"err": None, "response": [[2, "two!"]]})


def test_broadcast(url):
    wa, wb = Waiter(), Waiter()
    a = new_client(url, handlers={("/", "py-news"): wa})
    b = new_client(url, handlers={("/", "py-news"): wb})
    eq(a.call("broadcast", {"event": "py-news", "args": ["hi", 1]}, timeout=TIMEOUT), "ok")
    eq(strip_offset(wa.wait()), ["hi", 1])
    eq(strip_offset(wb.wait()), ["hi", 1])
    # socket.broadcast: everybody but the sender
    eq(b.call("broadcast", {"event": "py-news", "args": ["from b"], "broadcast": True}, timeout=TIMEOUT), "ok")
    eq(strip_offset(wa.wait(2)), ["from b"])
    b.call("echo", "sync", timeout=TIMEOUT)
    eq(len(wb.items), 1)


def test_rooms(url):
    wa, wb = Waiter(), Waiter()
    a = new_client(url, handlers={("/", "room-ev"): wa})
    b = new_client(url, handlers={("/", "room-ev"): wb})
    eq(a.call("join", "py-room", timeout=TIMEOUT), [a.get_sid("/"), "py-room"])
    eq(b.call("broadcast", {"event": "room-ev", "args": [1], "to": ["py-room"]}, timeout=TIMEOUT), "ok")
    eq(strip_offset(wa.wait()), [1])
    b.call("echo", "sync", timeout=TIMEOUT)
    eq(wb.items, [])


def test_namespaces(url):
    auth_w, welcome_w = Waiter(), Waiter()
    sio = new_client(
        url,
        namespaces=["/custom"],
        auth={"a": 1},
        handlers={("/custom", "auth"): auth_w},
    )
    eq(strip_offset(auth_w.wait()), [{"a": 1}])
    eq(sio.call("echo", "in custom", namespace="/custom", timeout=TIMEOUT), "in custom")
    new_client(url, namespaces=["/auth"], auth={"token": "secret"}, handlers={("/auth", "welcome"): welcome_w})
    eq(strip_offset(welcome_w.wait()), [{"user": "alice"}])


def test_auth_refused(url):
    errors = Waiter()
    sio = socketio.Client(reconnection=False, request_timeout=TIMEOUT)
    clients.append(sio)
    sio.on("connect_error", errors, namespace="/auth")
    try:
        sio.connect(url, namespaces=["/auth"], auth={"token": "wrong"}, wait_timeout=TIMEOUT)
    except socketio.exceptions.ConnectionError:
        pass
    eq(errors.wait(), [{"message": "unauthorized", "data": {"code": 401}}])


def test_polling_only(url):
    sio = new_client(url, transports=["polling"])
    eq(sio.transport(), "polling")
    eq(list(sio.call("echo", (1, b"\x01\x02", "x"), timeout=TIMEOUT)), [1, b"\x01\x02", "x"])


def test_websocket_only(url):
    sio = new_client(url, transports=["websocket"])
    eq(sio.transport(), "websocket")
    eq(list(sio.call("echo", (1, b"\x01\x02", "x"), timeout=TIMEOUT)), [1, b"\x01\x02", "x"])


def wait_disconnect_record(via, sid):
    deadline = time.monotonic() + TIMEOUT
    while True:
        rec = via.call("last-disconnect", sid, timeout=TIMEOUT)
        if rec is not None or time.monotonic() > deadline:
            return rec
        time.sleep(0.05)


def test_server_disconnect(url):
    # python-socketio's own disconnect() may close the transport before its
    # DISCONNECT packet is written, so the server-initiated direction is the
    # deterministic one to check here.
    reasons = Waiter()
    a = new_client(url, handlers={("/", "disconnect"): reasons})
    b = new_client(url)
    sid = a.get_sid("/")
    eq(a.call("join", "bye-room", timeout=TIMEOUT), [sid, "bye-room"])
    a.emit("server-disconnect", False)
    eq(reasons.wait(), ["server disconnect"])
    eq(
        wait_disconnect_record(b, sid),
        {"reason": "server namespace disconnect", "roomsAtDisconnecting": sorted([sid, "bye-room"])},
    )


TESTS = [
    test_connect,
    test_echo_ack_mixed,
    test_echo_event,
    test_binary,
    test_server_emit_with_ack,
    test_broadcast,
    test_rooms,
    test_namespaces,
    test_auth_refused,
    test_polling_only,
    test_websocket_only,
    test_server_disconnect,
]


def main():
    def watchdog():
        print(f"watchdog: run exceeded {WATCHDOG}s", flush=True)
        print("0 passed, 1 failed", flush=True)
        os._exit(1)

    timer = threading.Timer(WATCHDOG, watchdog)
    timer.daemon = True
    timer.start()

    passed = failed = 0
    try:
        proc, url = start_server()
    except Exception as e:
        print(f"FAIL server start: {e}")
        print("0 passed, 1 failed")
        return 1
    try:
        only = os.environ.get("PY_INTEROP_ONLY")
        for t in TESTS:
            if only and only not in t.__name__:
                continue
            t0 = time.monotonic()
            try:
                t(url)
                passed += 1
                print(f"ok   {t.__name__} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
            except Exception as e:
                failed += 1
                print(f"FAIL {t.__name__}: {e!r}", flush=True)
                if os.environ.get("PY_INTEROP_VERBOSE"):
                    traceback.print_exc()
            finally:
                close_clients()
    finally:
        stop_server(proc)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
