/* Hearth chat page: the websocket, streaming text, and re-fetching turns from the server.
 *
 * The database is the source of truth. Live events only say "turn N moved on"; the page then
 * re-fetches that turn's server-rendered partial (htmx), so a live page and a reload show the
 * same HTML. The one exception is streamed text, which is shown as it arrives — always as
 * textContent, never as HTML — until the finished message is fetched as rendered markdown.
 *
 * Every run event carries a per-run `seq`. The page keeps the last one it saw of each run, drops
 * events it has seen already, and after a dropped socket asks for what it missed ("resume"), so
 * streamed text has no holes and no repeats. When the server can no longer replay them
 * ("run.resync") or a seq is skipped, the turn is re-read and the text goes on marked as partial.
 * A running turn that goes quiet is re-read too, until it shows it has ended: live events can
 * be lost (channels-redis drops them to a full channel without telling anyone).
 */
(function () {
  "use strict";

  const app = document.getElementById("app");
  if (!app) return;

  const WATCHDOG_SECONDS = 15;
  const SEND_TIMEOUT_SECONDS = 20;
  const MAX_BACKOFF_MS = 15000;
  const MAX_RESUME_RUNS = 20; // chat/consumers.py refuses more in one frame
  const REFRESH_ON = new Set(["run.started", "message.started", "message.completed", "tool.finished", "run.waiting", "run.finished", "run.failed"]);

  const el = {
    turns: () => document.getElementById("turns"),
    scroller: document.getElementById("scroller"),
    form: document.getElementById("composer"),
    text: document.getElementById("composer-text"),
    agent: document.getElementById("agent-select"),
    error: document.getElementById("composer-error"),
    conn: document.getElementById("conn-status"),
    title: document.getElementById("thread-title"),
    menu: document.getElementById("menu-btn"),
    scrim: document.getElementById("scrim"),
    threadList: document.getElementById("thread-list"),
  };

  const state = {
    thread: app.dataset.thread ? Number(app.dataset.thread) : null,
    socket: null,
    connected: false,
    everConnected: false,
    failures: 0,
    pending: null, // {ref, timer}: a message sent and not yet accepted or refused
    refs: 0,
    runTurn: new Map(), // run id -> turn number (most events carry only the run)
    streams: new Map(), // message id -> {text, resumed, run}
    runs: new Map(), // run id -> {seq, messageId, ended}: the last event seen, to resume after
    lastSeen: new Map(), // turn number -> time of its last event or fetch
    fetching: new Map(), // turn number -> "busy" | "again"
    openDetails: new Set(), // chips the user expanded, kept open across re-renders
    resyncTimer: null,
  };

  // ---- Helpers ------------------------------------------------------------------------------

  function turnUrl(turn) {
    // The template renders the URL for thread 0, turn 0; swap in the real numbers.
    return app.dataset.turnUrl.replace(/\/0\/turns\/0\/$/, "/" + state.thread + "/turns/" + turn + "/");
  }

  function nearBottom() {
    const s = el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  function scrollToBottom() {
    el.scroller.scrollTop = el.scroller.scrollHeight;
  }

  function showError(text) {
    el.error.textContent = text;
    el.error.hidden = false;
  }

  function hideError() {
    el.error.hidden = true;
    el.error.textContent = "";
  }

  function setConn(text, level) {
    el.conn.textContent = text;
    el.conn.className = "conn" + (level ? " is-" + level : "");
  }

  // ---- Turns --------------------------------------------------------------------------------

  function ensureTurn(turn) {
    let section = document.getElementById("turn-" + turn);
    if (section) return section;
    const empty = document.getElementById("empty-state");
    if (empty) empty.remove();
    section = document.createElement("section");
    section.className = "turn";
    section.id = "turn-" + turn;
    section.dataset.turn = String(turn);
    section.dataset.open = "1";
    const later = Array.from(el.turns().querySelectorAll(":scope > .turn")).find((t) => Number(t.dataset.turn) > turn);
    el.turns().insertBefore(section, later || null);
    return section;
  }

  function refreshTurn(turn) {
    if (!state.thread) return;
    if (state.fetching.has(turn)) {
      state.fetching.set(turn, "again");
      return;
    }
    state.fetching.set(turn, "busy");
    state.lastSeen.set(turn, Date.now());
    const section = ensureTurn(turn);
    const done = () => {
      const again = state.fetching.get(turn) === "again";
      state.fetching.delete(turn);
      if (again) refreshTurn(turn);
    };
    // The section is also the request's source, so htmx syncs requests per turn, not per page.
    htmx.ajax("GET", turnUrl(turn), { source: section, target: section, swap: "outerHTML" }).then(done, done);
  }

  function refreshOpenTurns() {
    const turns = new Set();
    document.querySelectorAll('#turns > .turn[data-open="1"]').forEach((t) => turns.add(Number(t.dataset.turn)));
    // The last turn too: it may have finished while we were away.
    const last = Array.from(document.querySelectorAll("#turns > .turn")).pop();
    if (last) turns.add(Number(last.dataset.turn));
    turns.forEach(refreshTurn);
  }

  // Re-reads the whole conversation: for events we cannot place (a run we never heard of).
  function resyncThread() {
    if (!state.thread || state.resyncTimer) return;
    state.resyncTimer = setTimeout(() => {
      state.resyncTimer = null;
      htmx.ajax("GET", window.location.pathname, { source: el.turns(), target: "#turns", select: "#turns", swap: "outerHTML" });
    }, 300);
  }

  function paintStream(node, stream) {
    node.textContent = stream.resumed ? "… " + stream.text.trimStart() : stream.text;
  }

  function appendDelta(ev) {
    let stream = state.streams.get(ev.message_id);
    if (!stream) {
      // We missed the start (events lost on the way): show the rest, marked as partial.
      stream = { text: "", resumed: true, run: ev.run };
      state.streams.set(ev.message_id, stream);
    }
    stream.text += ev.delta || "";
    const node = document.querySelector('[data-stream-for="' + Number(ev.message_id) + '"]');
    if (node) {
      const stick = nearBottom();
      paintStream(node, stream);
      if (stick) scrollToBottom();
    } else if (state.runTurn.has(ev.run)) {
      refreshTurn(state.runTurn.get(ev.run));
    }
  }

  // Runs on the page at load and on every piece of HTML htmx swaps in.
  function onContent(root) {
    const turns = root.matches && root.matches(".turn") ? [root] : Array.from(root.querySelectorAll(".turn"));
    turns.forEach((t) => {
      (t.dataset.runs || "").split(" ").filter(Boolean).forEach((run) => state.runTurn.set(Number(run), Number(t.dataset.turn)));
    });
    root.querySelectorAll("[data-stream-for]").forEach((node) => {
      const stream = state.streams.get(Number(node.dataset.streamFor));
      if (stream) paintStream(node, stream);
    });
    root.querySelectorAll('.msg-assistant:not([data-status="streaming"])').forEach((m) => state.streams.delete(Number(m.dataset.messageId)));
    root.querySelectorAll("details[data-key]").forEach((d) => {
      if (state.openDetails.has(d.dataset.key)) d.open = true;
    });
    const active = root.querySelector && root.querySelector(".thread-link.is-active .thread-title");
    if (active && state.thread) {
      el.title.textContent = active.textContent;
      document.title = active.textContent + " · Hearth";
    }
  }

  function refreshSidebar() {
    const url = app.dataset.sidebarUrl + (state.thread ? "?active=" + state.thread : "");
    htmx.ajax("GET", url, { source: el.threadList, target: el.threadList, swap: "innerHTML" });
  }

  // ---- Events from the server ---------------------------------------------------------------

  // Notes the event as the run's latest; false if it was seen already (a replay overlapping
  // live events). seq counts up per run: 0 (run.queued) starts the count again, null (the
  // sweeper's run.failed) is final.
  function track(ev) {
    const pos = state.runs.get(ev.run);
    if (pos && pos.seq != null && ev.seq > 0) {
      if (ev.seq <= pos.seq) return false;
      if (ev.seq > pos.seq + 1) eventsLost(ev.run);
    }
    const ended = ev.seq == null || ev.type === "run.finished" || ev.type === "run.failed";
    state.runs.set(ev.run, { seq: ev.seq == null ? null : ev.seq, messageId: ev.message_id == null ? null : ev.message_id, ended });
    return true;
  }

  // Some of the run's events are gone for good: its streamed text has a hole, so it starts
  // again from the next delta, marked as partial, and the turn is re-read from the server.
  function eventsLost(run) {
    state.streams.forEach((stream) => {
      if (stream.run === run) {
        stream.text = "";
        stream.resumed = true;
      }
    });
    if (state.runTurn.has(run)) refreshTurn(state.runTurn.get(run));
  }

  function onResync(ev) {
    state.runTurn.set(ev.run, ev.turn);
    // The count starts afresh from whatever comes next.
    state.runs.set(ev.run, { seq: null, messageId: null, ended: false });
    eventsLost(ev.run);
  }

  function onFrame(ev) {
    if (ev.type === "message.accepted") return onAccepted(ev);
    if (ev.type === "error") return onRefused(ev);
    if (ev.type === "subscribed" || ev.thread == null || ev.thread !== state.thread) return;
    if (ev.type === "run.resync") return onResync(ev);

    if (ev.turn != null && ev.run != null) state.runTurn.set(ev.run, ev.turn);
    if (ev.run != null && !track(ev)) return;
    const turn = state.runTurn.get(ev.run);
    if (turn != null) state.lastSeen.set(turn, Date.now());
    if (ev.type === "message.streamed") return appendDelta(ev);
    if (ev.type === "message.started") state.streams.set(ev.message_id, { text: "", resumed: false, run: ev.run });

    if (turn == null) {
      // Our own new message's events can beat message.accepted; that will fetch the turn.
      if (!state.pending) resyncThread();
      return;
    }
    if (ev.type === "run.queued") {
      ensureTurn(turn);
      refreshTurn(turn);
    } else if (REFRESH_ON.has(ev.type)) {
      refreshTurn(turn);
    }
  }

  function onAccepted(ev) {
    if (!state.pending || state.pending.ref !== ev.ref) return;
    clearTimeout(state.pending.timer);
    state.pending = null;
    setBusy(false);
    // Only now is the message safely stored, so only now does the text leave the box.
    el.text.value = "";
    autosize();
    hideError();
    if (state.thread !== ev.thread) {
      state.thread = ev.thread;
      app.dataset.thread = String(ev.thread);
      history.replaceState(null, "", ev.url);
    }
    state.runTurn.set(ev.run, ev.turn);
    ensureTurn(ev.turn);
    refreshTurn(ev.turn);
    refreshSidebar();
    scrollToBottom();
  }

  function onRefused(ev) {
    if (state.pending && (ev.ref == null || state.pending.ref === ev.ref)) {
      clearTimeout(state.pending.timer);
      state.pending = null;
      setBusy(false);
    }
    showError(ev.error || "The server refused that.");
  }

  // ---- The socket ---------------------------------------------------------------------------

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + app.dataset.wsPath);
    state.socket = socket;
    const slow = setTimeout(() => { if (!state.connected) setConn("Connecting…", "warn"); }, 1000);

    socket.addEventListener("open", () => {
      clearTimeout(slow);
      const reconnected = state.everConnected;
      state.connected = true;
      state.everConnected = true;
      state.failures = 0;
      setConn("");
      if (state.thread) {
        // Resuming joins the thread as subscribing does, and replays what we missed meanwhile.
        const runs = resumePositions();
        send(runs.length ? { type: "resume", thread: state.thread, runs } : { type: "subscribe", thread: state.thread });
      }
      if (reconnected) refreshOpenTurns();
      flushPending();
    });
    socket.addEventListener("message", (e) => {
      let ev;
      try {
        ev = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      if (ev && typeof ev === "object") onFrame(ev);
    });
    socket.addEventListener("close", (e) => {
      clearTimeout(slow);
      state.connected = false;
      state.socket = null;
      // A message typed before the socket opened waits for it; one already sent may or may
      // not have been stored, so only the person can tell whether to send it again.
      if (state.pending && state.pending.sent) {
        clearTimeout(state.pending.timer);
        state.pending = null;
        setBusy(false);
        showError("The connection dropped before the server confirmed your message. It is still here; check the chat, then send it again if it is missing.");
        resyncThread();
      }
      // 4401: not logged in; 4403: signed out by `login_url --rotate`. Retrying cannot help.
      if (e.code === 4401 || e.code === 4403) {
        setConn("Signed out", "error");
        showError("Signed out — get a new link with `make login` on the server.");
        return;
      }
      // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** state.failures) * (0.75 + Math.random() * 0.5);
      state.failures += 1;
      setConn(state.everConnected ? "Reconnecting…" : "Connecting…", "warn");
      setTimeout(connect, delay);
    });
  }

  // The runs to resume and the last event seen of each (chat/consumers.py has the format).
  function resumePositions() {
    const runs = [];
    state.runs.forEach((pos, run) => {
      if (!pos.ended) runs.push({ run, after: pos.seq, message_id: pos.seq == null ? null : pos.messageId });
    });
    // A page loaded mid-answer has heard nothing of its open runs yet: from their start.
    document.querySelectorAll('#turns > .turn[data-open="1"]').forEach((t) => {
      const run = Number((t.dataset.runs || "").split(" ").filter(Boolean).pop());
      if (run && !state.runs.has(run)) runs.push({ run, after: null, message_id: null });
    });
    return runs.slice(-MAX_RESUME_RUNS);
  }

  function send(frame) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  // A running turn that has gone quiet is re-read, again every WATCHDOG_SECONDS until the
  // server shows it ended: its final event may have been lost on the way, and a lost
  // run.finished must not leave a spinner for good.
  function watchdog() {
    const now = Date.now();
    document.querySelectorAll('#turns > .turn[data-open="1"]').forEach((t) => {
      const turn = Number(t.dataset.turn);
      const seen = state.lastSeen.get(turn) || 0;
      if (now - seen > WATCHDOG_SECONDS * 1000) refreshTurn(turn);
    });
  }

  // ---- The composer -------------------------------------------------------------------------

  function setBusy(busy) {
    el.form.classList.toggle("is-busy", busy);
    el.text.readOnly = busy;
  }

  function submit() {
    if (state.pending) return;
    const ref = "c" + ++state.refs;
    const timer = setTimeout(() => {
      if (state.pending && state.pending.ref === ref) {
        state.pending = null;
        setBusy(false);
        showError(state.connected
          ? "The server did not confirm your message. It is still here; try again."
          : "Could not reach the server. Your message is still here; it can be sent once the connection is back.");
      }
    }, SEND_TIMEOUT_SECONDS * 1000);
    // Validation (empty, too long) is the server's: one rule, one message, for every channel.
    const frame = { type: "message.send", thread: state.thread, agent: el.agent.value || null, text: el.text.value, ref };
    state.pending = { ref, timer, frame, sent: false };
    setBusy(true);
    hideError();
    flushPending();
  }

  // Sends the pending message if the socket is open; otherwise the socket's "open" will.
  function flushPending() {
    if (state.pending && !state.pending.sent && send(state.pending.frame)) state.pending.sent = true;
  }

  function autosize() {
    el.text.style.height = "auto";
    el.text.style.height = el.text.scrollHeight + "px";
  }

  el.form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  el.text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  });
  el.text.addEventListener("input", autosize);
  el.agent.addEventListener("change", () => {
    const option = el.agent.selectedOptions[0];
    if (option) el.text.placeholder = "Message " + option.textContent.trim() + "…";
  });

  // ---- Page chrome --------------------------------------------------------------------------

  function setNav(open) {
    app.classList.toggle("nav-open", open);
    el.scrim.hidden = !open;
    el.menu.setAttribute("aria-expanded", String(open));
  }
  el.menu.addEventListener("click", () => setNav(!app.classList.contains("nav-open")));
  el.scrim.addEventListener("click", () => setNav(false));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") setNav(false); });

  document.addEventListener("toggle", (e) => {
    const d = e.target;
    if (!(d instanceof HTMLDetailsElement) || !d.dataset.key) return;
    if (d.open) state.openDetails.add(d.dataset.key);
    else state.openDetails.delete(d.dataset.key);
  }, true);

  let stickAfterSwap = false;
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const xhr = e.detail.xhr;
    // A partial that came back as the sign-in page means the session ended.
    if (xhr && xhr.responseURL && new URL(xhr.responseURL).pathname === app.dataset.loginHelpUrl) {
      e.detail.shouldSwap = false;
      setConn("Signed out", "error");
      showError("You are signed out. Get a new login link with `make login` on the server.");
      return;
    }
    stickAfterSwap = nearBottom();
  });
  document.body.addEventListener("htmx:afterSwap", () => { if (stickAfterSwap) scrollToBottom(); });
  document.body.addEventListener("htmx:responseError", (e) => {
    const config = e.detail.requestConfig || {};
    if (config.verb && config.verb !== "get") showError(e.detail.xhr.responseText || "That did not work.");
  });
  document.body.addEventListener("htmx:sendError", () => showError("Could not reach the server."));

  htmx.onLoad(onContent);

  if (window.location.hash && document.querySelector(window.location.hash.replace(/[^#\w-]/g, ""))) {
    document.querySelector(window.location.hash.replace(/[^#\w-]/g, "")).scrollIntoView({ block: "center" });
  } else {
    scrollToBottom();
  }
  connect();
  setInterval(watchdog, 3000);
  if (!("ontouchstart" in window)) el.text.focus();
})();
