// The WebSocket side of the native protocol v1 (docs/protocol.md), with no DOM.
//
// One Connection holds one conversation session: it connects, keeps the
// session id and resume token in sessionStorage, drops events it has already
// processed (by seq), reconnects with exponential back-off and jitter, resumes
// from the last processed seq, and resends user messages that were not answered.
//
// It reports through DOM events (it is an EventTarget):
//   "status"  {state, attempt, delayMs, failures}  state: connecting | open | waiting | ended | taken-over
//   "ready"   {event, restoring}                   a session.ready was processed
//   "resync"  {event}                              replace the transcript with event.transcript
//   "server"  {event, history}                     a session event, each seq once and in order;
//                                                  history: shown before a page reload (do not speak it)
//   "reset"   {code, reason}                       the stored session is gone (4401/4404/4400); a new one starts
//   "closed"  {code, reason}                       a socket closed (for diagnostics)

const STORAGE_KEY = "voice-gateway.session";
const CONNECTION_EVENTS = new Set([
  "session.ready",
  "session.resync",
  "session.reconnect",
  "heartbeat",
  "pong",
]);
// Close codes after which reconnecting is pointless (docs/protocol.md, client recipe).
const CODE_NORMAL = 1000;
const CODE_BAD_RESUME = 4400;
const CODE_BAD_TOKEN = 4401;
const CODE_NO_SESSION = 4404;
const CODE_TAKEN_OVER = 4409;
const MAX_REMEMBERED_MESSAGES = 200;
const MAX_OUTBOX = 100;

/** Back-off before reconnect attempt `attempt` (0-based): base doubling to max, ± jitter. */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 10_000, jitter = 0.3, random = Math.random } = {}) {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(raw * (1 + jitter * (2 * random() - 1)));
}

