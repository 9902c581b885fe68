// Drives web/connection.js with a fake WebSocket (no network) and reports what it did.
// Run in the page with page.evaluate(); see test_ui.py.
async () => {
  const { Connection } = await import("/connection.js");
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close() {}
    deliver(event) {
      this.onmessage?.({ data: JSON.stringify({ session_id: "s1", ...event }) });
    }
    drop(code) {
      this.onclose?.({ code, reason: "" });
    }
  }
  const store = new Map();
  const storage = {
    getItem: (key) => store.get(key) ?? null,
    setItem: (key, value) => store.set(key, value),
    removeItem: (key) => store.delete(key),
  };
  const pause = () => new Promise((resolve) => setTimeout(resolve, 30));
  const conn = new Connection({
    url: "ws://gateway.test/ws",
    storage,
    WebSocketImpl: FakeSocket,
    backoff: { baseMs: 1, maxMs: 2 },
  });
  const processed = [];
  const resets = [];
  conn.addEventListener("server", (e) => processed.push(e.detail.event.seq));
  conn.addEventListener("reset", (e) => resets.push(e.detail.code));
  const ready = (seq, resumed) => ({
    type: "session.ready",
    seq,
    resume_token: "tok",
    resumed,
    language: "en",
    provider: "offline",
    model: "m",
  });

  conn.start();
  const first = sockets[0];
  first.deliver(ready(0, false));
  const id = conn.sendMessage("hello");
  first.deliver({ type: "response.start", seq: 1, turn_id: "t1", in_reply_to: "someone-else" });
  first.deliver({ type: "response.tts", seq: 2, turn_id: "t1", index: 0, text: "A." });
  first.deliver({ type: "response.tts", seq: 2, turn_id: "t1", index: 0, text: "A." });
  first.deliver({ type: "heartbeat", seq: 2 });
  first.drop(1006);
  const stateAfterDrop = conn.state;
  await pause();

  const second = sockets[1];
  second.deliver(ready(2, true));
  const resent = second.sent.filter((e) => e.type === "user.message");
  for (const seq of [1, 2, 3]) {
    second.deliver({ type: "response.tts", seq, turn_id: "t1", index: seq - 1, text: "B." });
  }
  second.deliver({ type: "response.start", seq: 4, turn_id: "t2", in_reply_to: id });
  conn.send({ type: "ping" });
  second.drop(4409);
  await pause();
  const afterTakeover = { state: conn.state, sockets: sockets.length };

  conn.retryNow();
  const third = sockets[2];
  third.deliver(ready(4, true));
  const resentAfterAnswer = third.sent.filter((e) => e.type === "user.message").length;
  third.drop(4404);
  await pause();

  return {
    urls: sockets.map((s) => s.url),
    processed,
    stateAfterDrop,
    resent,
    secondSent: second.sent.map((e) => e.type),
    afterTakeover,
    resentAfterAnswer,
    resets,
    stored: store.get("voice-gateway.session") ?? null,
    finalState: conn.state,
  };
}
