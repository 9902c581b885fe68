// Push-to-talk speech recognition with the Web Speech API.
//
// start() while the talk button (or space bar) is held, stop() on release; the
// final transcript comes as one "final" event after the recognizer has finished.
//
// Events (it is an EventTarget):
//   "listening" {listening}   recognition started or ended
//   "interim"   {text}        the words so far (final and tentative)
//   "final"     {text}        what was said, once released ("" when nothing was heard)
//   "error"     {code}        a SpeechRecognition error code (not-allowed, no-speech, …)

/** The browser's SpeechRecognition constructor, or null. */
export function findRecognition(scope = globalThis) {
  return scope.SpeechRecognition ?? scope.webkitSpeechRecognition ?? null;
}

export class PushToTalk extends EventTarget {
  /**
   * @param {object} options
   * @param {() => string} options.language      BCP 47 tag to recognise
   * @param {Function|null} [options.Recognition] the SpeechRecognition constructor
   */
  constructor({ language, Recognition = findRecognition() }) {
    super();
    this.language = language;
    this.Recognition = Recognition;
    this.recognizer = null;
    this.finalText = "";
    this.interimText = "";
  }

  get supported() {
    return this.Recognition !== null;
  }

  get listening() {
    return this.recognizer !== null;
  }

  /** Start listening (no-op when already listening or unsupported). */
  start() {
    if (!this.supported || this.recognizer) return false;
    const recognizer = new this.Recognition();
    recognizer.lang = this.language();
    recognizer.continuous = true;
    recognizer.interimResults = true;
    recognizer.maxAlternatives = 1;
    this.recognizer = recognizer;
    this.finalText = "";
    this.interimText = "";
    this.stopping = false;
    recognizer.onresult = (event) => this._onResult(event);
    recognizer.onerror = (event) => {
      if (this.recognizer !== recognizer) return;
      if (event.error !== "aborted") this._emit("error", { code: event.error });
    };
    recognizer.onend = () => {
      if (this.recognizer !== recognizer) return;
      this.recognizer = null;
      this._emit("listening", { listening: false });
      const text = `${this.finalText} ${this.interimText}`.replace(/\s+/g, " ").trim();
      this._emit("final", { text });
    };
    try {
      recognizer.start();
    } catch (error) {
      console.warn("speech recognition did not start", error);
      this.recognizer = null;
      this._emit("error", { code: "start-failed" });
      return false;
    }
    this._emit("listening", { listening: true });
    return true;
  }

  /** Stop listening and deliver what was heard (the recognizer finishes first). */
  stop() {
    if (this.recognizer && !this.stopping) {
      this.stopping = true;
      this.recognizer.stop();
    }
  }

  /** Stop listening and throw away what was heard. */
  cancel() {
    const recognizer = this.recognizer;
    if (!recognizer) return;
    this.recognizer = null;
    recognizer.abort();
    this._emit("listening", { listening: false });
  }

  _onResult(event) {
    let finalText = "";
    let interimText = "";
    for (let i = 0; i < event.results.length; i += 1) {
      const result = event.results[i];
      const transcript = result[0]?.transcript ?? "";
      if (result.isFinal) finalText += transcript;
      else interimText += transcript;
    }
    this.finalText = finalText.trim();
    this.interimText = interimText.trim();
    const text = `${this.finalText} ${this.interimText}`.replace(/\s+/g, " ").trim();
    this._emit("interim", { text });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
