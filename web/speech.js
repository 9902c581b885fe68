// Speaking replies with speechSynthesis: chunks are queued as they arrive, what was
// actually heard is tracked from utterance "end" and "boundary" events, and a
// barge-in cancels speech at once and says what the user heard of each turn.
//
// Events (it is an EventTarget):
//   "chunkstart" {turnId, index}   a chunk started playing
//   "chunkend"   {turnId, index}   a chunk finished playing (send playback.ack)
//   "idle"       {}                nothing is playing or about to
//   "failed"     {error}           the speech engine refused an utterance

const CANCEL_ERRORS = new Set(["interrupted", "canceled"]);

/** The end of the word that starts at `charIndex` (for boundary events without charLength). */
function wordEnd(text, charIndex, charLength) {
  if (charLength > 0) return Math.min(text.length, charIndex + charLength);
  const rest = text.slice(charIndex);
  const match = rest.match(/^\S*/);
  return charIndex + (match ? match[0].length : 0);
}

export class Speaker extends EventTarget {
  /**
   * @param {object} options
   * @param {() => {lang: string, voice: SpeechSynthesisVoice|null, rate: number, volume: number}} options.voiceOptions
   * @param {SpeechSynthesis} [options.synth]
   * @param {typeof SpeechSynthesisUtterance} [options.Utterance]
   */
  constructor({ voiceOptions, synth = globalThis.speechSynthesis, Utterance = globalThis.SpeechSynthesisUtterance }) {
    super();
    this.voiceOptions = voiceOptions;
    this.synth = synth ?? null;
    this.Utterance = Utterance ?? null;
    this.turns = new Map(); // turnId -> {streaming, items: [{index, text, started, done, heardChars}]}
    this.generation = 0; // bumped by cancel: events of older utterances are ignored
  }

  /** Whether this browser can speak at all. */
  get supported() {
    return this.synth !== null && this.Utterance !== null;
  }

  /** Whether the assistant is speaking or about to (a turn still streams or chunks wait). */
  get busy() {
    for (const turn of this.turns.values()) {
      if (turn.streaming || turn.items.some((item) => !item.done)) return true;
    }
    return false;
  }

  /** A live turn begins: its chunks will be spoken as they come. */
  beginTurn(turnId) {
    this.turns.set(turnId, { streaming: true, items: [] });
  }

  /** Whether chunks of `turnId` are being spoken (it began in this page). */
  speaks(turnId) {
    return this.turns.has(turnId);
  }

  /** Queue one chunk of a live turn. */
  enqueue(turnId, index, text) {
    const turn = this.turns.get(turnId);
    if (!turn || turn.items.some((item) => item.index === index)) return;
    const item = { index, text, started: false, done: false, heardChars: 0 };
    turn.items.push(item);
    if (!this.supported) {
      item.done = true;
      return;
    }
    const utterance = new this.Utterance(text);
    const { lang, voice, rate, volume } = this.voiceOptions();
    utterance.lang = lang;
    if (voice) utterance.voice = voice;
    utterance.rate = rate;
    utterance.volume = volume;
    item.utterance = utterance; // keep a reference: Chrome drops events of collected utterances
    const generation = this.generation;
    const current = () => generation === this.generation && !item.done;
    utterance.addEventListener("start", () => {
      if (!current()) return;
      item.started = true;
      this._emit("chunkstart", { turnId, index });
    });
    utterance.addEventListener("boundary", (event) => {
      if (!current() || (event.name && event.name !== "word")) return;
      item.started = true;
      item.heardChars = Math.max(item.heardChars, wordEnd(text, event.charIndex ?? 0, event.charLength ?? 0));
    });
    utterance.addEventListener("end", () => {
      if (!current()) return;
      item.started = true;
      item.done = true;
      item.heardChars = text.length;
      this._emit("chunkend", { turnId, index });
      this._settle(turnId);
    });
    utterance.addEventListener("error", (event) => {
      if (!current() || CANCEL_ERRORS.has(event.error)) return;
      item.done = true; // not heard: no ack, and it does not count as heard text
      item.failed = true; // but it was shown: the user read it instead
      this._emit("failed", { error: event.error ?? "unknown" });
      this._settle(turnId);
    });
    this.synth.speak(utterance);
  }

  /** The turn's stream ended: nothing more will be queued for it. */
  endTurn(turnId) {
    const turn = this.turns.get(turnId);
    if (!turn) return;
    turn.streaming = false;
    this._settle(turnId);
  }

  /**
   * Barge-in: stop speaking now. Returns, for each turn that was still speaking or
   * streaming, `{turnId, heardText}`. heardText is null when the browser cannot speak
   * at all (the gateway then keeps the chunks it sent); when speech failed for a chunk
   * of the turn, it is everything shown, which the user read instead of hearing.
   */
  interrupt() {
    const cut = [];
    for (const [turnId, turn] of this.turns) {
      if (!turn.streaming && turn.items.every((item) => item.done)) continue;
      let heardText = null;
      if (this.supported) {
        heardText = turn.items.some((item) => item.failed) ? this._shown(turn) : this._heard(turn);
      }
      cut.push({ turnId, heardText });
    }
    this.stop();
    return cut;
  }

  /** Stop speaking and forget every turn, reporting nothing. */
  stop() {
    const wasBusy = this.busy;
    this.generation += 1;
    this.turns.clear();
    if (wasBusy && this.supported) this.synth.cancel();
    if (wasBusy) this._emit("idle", {});
  }

  _shown(turn) {
    const items = [...turn.items].sort((a, b) => a.index - b.index);
    return items.map((item) => item.text).join(" ").trim() || null;
  }

  _heard(turn) {
    const parts = [];
    for (const item of turn.items) {
      if (item.done) {
        if (item.heardChars > 0) parts.push(item.text);
      } else if (item.started && item.heardChars > 0) {
        parts.push(item.text.slice(0, item.heardChars).trim());
        break;
      } else {
        break;
      }
    }
    return parts.join(" ").trim();
  }

  _settle(turnId) {
    const turn = this.turns.get(turnId);
    if (turn && !turn.streaming && turn.items.every((item) => item.done)) {
      this.turns.delete(turnId);
    }
    if (!this.busy) this._emit("idle", {});
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
