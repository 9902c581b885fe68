// The connection indicator in the header, driven by the Connection's "status" events.
// Sighted users see a live countdown; screen readers hear each change of state once.

const ANNOUNCE = {
  open: "Connected to the gateway.",
  connecting: "Connection lost. Reconnecting.",
  down: "The gateway cannot be reached. Still trying.",
  ended: "The conversation has ended.",
  elsewhere: "This conversation was opened in another tab or window.",
};

export class StatusView {
  /**
   * @param {object} elements   {status, text, live, retry}
   * @param {import("./connection.js").Connection} conn
   * @param {import("./notices.js").Notices} notices
   * @param {object} actions    {onTakenOver, newConversation}
   */
  constructor(elements, conn, notices, { onTakenOver, newConversation }) {
    this.el = elements;
    this.conn = conn;
    this.notices = notices;
    this.onTakenOver = onTakenOver;
    this.newConversation = newConversation;
    this.countdown = 0;
    conn.addEventListener("status", ({ detail }) => this.render(detail));
    elements.retry.addEventListener("click", () => conn.retryNow());
  }

  render({ state, delayMs, failures }) {
    const { conn, notices } = this;
    clearInterval(this.countdown);
    this.el.retry.hidden = true;
    if (state === "connecting") {
      if (failures >= 2) this._set("down", "Gateway unreachable, trying again…");
      else this._set("connecting", conn.info ? "Reconnecting…" : "Connecting…");
    } else if (state === "open") {
      this._set("open", "Connected");
      notices.dismiss("connection");
    } else if (state === "waiting") {
      // After a drop, one failed attempt may be bad luck; two (or none ever worked) is a problem.
      const unreachable = failures >= 2 || (conn.info === null && failures >= 1);
      const until = Date.now() + delayMs;
      const tick = () => {
        const seconds = Math.max(1, Math.ceil((until - Date.now()) / 1000));
        if (unreachable) this._set("down", `Gateway unreachable, retrying in ${seconds} s`);
        else this._set("connecting", `Connection lost, reconnecting in ${seconds} s`);
      };
      tick();
      this.countdown = setInterval(tick, 250);
      this.el.retry.hidden = false;
      if (unreachable) {
        notices.show("connection", {
          text:
            "Can't reach the gateway. Check your network or whether the gateway is running. " +
            "This page keeps trying and picks the conversation up where it left off.",
        });
      }
    } else if (state === "ended") {
      this._set("ended", "Conversation ended");
    } else if (state === "taken-over") {
      this._set("elsewhere", "Open elsewhere");
      this.onTakenOver();
      notices.show("connection", {
        kind: "info",
        text: "This conversation was opened in another tab or window, so this page stopped following it.",
        actions: [
          { label: "Continue here", run: () => conn.retryNow() },
          { label: "New conversation", run: this.newConversation },
        ],
      });
    }
  }

  _set(kind, text) {
    if (this.el.status.dataset.state !== kind && (kind !== "connecting" || this.conn.info)) {
      this.el.live.textContent = ANNOUNCE[kind] ?? text;
    }
    this.el.status.dataset.state = kind;
    this.el.text.textContent = text;
  }
}
