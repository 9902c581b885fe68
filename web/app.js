// Wires the page together: connection, transcript, speech out, push-to-talk in, settings.

import { Connection } from "./connection.js";
import { LevelMeter } from "./meter.js";
import { Notices } from "./notices.js";
import { PushToTalk } from "./recognition.js";
import { loadSettings } from "./settings.js";
import { SettingsPanel } from "./settings-panel.js";
import { Speaker } from "./speech.js";
import { StatusView } from "./status.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  statusText: $("status-text"),
  statusLive: $("status-live"),
  retry: $("retry"),
  themeToggle: $("theme-toggle"),
  newConversation: $("new-conversation"),
  notices: $("notices"),
  scroller: $("scroller"),
  empty: $("empty"),
  transcript: $("transcript"),
  live: $("live"),
  meter: $("meter"),
  interim: $("interim"),
  talk: $("talk"),
  talkLabel: $("talk-label"),
  stop: $("stop"),
  composer: $("composer"),
  message: $("message"),
  language: $("language"),
  voice: $("voice"),
  rate: $("rate"),
  rateOut: $("rate-out"),
  volume: $("volume"),
  volumeOut: $("volume-out"),
  settings: $("settings"),
  sessionId: $("session-id"),
  model: $("model"),
};

const settings = loadSettings();
const panel = new SettingsPanel(settings, ui, {
  onLanguage: (language) => {
    ui.transcript.lang = language;
    conn.send({ type: "session.update", language });
  },
});
ui.transcript.lang = settings.language; // the UI itself stays in English
const notices = new Notices(ui.notices);
const transcript = new Transcript(ui.transcript, ui.scroller, () => {
  ui.empty.hidden = !transcript.isEmpty;
});
// Pings keep the socket from counting as idle (GATEWAY_IDLE_TIMEOUT_S) while the
// user is silent; pongs are connection events and cost the session nothing.
const conn = new Connection({ url: gatewayUrl(), pingIntervalMs: 25_000 });
const speaker = new Speaker({
  voiceOptions: () => ({
    lang: settings.language,
    voice: panel.voice(),
    rate: settings.rate,
    volume: settings.volume,
  }),
});
const ptt = new PushToTalk({ language: () => settings.language });
const meter = new LevelMeter(ui.meter, {
  onLevel: (level) => ui.talk.style.setProperty("--level", level.toFixed(3)),
});
const repliesTo = new Map(); // turn_id -> user message id it answers
let talking = false; // the talk button or space bar is held
let spaceHeld = false;
let pointerHeld = false;

