// Init script for the browser tests (page.add_init_script): stand-ins for the parts
// of the Web Speech API and the microphone that headless Chromium does not have,
// plus a record of every WebSocket opened and every frame sent.
//
// window.__stubOptions (set by an earlier init script) may hold:
//   recognition: false   no SpeechRecognition at all
//   micDenied: true      getUserMedia and recognition fail with "not allowed"
//   ttsError: "…"        every utterance fails with this error (a browser that cannot speak)
//
// Controls for tests:
//   __sent                  every frame the page sent, parsed as JSON
//   __sockets               every WebSocket URL the page opened
//   __tts.spoken            every utterance queued: {text, lang, rate, volume, voice}
//   __tts.current           the utterance playing (kept pending until finish())
//   __tts.finish()          end the current utterance (fires start if needed, then end)
//   __tts.boundary(i, n)    a word boundary at char i (length n) in the current utterance
//   __tts.cancels           how many times speechSynthesis.cancel() was called
//   __stt.starts, __stt.lang, __stt.active
//   __stt.say(text, final)  a recognition result for the active recognizer
(() => {
  const options = window.__stubOptions || {};

  // --- WebSocket: record URLs and sent frames -------------------------------------
  window.__sent = [];
  window.__sockets = [];
  const NativeWebSocket = window.WebSocket;
  const nativeSend = NativeWebSocket.prototype.send;
  NativeWebSocket.prototype.send = function send(data) {
    try {
      window.__sent.push(JSON.parse(data));
    } catch {
      window.__sent.push(data);
    }
    return nativeSend.call(this, data);
  };
  class RecordingWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      window.__sockets.push(String(url));
    }
  }
  window.WebSocket = RecordingWebSocket;

  function fire(target, type, props = {}) {
    const event = new Event(type);
    Object.assign(event, props);
    target.dispatchEvent(event);
    const handler = target[`on${type}`];
    if (typeof handler === "function") handler.call(target, event);
  }

  // --- speechSynthesis -----------------------------------------------------------------
  const VOICES = [
    { name: "Test English (US)", lang: "en-US", voiceURI: "test-en-us", default: true, localService: true },
    { name: "Test English (UK)", lang: "en-GB", voiceURI: "test-en-gb", default: false, localService: true },
    { name: "Prueba Español", lang: "es-ES", voiceURI: "test-es-es", default: false, localService: true },
    { name: "Prueba México", lang: "es-MX", voiceURI: "test-es-mx", default: false, localService: true },
    { name: "Test Français", lang: "fr-FR", voiceURI: "test-fr-fr", default: false, localService: true },
  ];
  const tts = { spoken: [], queue: [], current: null, cancels: 0 };
  window.__tts = tts;

  class FakeUtterance extends EventTarget {
    constructor(text = "") {
      super();
      this.text = text;
      this.lang = "";
      this.voice = null;
      this.rate = 1;
      this.pitch = 1;
      this.volume = 1;
    }
  }

  function playNext() {
    tts.current = tts.queue.shift() ?? null;
    const utterance = tts.current;
    if (!utterance) return;
    setTimeout(() => {
      if (tts.current === utterance && !utterance.__started) {
        utterance.__started = true;
        fire(utterance, "start", { utterance, charIndex: 0, elapsedTime: 0 });
      }
    }, 0);
  }

  tts.finish = () => {
    const utterance = tts.current;
    if (!utterance) return false;
    if (!utterance.__started) {
      utterance.__started = true;
      fire(utterance, "start", { utterance, charIndex: 0, elapsedTime: 0 });
    }
    tts.current = null;
    fire(utterance, "end", { utterance, charIndex: utterance.text.length, elapsedTime: 1 });
    playNext();
    return true;
  };

  tts.boundary = (charIndex, charLength = 0) => {
    const utterance = tts.current;
    if (!utterance) return false;
    fire(utterance, "boundary", { utterance, name: "word", charIndex, charLength, elapsedTime: 1 });
    return true;
  };

  class FakeSynthesis extends EventTarget {
    get speaking() {
      return tts.current !== null;
    }
    get pending() {
      return tts.queue.length > 0;
    }
    get paused() {
      return false;
    }
    speak(utterance) {
      tts.spoken.push({
        text: utterance.text,
        lang: utterance.lang,
        rate: utterance.rate,
        volume: utterance.volume,
        voice: utterance.voice ? utterance.voice.name : null,
      });
      if (options.ttsError) {
        setTimeout(() => fire(utterance, "error", { utterance, error: options.ttsError }), 0);
        return;
      }
      tts.queue.push(utterance);
      if (!tts.current) playNext();
    }
    cancel() {
      tts.cancels += 1;
      const current = tts.current;
      const rest = tts.queue.splice(0);
      tts.current = null;
      if (current) fire(current, "error", { utterance: current, error: "interrupted" });
      for (const utterance of rest) fire(utterance, "error", { utterance, error: "canceled" });
    }
    pause() {}
    resume() {}
    getVoices() {
      return VOICES;
    }
  }

  Object.defineProperty(window, "speechSynthesis", { value: new FakeSynthesis(), configurable: true });
  window.SpeechSynthesisUtterance = FakeUtterance;

  // --- SpeechRecognition ----------------------------------------------------------------
  const stt = { starts: 0, lang: null, active: null };
  window.__stt = stt;

  class FakeRecognition extends EventTarget {
    constructor() {
      super();
      this.lang = "";
      this.continuous = false;
      this.interimResults = false;
      this.maxAlternatives = 1;
      this.results = [];
    }
    start() {
      stt.starts += 1;
      stt.lang = this.lang;
      stt.active = this;
      if (options.micDenied) {
        setTimeout(() => {
          stt.active = null;
          fire(this, "error", { error: "not-allowed", message: "" });
          fire(this, "end");
        }, 0);
        return;
      }
      setTimeout(() => fire(this, "start"), 0);
    }
    stop() {
      if (stt.active !== this) return;
      stt.active = null;
      setTimeout(() => fire(this, "end"), 0);
    }
    abort() {
      if (stt.active !== this) return;
      stt.active = null;
      setTimeout(() => {
        fire(this, "error", { error: "aborted", message: "" });
        fire(this, "end");
      }, 0);
    }
  }

  stt.say = (text, isFinal = false) => {
    const recognizer = stt.active;
    if (!recognizer) return false;
    const result = { 0: { transcript: text, confidence: 0.9 }, length: 1, isFinal };
    const last = recognizer.results[recognizer.results.length - 1];
    if (last && !last.isFinal) recognizer.results[recognizer.results.length - 1] = result;
    else recognizer.results.push(result);
    const results = Object.assign([...recognizer.results], { item: (i) => recognizer.results[i] });
    fire(recognizer, "result", { resultIndex: recognizer.results.length - 1, results });
    return true;
  };

  if (options.recognition === false) {
    for (const name of ["SpeechRecognition", "webkitSpeechRecognition"]) {
      Object.defineProperty(window, name, { value: undefined, configurable: true, writable: true });
    }
  } else {
    window.SpeechRecognition = FakeRecognition;
    window.webkitSpeechRecognition = FakeRecognition;
  }

  // --- microphone (for the level meter): a quiet tone instead of a real device ----------
  if (navigator.mediaDevices) {
    navigator.mediaDevices.getUserMedia = async () => {
      if (options.micDenied) throw new DOMException("Permission denied", "NotAllowedError");
      const context = new AudioContext();
      const tone = context.createOscillator();
      const gain = context.createGain();
      gain.gain.value = 0.3;
      const sink = context.createMediaStreamDestination();
      tone.connect(gain).connect(sink);
      tone.start();
      return sink.stream;
    };
  }
})();