/** A fresh message id (crypto.randomUUID where available, a random string otherwise). */
export function newMessageId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `m-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

export class Connection extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.url            ws:// or wss:// URL of /ws
   * @param {Storage} [options.storage]     where the session survives reloads (sessionStorage)
   * @param {typeof WebSocket} [options.WebSocketImpl]
   * @param {number} [options.pingIntervalMs]  application ping while open (0: none; the
   *   app uses 25 s so a silent user does not hit the gateway's idle timeout)
   * @param {number} [options.idleTimeoutMs]   reconnect when nothing arrived for this long
   *   (the gateway sends a heartbeat after GATEWAY_HEARTBEAT_S, 20 s by default, of quiet)
   * @param {number} [options.readyTimeoutMs]  reconnect when no session.ready came this soon
   * @param {object} [options.backoff]         options for backoffDelay
   */
  constructor({
    url,
    storage = globalThis.sessionStorage,
    WebSocketImpl = globalThis.WebSocket,
    pingIntervalMs = 0,
    idleTimeoutMs = 75_000,
    readyTimeoutMs = 10_000,
    backoff = {},
  }) {
    super();
    this.url = url;
    this.storage = storage;
    this.WebSocketImpl = WebSocketImpl;
    this.pingIntervalMs = pingIntervalMs;
    this.idleTimeoutMs = idleTimeoutMs;
    this.readyTimeoutMs = readyTimeoutMs;
    this.backoff = backoff;

    this.state = "idle";
    this.ws = null;
    this.sessionId = null;
    this.resumeToken = null;
    this.lastSeq = 0; // newest seq processed
    this.historySeq = 0; // events up to this seq were shown before a page reload
    this.messages = new Map(); // id -> {text, answered}
    this.outbox = []; // events to send once the session is ready, in order
    this.attempt = 0; // reconnect attempts since the last session.ready
    this.failures = 0; // sockets in a row that closed without a session.ready
    this.info = null; // the latest session.ready
    this._ready = false;
    this._timer = null;
    this._pingTimer = null;
    this._idleTimer = null;
    this._load();
  }

  // --- public API ------------------------------------------------------------

  /** Connect: resume the stored session (replaying it from the start), or start one. */
  start() {
    if (this.sessionId) {
      // After a page reload the transcript is empty: ask for the whole replay
      // and remember which events the page had already processed.
      this.historySeq = this.lastSeq;
      this.lastSeq = 0;
    }
    this._connect();
  }

  /** True while a session is ready on an open socket. */
  get isOpen() {
    return this._ready && this.ws !== null;
  }

  /** Send a user.message with a new id; it is resent after a reconnect until answered. */
  sendMessage(text) {
    const id = newMessageId();
    this.messages.set(id, { text, answered: false });
    this._trimMessages();
    this._save();
    this.send({ type: "user.message", id, text });
    return id;
  }

  /** The text of a user message this page sent (or a previous load of it), if known. */
  messageText(id) {
    return this.messages.get(id)?.text ?? null;
  }

  /** Send a client event now, or once the session is ready again. */
  send(event) {
    if (this.isOpen) {
      this.ws.send(JSON.stringify(event));
      return true;
    }
    this.outbox.push(event);
    if (this.outbox.length > MAX_OUTBOX) this.outbox.shift();
    // The user is acting: do not make them wait for the back-off.
    if (this.state === "waiting") this.retryNow();
    return false;
  }

  /** End the current session (session.end) and start a new one. */
  newConversation() {
    const old = this.ws;
    const wasOpen = this.isOpen;
    this._detach();
    if (old && wasOpen) {
      try {
        old.send(JSON.stringify({ type: "session.end" }));
      } catch (error) {
        console.warn("could not end the old session", error);
      }
      // The gateway closes with 1000 after session.ended; make sure it goes.
      setTimeout(() => old.close(CODE_NORMAL), 2000);
    } else if (old) {
      old.close(CODE_NORMAL);
    }
    this._forget();
    this.outbox = [];
    this.attempt = 0;
    this.failures = 0;
    this._connect();
  }

  /** Reconnect at once (after a back-off wait, or to take a session back after 4409). */
  retryNow() {
    if (this.state === "waiting" || this.state === "taken-over") {
      clearTimeout(this._timer);
      this._timer = null;
      this._connect();
    }
  }

  /** Close for good (the page goes away). */
  dispose() {
    this._detach();
    this.ws?.close(CODE_NORMAL);
    this.ws = null;
  }

  // --- socket life -------------------------------------------------------------

  _connect() {
    clearTimeout(this._timer);
    this._timer = null;
    this._ready = false;
    let url = this.url;
    if (this.sessionId) {
      const query = new URLSearchParams({
        session_id: this.sessionId,
        resume_token: this.resumeToken,
        last_seq: String(this.lastSeq),
      });
      url += (url.includes("?") ? "&" : "?") + query;
    }
    this._setState("connecting");
    let ws;
    try {
      ws = new this.WebSocketImpl(url);
    } catch (error) {
      console.warn("could not open the WebSocket", error);
      this._scheduleReconnect(1006);
      return;
    }
    this.ws = ws;
    ws.onmessage = (message) => this._onFrame(message.data);
    ws.onclose = (close) => this._onClose(close.code, close.reason);
    ws.onerror = () => {}; // a close event always follows
    this._armIdle();
  }

  _detach() {
    clearTimeout(this._timer);
    clearInterval(this._pingTimer);
    clearTimeout(this._idleTimer);
    this._timer = this._pingTimer = this._idleTimer = null;
    if (this.ws) {
      this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
    }
    this._ready = false;
  }

  _onClose(code, reason) {
    this._detach();
    this.ws = null;
    this.dispatchEvent(new CustomEvent("closed", { detail: { code, reason } }));
    if (code === CODE_NORMAL) {
      this._setState("ended");
    } else if (code === CODE_TAKEN_OVER) {
      this._setState("taken-over");
    } else if (code === CODE_NO_SESSION || code === CODE_BAD_TOKEN || code === CODE_BAD_RESUME) {
      this._forget();
      this.outbox = [];
      this.dispatchEvent(new CustomEvent("reset", { detail: { code, reason } }));
      this.attempt = 0;
      this._connect();
    } else {
      this._scheduleReconnect(code);
    }
  }

  _scheduleReconnect(code) {
    if (!this._wasReadyThisSocket) this.failures += 1;
    const delayMs = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this._setState("waiting", { delayMs, code });
    this._timer = setTimeout(() => this._connect(), delayMs);
  }

  _armIdle() {
    clearTimeout(this._idleTimer);
    const limitMs = this._ready ? this.idleTimeoutMs : this.readyTimeoutMs;
    this._idleTimer = setTimeout(() => {
      // Nothing arrived, not even a heartbeat: the socket is dead without knowing it.
      const ws = this.ws;
      this._detach();
      this.ws = null;
      ws?.close(4000, "idle");
      this._scheduleReconnect(4000);
    }, limitMs);
  }

  // --- events ------------------------------------------------------------------

  _onFrame(data) {
    this._armIdle();
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      console.warn("ignored a frame that is not JSON");
      return;
    }
    if (!event || typeof event.type !== "string") return;
    if (CONNECTION_EVENTS.has(event.type)) {
      this._onConnectionEvent(event);
      return;
    }
    const seq = Number(event.seq);
    if (!Number.isInteger(seq) || seq <= this.lastSeq) return; // already processed
    this.lastSeq = seq;
    if (event.type === "response.start" && event.in_reply_to) this._answered(event.in_reply_to);
    if (event.type === "user.duplicate") this._answered(event.id);
    this._save();
    const history = seq <= this.historySeq;
    this.dispatchEvent(new CustomEvent("server", { detail: { event, history } }));
  }

  _onConnectionEvent(event) {
    if (event.type === "heartbeat" || event.type === "pong") return;
    if (event.type === "session.reconnect") return; // the close (1012) that follows reconnects
    if (event.type === "session.ready") {
      const restoring = this.historySeq > 0 && event.resumed;
      this.sessionId = event.session_id;
      this.resumeToken = event.resume_token;
      this.lastSeq = Number(event.seq) || 0;
      this.info = event;
      this._ready = true;
      this._armIdle(); // from now on, heartbeats keep it alive
      this._wasReadyThisSocket = true;
      this.attempt = 0;
      this.failures = 0;
      this._save();
      this._setState("open");
      this.dispatchEvent(new CustomEvent("ready", { detail: { event, restoring } }));
      this._flush(event.resumed);
      clearInterval(this._pingTimer);
      if (this.pingIntervalMs > 0) {
        this._pingTimer = setInterval(() => this.send({ type: "ping" }), this.pingIntervalMs);
      }
      return;
    }
    if (event.type === "session.resync") {
      this.lastSeq = Number(event.seq) || 0;
      this.historySeq = Math.min(this.historySeq, this.lastSeq);
      this._save();
      this.dispatchEvent(new CustomEvent("resync", { detail: { event } }));
    }
  }

  /** After session.ready: unanswered messages sent on earlier sockets, then the outbox. */
  _flush(resumed) {
    const queued = new Set(this.outbox.filter((e) => e.type === "user.message").map((e) => e.id));
    if (resumed) {
      for (const [id, message] of this.messages) {
        if (!message.answered && !queued.has(id)) {
          this.ws.send(JSON.stringify({ type: "user.message", id, text: message.text }));
        }
      }
    }
    const outbox = this.outbox;
    this.outbox = [];
    for (const event of outbox) this.ws.send(JSON.stringify(event));
  }

  _answered(id) {
    const message = this.messages.get(id);
    if (message && !message.answered) message.answered = true;
  }

  _setState(state, extra = {}) {
    if (state === "connecting") this._wasReadyThisSocket = false;
    this.state = state;
    const detail = { state, attempt: this.attempt, failures: this.failures, ...extra };
    this.dispatchEvent(new CustomEvent("status", { detail }));
  }

  // --- storage -----------------------------------------------------------------

  _forget() {
    this.sessionId = null;
    this.resumeToken = null;
    this.lastSeq = 0;
    this.historySeq = 0;
    this.messages = new Map();
    this.info = null;
    try {
      this.storage?.removeItem(STORAGE_KEY);
    } catch (error) {
      console.warn("sessionStorage is not available", error);
    }
  }

  _trimMessages() {
    while (this.messages.size > MAX_REMEMBERED_MESSAGES) {
      this.messages.delete(this.messages.keys().next().value);
    }
  }

  _save() {
    if (!this.sessionId || !this.storage) return;
    const data = {
      session_id: this.sessionId,
      resume_token: this.resumeToken,
      // While a reload's replay is under way, keep the newer seq already seen.
      last_seq: Math.max(this.lastSeq, this.historySeq),
      messages: [...this.messages].map(([id, m]) => [id, m.text, m.answered]),
    };
    try {
      this.storage.setItem(STORAGE_KEY, JSON.stringify(data));
    } catch (error) {
      console.warn("could not save the session", error);
    }
  }

  _load() {
    let data;
    try {
      data = JSON.parse(this.storage?.getItem(STORAGE_KEY) ?? "null");
    } catch {
      data = null;
    }
    if (!data || typeof data.session_id !== "string" || typeof data.resume_token !== "string") return;
    this.sessionId = data.session_id;
    this.resumeToken = data.resume_token;
    this.lastSeq = Number.isInteger(data.last_seq) && data.last_seq >= 0 ? data.last_seq : 0;
    for (const entry of Array.isArray(data.messages) ? data.messages : []) {
      const [id, text, answered] = entry;
      if (typeof id === "string" && typeof text === "string") {
        this.messages.set(id, { text, answered: Boolean(answered) });
      }
    }
  }
}