function gatewayUrl() {
  // <meta name="voice-gateway-url"> names the gateway when the page is served elsewhere.
  const configured = document.querySelector('meta[name="voice-gateway-url"]')?.content.trim();
  if (configured) return `${configured.replace(/\/+$/, "")}/ws`;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

// --- connection ------------------------------------------------------------------

new StatusView({ status: ui.status, text: ui.statusText, live: ui.statusLive, retry: ui.retry }, conn, notices, {
  onTakenOver: () => speaker.stop(),
  newConversation,
});

globalThis.addEventListener("online", () => {
  if (conn.state === "waiting") conn.retryNow(); // back online: do not wait for the back-off
});

conn.addEventListener("ready", ({ detail: { event, restoring } }) => {
  ui.sessionId.textContent = event.session_id;
  ui.model.textContent = `${event.provider} · ${event.model}`;
  document.body.dataset.sessionId = event.session_id;
  if (restoring) transcript.clear(); // the replay that follows rebuilds it
  if (event.language !== settings.language) {
    conn.send({ type: "session.update", language: settings.language });
  }
});

conn.addEventListener("reset", () => {
  resetConversation();
  notices.show("session", {
    kind: "info",
    text: "The previous conversation could not be resumed (it expired or was deleted), so a new one has started.",
  });
});

conn.addEventListener("resync", ({ detail: { event } }) => {
  transcript.replace(event.transcript);
});

conn.addEventListener("server", ({ detail: { event, history } }) => {
  handleServerEvent(event, history);
  refreshSpeaking();
});

function handleServerEvent(event, history) {
  switch (event.type) {
    case "response.start": {
      const id = event.in_reply_to;
      if (id) {
        repliesTo.set(event.turn_id, id);
        const text = conn.messageText(id);
        if (!transcript.hasUser(id) && text !== null) transcript.addUser(id, text);
        transcript.delivered(id);
      }
      transcript.startAssistant(event.turn_id, id);
      if (!history) speaker.beginTurn(event.turn_id);
      break;
    }
    case "response.tts":
      transcript.addChunk(event.turn_id, event.index, event.text);
      if (!history) speaker.enqueue(event.turn_id, event.index, event.text);
      break;
    case "response.end":
      transcript.endTurn(event.turn_id, {
        status: event.status,
        reason: event.reason,
        spokenText: event.spoken_text,
      });
      speaker.endTurn(event.turn_id);
      break;
    case "history.truncated":
      transcript.truncate(event.turn_id, event.spoken_text);
      break;
    case "user.duplicate":
      transcript.delivered(event.id);
      break;
    case "error":
      if (!history) showServerError(event);
      break;
    case "session.ended":
      speaker.stop();
      stopTalking();
      notices.show("session", {
        kind: "info",
        text: "This conversation has ended. Your next message starts a new one.",
      });
      break;
    default:
      break; // session.updated, pong: nothing to show
  }
}

const PROVIDER_PROBLEMS = {
  rate_limited: "The AI provider is busy right now (too many requests).",
  unavailable: "The AI provider is unavailable right now.",
  timeout: "The AI provider took too long to answer.",
  connection_lost: "The gateway lost its connection to the AI provider.",
  bad_request: "The AI provider could not handle this request.",
  auth_failed: "The gateway's key for the AI provider was refused.",
  bad_response: "The AI provider sent an answer the gateway could not read.",
  blocked: "The AI provider refused to answer this message.",
};

function showServerError(event) {
  if (event.code === "provider_error" || event.code === "internal_error") {
    const problem =
      event.code === "internal_error"
        ? "The gateway ran into a problem while answering."
        : (PROVIDER_PROBLEMS[event.detail] ?? "The AI provider failed to answer.");
    const text = conn.messageText(repliesTo.get(event.turn_id));
    const actions = event.retryable && text ? [{ label: "Try again", run: () => sendText(text) }] : [];
    const hint = event.retryable ? " Try again in a moment." : "";
    notices.show("turn", { text: `${problem}${hint}`, actions });
  } else if (event.code === "empty_text") {
    notices.show("input", { kind: "info", text: "That message was empty, so nothing was sent." });
  } else if (event.code === "text_too_long") {
    notices.show("input", { text: "That message is too long. Please shorten it and try again." });
  } else {
    console.warn("gateway error", event.code, event.message);
    notices.show("input", { text: `The gateway did not accept a message: ${event.message}` });
  }
}

// --- conversation actions --------------------------------------------------------------

function resetConversation() {
  stopTalking();
  speaker.stop();
  repliesTo.clear();
  transcript.clear();
  notices.clear();
  refreshSpeaking();
}

function newConversation() {
  resetConversation();
  conn.newConversation();
  ui.message.focus();
}

ui.newConversation.addEventListener("click", newConversation);

/** Send what the user typed or said; returns whether something was sent. */
function sendText(raw) {
  const text = raw.trim();
  if (!text) return false;
  bargeIn();
  if (conn.state === "ended") {
    resetConversation();
    conn.newConversation();
  }
  notices.dismiss("input");
  const id = conn.sendMessage(text);
  transcript.addUser(id, text, { pending: true });
  return true;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (sendText(ui.message.value)) ui.message.value = "";
  ui.message.focus();
});

// Typing while the assistant speaks is a barge-in too.
ui.message.addEventListener("input", () => {
  if (speaker.busy) bargeIn();
});

// --- speech out --------------------------------------------------------------------------

/** Stop the assistant now and tell the gateway what the user heard. */
function bargeIn() {
  const cut = speaker.interrupt();
  transcript.silence();
  for (const { turnId, heardText } of cut) {
    const event = { type: "interrupt", turn_id: turnId };
    if (heardText !== null) event.heard_text = heardText;
    conn.send(event);
  }
  refreshSpeaking();
  return cut.length > 0;
}

speaker.addEventListener("chunkstart", ({ detail }) => transcript.speaking(detail.turnId, detail.index, true));
speaker.addEventListener("chunkend", ({ detail }) => {
  transcript.speaking(detail.turnId, detail.index, false);
  conn.send({ type: "playback.ack", turn_id: detail.turnId, index: detail.index });
});
speaker.addEventListener("idle", () => {
  transcript.silence();
  refreshSpeaking();
});
speaker.addEventListener("failed", ({ detail }) => {
  if (detail.error === "not-allowed") {
    notices.show("speech", {
      kind: "info",
      text: "The browser did not let this page speak yet. Press a key or the talk button once and replies will be read aloud.",
    });
  } else {
    notices.show("speech", {
      kind: "info",
      text: "This browser could not read the reply aloud. Replies are still shown as text.",
    });
  }
});

function refreshSpeaking() {
  const busy = speaker.busy;
  ui.stop.hidden = !busy;
  document.body.classList.toggle("is-speaking", busy);
}

ui.stop.addEventListener("click", () => {
  bargeIn();
  ui.message.focus();
});

// --- push to talk -------------------------------------------------------------------------

