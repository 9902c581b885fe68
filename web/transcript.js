// Rendering the conversation: user turns, assistant turns chunk by chunk, turn status.
// All text goes in through textContent: model output is never parsed as HTML.

const STATUS_TEXT = {
  interrupted: "Interrupted",
  superseded: "Superseded by your next message",
  failed: "Failed",
  truncated: "Interrupted: kept what you heard",
};

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function hiddenLabel(text) {
  return element("span", "visually-hidden", text);
}

export class Transcript {
  /**
   * @param {HTMLOListElement} list      the role="log" list that holds the turns
   * @param {HTMLElement} scroller       the element that scrolls
   * @param {() => void} [onChange]      called after every change (e.g. for the empty state)
   */
  constructor(list, scroller, onChange = () => {}) {
    this.list = list;
    this.scroller = scroller;
    this.onChange = onChange;
  }

  get isEmpty() {
    return this.list.childElementCount === 0;
  }

  clear() {
    this.list.replaceChildren();
    this._changed(false);
  }

  /** The user's message, shown as soon as it is sent. */
  addUser(id, text, { pending = false } = {}) {
    const stick = pending || this._nearBottom(); // a message just sent always shows
    const item = element("li", "turn turn--user");
    if (id) item.dataset.messageId = id;
    if (pending) item.dataset.pending = "true";
    const bubble = element("div", "bubble");
    bubble.append(hiddenLabel("You said: "), element("p", "text", text));
    item.append(bubble);
    this.list.append(item);
    this._changed(stick);
    return item;
  }

  hasUser(id) {
    return this._user(id) !== null;
  }

  /** The gateway answered (or recognised as a duplicate) message `id`. */
  delivered(id) {
    const item = this._user(id);
    if (item) delete item.dataset.pending;
  }

  /** An assistant turn begins (streaming), right after the message it answers. */
  startAssistant(turnId, inReplyTo = null) {
    const existing = this._turn(turnId);
    if (existing) return existing;
    const stick = this._nearBottom();
    const item = element("li", "turn turn--assistant");
    item.dataset.turnId = turnId;
    item.dataset.status = "streaming";
    const bubble = element("div", "bubble");
    const text = element("p", "text");
    const typing = element("span", "typing");
    typing.setAttribute("aria-hidden", "true");
    typing.append(element("span"), element("span"), element("span"));
    bubble.append(hiddenLabel("Assistant: "), text, typing);
    const meta = element("p", "meta");
    meta.hidden = true;
    item.append(bubble, meta);
    const question = this._user(inReplyTo);
    if (question) question.after(item);
    else this.list.append(item);
    this._changed(stick);
    return item;
  }

  /** One response.tts chunk, appended where its index belongs. */
  addChunk(turnId, index, text) {
    const stick = this._nearBottom();
    const item = this.startAssistant(turnId);
    const paragraph = item.querySelector(".text");
    const chunk = element("span", "chunk", text);
    chunk.dataset.index = String(index);
    const after = [...paragraph.children].find((c) => Number(c.dataset.index) > index);
    if (after) {
      paragraph.insertBefore(chunk, after);
      paragraph.insertBefore(document.createTextNode(" "), after);
    } else {
      if (paragraph.childElementCount > 0) paragraph.append(" ");
      paragraph.append(chunk);
    }
    this._changed(stick);
  }

  /** Highlight the chunk being spoken (or clear it). */
  speaking(turnId, index, on) {
    const chunk = this._turn(turnId)?.querySelector(`.chunk[data-index="${Number(index)}"]`);
    chunk?.classList.toggle("chunk--speaking", on);
    if (!on) chunk?.classList.add("chunk--spoken");
  }

  /** Stop highlighting anything as being spoken. */
  silence() {
    for (const chunk of this.list.querySelectorAll(".chunk--speaking")) {
      chunk.classList.remove("chunk--speaking");
    }
  }

  /** response.end: the turn's final status. */
  endTurn(turnId, { status, reason, spokenText }) {
    const stick = this._nearBottom();
    const item = this.startAssistant(turnId);
    item.dataset.status = status;
    if (status !== "completed") {
      let label = STATUS_TEXT[status] ?? status;
      if (reason && status !== "superseded" && reason !== "interrupted by the client") {
        label += `: ${reason}`;
      }
      this._meta(item, label);
      if (typeof spokenText === "string") this._markHeard(item, spokenText);
    }
    this._changed(stick);
  }

  /** history.truncated: a completed reply was cut to what the user heard. */
  truncate(turnId, spokenText) {
    const item = this._turn(turnId);
    if (!item) return;
    item.dataset.truncated = "true";
    this._meta(item, STATUS_TEXT.truncated);
    this._markHeard(item, spokenText);
  }

  /** session.resync: the conversation so far replaces everything shown. */
  replace(messages) {
    this.list.replaceChildren();
    for (const message of messages) {
      if (message.role === "user") {
        this.addUser(null, message.text);
      } else {
        const item = element("li", "turn turn--assistant");
        item.dataset.status = "completed";
        const bubble = element("div", "bubble");
        bubble.append(hiddenLabel("Assistant: "), element("p", "text", message.text));
        item.append(bubble);
        this.list.append(item);
      }
    }
    this._changed(true);
  }

  /** The user text that message `id` started, when its bubble is shown. */
  _user(id) {
    if (!id) return null;
    return [...this.list.querySelectorAll(".turn--user")].find((n) => n.dataset.messageId === id) ?? null;
  }

  _turn(turnId) {
    return [...this.list.querySelectorAll(".turn--assistant")].find((n) => n.dataset.turnId === turnId) ?? null;
  }

  _meta(item, text) {
    let meta = item.querySelector(".meta");
    if (!meta) {
      meta = element("p", "meta");
      item.append(meta);
    }
    meta.textContent = text;
    meta.hidden = false;
  }

  /** Mark what the user did not hear: the text of the turn past `spokenText`. */
  _markHeard(item, spokenText) {
    let rest = spokenText.trim();
    for (const chunk of item.querySelectorAll(".chunk")) {
      const text = chunk.textContent;
      chunk.replaceChildren(text); // undo an earlier partial mark
      chunk.classList.remove("chunk--unheard");
      if (rest && rest.startsWith(text.trim())) {
        rest = rest.slice(text.trim().length).trim();
      } else if (rest && text.startsWith(rest)) {
        // Heard part of this chunk: its tail was not.
        chunk.replaceChildren(rest, element("span", "chunk__unheard", text.slice(rest.length)));
        rest = "";
      } else {
        chunk.classList.add("chunk--unheard");
        rest = "";
      }
    }
  }

  _nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  _changed(stick) {
    this.onChange();
    if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
