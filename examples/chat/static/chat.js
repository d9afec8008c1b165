// The chat page: the Socket.IO tutorial's client (serverOffset, clientOffset,
// retries, the Disconnect/Connect toggle) plus nickname, "typing…", the online
// list (every worker), join/leave notices and private messages.
"use strict";
(() => {
  const NICK_KEY = "rsio-chat-nick";
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const input = $("input");
  const messages = $("messages");
  const usersEl = $("users");
  const countEl = $("count");
  const typingEl = $("typing");
  const nickEl = $("nick");
  const statusEl = $("status");
  const toggleButton = $("toggle-btn");

  // Before the first connection (or while offline) socket.id is undefined:
  // a random page id keeps client offsets unique then.
  const pageId = Math.random().toString(36).slice(2, 10);
  let counter = 0;
  const savedNick = localStorage.getItem(NICK_KEY) || undefined;
  nickEl.value = savedNick || "";

  const socket = io({
    ackTimeout: 10000,
    retries: 3,
    auth: { serverOffset: 0, nick: savedNick },
  });
  window.chatSocket = socket; // for the browser test and the curious

  let me = { id: null, nick: savedNick, worker: null };
  const seen = new Set(); // message ids shown (history and live may overlap)

  function line(cls, ...parts) {
    const item = document.createElement("li");
    if (cls) item.className = cls;
    for (const p of parts) {
      if (typeof p === "string") item.appendChild(document.createTextNode(p));
      else item.appendChild(p);
    }
    messages.appendChild(item);
    window.scrollTo(0, document.body.scrollHeight);
    return item;
  }

  function nickSpan(nick) {
    const s = document.createElement("span");
    s.className = "nick";
    s.textContent = nick;
    return s;
  }

  // ---- messages --------------------------------------------------------------

  socket.on("chat message", (msg, serverOffset, nick) => {
    if (typeof serverOffset === "number") {
      if (seen.has(serverOffset)) return;
      seen.add(serverOffset);
      if (serverOffset > socket.auth.serverOffset) socket.auth.serverOffset = serverOffset;
    }
    const item = nick ? line("message", nickSpan(nick), msg) : line("message", msg);
    item.dataset.id = serverOffset;
    stoppedTyping({ id: null, nick });
  });

  socket.on("private message", (m) => {
    line("private", nickSpan(`${m.from.nick} → you (private)`), m.text);
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text) return;
    input.value = "";
    typing(false);
    const pm = /^\/msg\s+(\S+)\s+([\s\S]+)$/.exec(text);
    if (pm) return sendPrivate(pm[1], pm[2]);
    if (/^\/msg\b/.test(text)) return line("error", "usage: /msg nick text");
    const clientOffset = `${socket.id || pageId}-${counter++}`;
    socket.emit("chat message", text, clientOffset);
  });

  function sendPrivate(to, text) {
    socket.emit("private message", to, text, (err, res) => {
      if (err) line("error", `private message to ${to} not delivered: ${err.message || err}`);
      else if (res && res.ok) line("private", nickSpan(`you → ${res.to} (private)`), text);
      else line("error", (res && res.error) || `private message to ${to} not delivered`);
    });
  }

  // ---- typing ------------------------------------------------------------------

  let typingSentAt = 0;
  let idleTimer = null;
  function typing(on) {
    clearTimeout(idleTimer);
    if (!on) {
      if (typingSentAt) socket.volatile.emit("typing", false);
      typingSentAt = 0;
      return;
    }
    const now = Date.now();
    if (now - typingSentAt > 2000) {
      typingSentAt = now;
      socket.volatile.emit("typing", true);
    }
    idleTimer = setTimeout(() => typing(false), 3000);
  }
  input.addEventListener("input", () => typing(input.value.length > 0));

  const typists = new Map(); // id → { nick, timer }
  function renderTyping() {
    const names = [...typists.values()].map((t) => t.nick);
    typingEl.textContent =
      names.length === 0 ? "" :
      names.length === 1 ? `${names[0]} is typing…` :
      names.length <= 3 ? `${names.join(", ")} are typing…` :
      "several people are typing…";
  }
  function stoppedTyping(user) {
    for (const [id, t] of typists) {
      if (id === user.id || (user.id === null && t.nick === user.nick)) {
        clearTimeout(t.timer);
        typists.delete(id);
      }
    }
    renderTyping();
  }
  socket.on("typing", (user, on) => {
    if (!user || user.id === socket.id) return;
    stoppedTyping(user);
    if (on) {
      // Typists resend every 2 s; forget one that went quiet.
      typists.set(user.id, { nick: user.nick, timer: setTimeout(() => stoppedTyping(user), 4000) });
    }
    renderTyping();
  });

  // ---- who is online -------------------------------------------------------------

  let asked = 0;
  let shown = 0;
  let refreshTimer = null;
  function refreshUsers() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      const mine = ++asked;
      socket.emit("users", (err, list) => {
        if (err || !Array.isArray(list) || mine < shown) return;
        shown = mine;
        renderUsers(list);
      });
    }, 100);
  }
  function renderUsers(list) {
    usersEl.replaceChildren();
    for (const u of list) {
      const item = document.createElement("li");
      item.textContent = u.nick;
      item.title = `${u.id} (worker ${u.worker})`;
      item.dataset.id = u.id;
      const w = document.createElement("span");
      w.className = "worker";
      w.textContent = `w${u.worker}`;
      item.appendChild(w);
      if (u.id === socket.id) {
        item.classList.add("me");
        item.appendChild(document.createTextNode(" (you)"));
      } else {
        item.addEventListener("click", () => {
          input.value = `/msg ${u.nick} `;
          input.focus();
        });
      }
      usersEl.appendChild(item);
    }
    countEl.textContent = String(list.length);
  }

  socket.on("user connected", (u) => {
    line("notice", `${u.nick} connected`);
    refreshUsers();
  });
  socket.on("user disconnected", (u) => {
    line("notice", `${u.nick} disconnected`);
    stoppedTyping(u);
    refreshUsers();
  });
  socket.on("user renamed", (u) => {
    if (u.id !== socket.id) line("notice", `${u.old} is now ${u.nick}`);
    refreshUsers();
  });

  // ---- nickname ------------------------------------------------------------------

  function setNick() {
    const nick = nickEl.value.trim();
    if (!nick || nick === me.nick) return;
    socket.emit("set nick", nick, (err, res) => {
      if (err || !res || !res.ok) {
        line("error", (res && res.error) || "could not change the nickname");
        nickEl.value = me.nick || "";
        return;
      }
      me.nick = res.nick;
      nickEl.value = res.nick;
      socket.auth.nick = res.nick;
      localStorage.setItem(NICK_KEY, res.nick);
      showStatus();
    });
  }
  nickEl.addEventListener("change", setNick);
  nickEl.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      nickEl.blur();
    }
  });

  // ---- connection ------------------------------------------------------------------

  function showStatus() {
    statusEl.textContent = socket.connected
      ? `connected as ${me.nick} · worker ${me.worker}${socket.recovered ? " · recovered" : ""}`
      : "disconnected";
  }
  socket.on("connect", () => {
    socket.emit("whoami", (err, who) => {
      if (err || !who) return;
      me = who;
      if (!nickEl.value || document.activeElement !== nickEl) nickEl.value = who.nick;
      showStatus();
    });
    refreshUsers();
    showStatus();
  });
  socket.on("disconnect", () => {
    typists.clear();
    renderTyping();
    showStatus();
  });

  toggleButton.addEventListener("click", (e) => {
    e.preventDefault();
    if (socket.connected) {
      toggleButton.innerText = "Connect";
      socket.disconnect();
    } else {
      toggleButton.innerText = "Disconnect";
      socket.connect();
    }
  });
})();