function startTalking() {
  if (talking) return;
  if (!ptt.supported) {
    showNoRecognition();
    ui.message.focus();
    return;
  }
  bargeIn();
  notices.dismiss("voice");
  talking = true;
  document.body.classList.add("is-recording");
  ui.talk.setAttribute("aria-pressed", "true");
  ui.talkLabel.textContent = "Listening… release to send";
  ui.interim.textContent = "";
  ui.live.hidden = false;
  ptt.start();
  meter.start().catch(microphoneProblem);
}

function stopTalking() {
  if (!talking) return;
  talking = false;
  document.body.classList.remove("is-recording");
  ui.talk.setAttribute("aria-pressed", "false");
  ui.talkLabel.textContent = "Hold to talk";
  ptt.stop();
  meter.stop();
}

function cancelTalking() {
  if (!talking) return;
  ptt.cancel(); // throw away what was heard
  stopTalking();
  ui.live.hidden = true;
  ui.interim.textContent = "";
}

function microphoneProblem(error) {
  const name = error?.name ?? "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    voiceProblem("not-allowed");
  } else if (name === "NotFoundError" || name === "OverconstrainedError") {
    voiceProblem("audio-capture");
  } else {
    console.warn("no level meter", error);
  }
}

const VOICE_PROBLEMS = {
  "not-allowed":
    "Microphone access is blocked. Allow the microphone for this site in your browser's settings, or type your message below.",
  "service-not-allowed":
    "This browser does not allow speech recognition here. Type your message below instead.",
  "audio-capture": "No microphone was found. Connect one, or type your message below.",
  network:
    "Speech recognition needs an internet connection (the browser sends the audio to its speech service). Type your message below instead.",
  "language-not-supported": "Speech recognition does not support the chosen language in this browser.",
  "start-failed": "Speech recognition could not start. Try again, or type your message below.",
};

function voiceProblem(code) {
  if (code === "no-speech") {
    notices.show("voice", { kind: "info", text: "I didn't hear anything. Hold the button while you speak." });
    return;
  }
  notices.show("voice", { text: VOICE_PROBLEMS[code] ?? `Speech recognition failed (${code}).` });
  stopTalking();
}

function showNoRecognition() {
  notices.show("voice", {
    kind: "info",
    text: "This browser cannot turn speech into text, so type your messages below. Voice input works in Chrome, Edge and Safari.",
  });
}

ptt.addEventListener("interim", ({ detail }) => {
  ui.interim.textContent = detail.text;
});
ptt.addEventListener("listening", ({ detail }) => {
  if (detail.listening) return;
  stopTalking(); // the recognizer may stop on its own
  ui.live.hidden = true;
});
ptt.addEventListener("final", ({ detail }) => {
  ui.live.hidden = true;
  ui.interim.textContent = "";
  if (detail.text) sendText(detail.text);
});
ptt.addEventListener("error", ({ detail }) => voiceProblem(detail.code));

ui.talk.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  ui.talk.setPointerCapture?.(event.pointerId);
  pointerHeld = true;
  startTalking();
});
for (const type of ["pointerup", "pointercancel"]) {
  ui.talk.addEventListener(type, () => {
    if (!pointerHeld) return;
    pointerHeld = false;
    stopTalking();
  });
}
ui.talk.addEventListener("contextmenu", (event) => event.preventDefault());
// Enter, or a screen reader's activation (no pointer): press once to talk, again to send.
ui.talk.addEventListener("click", (event) => {
  if (event.detail !== 0 || pointerHeld || spaceHeld) return;
  if (talking) stopTalking();
  else startTalking();
});

/** Whether the space bar means push-to-talk when pressed on `target`. */
function spaceTalks(target) {
  if (!(target instanceof Element) || target === ui.talk) return true;
  return !target.closest("input, textarea, select, button, a[href], summary, [contenteditable]");
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    if (talking) cancelTalking();
    else bargeIn();
    return;
  }
  if (event.code !== "Space" || event.ctrlKey || event.metaKey || event.altKey) return;
  if (!spaceTalks(event.target)) return;
  event.preventDefault();
  if (event.repeat || spaceHeld) return;
  spaceHeld = true;
  startTalking();
});
document.addEventListener("keyup", (event) => {
  if (event.code !== "Space" || !spaceHeld) return;
  event.preventDefault();
  spaceHeld = false;
  stopTalking();
});
globalThis.addEventListener("blur", () => {
  if (spaceHeld || pointerHeld) {
    spaceHeld = pointerHeld = false;
    stopTalking();
  }
});

// --- start ------------------------------------------------------------------------------------

refreshSpeaking();
if (!ptt.supported) {
  document.body.classList.add("no-voice-input");
  ui.talk.disabled = true;
  ui.talk.setAttribute("aria-disabled", "true");
  ui.talkLabel.textContent = "Voice input unavailable";
  showNoRecognition();
}
if (globalThis.matchMedia?.("(min-width: 960px)").matches) ui.settings.open = true;
conn.start();
