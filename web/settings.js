// User preferences kept in localStorage: language, voice per language, rate, volume, theme.

const STORAGE_KEY = "voice-gateway.settings";

/** Languages offered for recognition and speech (BCP 47 tags the gateway accepts). */
export const LANGUAGES = [
  { tag: "en-US", label: "English (United States)" },
  { tag: "en-GB", label: "English (United Kingdom)" },
  { tag: "es-ES", label: "Español (España)" },
  { tag: "es-MX", label: "Español (México)" },
  { tag: "fr-FR", label: "Français (France)" },
  { tag: "de-DE", label: "Deutsch (Deutschland)" },
  { tag: "it-IT", label: "Italiano (Italia)" },
  { tag: "pt-BR", label: "Português (Brasil)" },
];

export const RATE = { min: 0.5, max: 2, step: 0.1, default: 1 };
export const VOLUME = { min: 0, max: 1, step: 0.05, default: 1 };

function clamp(value, { min, max, default: fallback }) {
  const number = Number(value);
  if (!Number.isFinite(number)) return fallback;
  return Math.min(max, Math.max(min, number));
}

/** The language to start with: the browser's own when we offer it, else English. */
function defaultLanguage(preferred) {
  const tags = LANGUAGES.map((l) => l.tag);
  for (const wanted of preferred) {
    if (tags.includes(wanted)) return wanted;
    const base = wanted.split("-")[0];
    const sameBase = tags.find((t) => t.split("-")[0] === base);
    if (sameBase) return sameBase;
  }
  return "en-US";
}

/** Read the settings, falling back to defaults for anything missing or invalid. */
export function loadSettings(storage = globalThis.localStorage, preferred = globalThis.navigator?.languages ?? []) {
  let raw = {};
  try {
    raw = JSON.parse(storage?.getItem(STORAGE_KEY) ?? "{}") ?? {};
  } catch {
    raw = {};
  }
  const language = LANGUAGES.some((l) => l.tag === raw.language) ? raw.language : defaultLanguage(preferred);
  const voices = {};
  if (raw.voices && typeof raw.voices === "object") {
    for (const [tag, uri] of Object.entries(raw.voices)) {
      if (typeof uri === "string") voices[tag] = uri;
    }
  }
  return {
    language,
    voices, // language tag -> chosen voiceURI ("" or missing: automatic)
    rate: clamp(raw.rate, RATE),
    volume: clamp(raw.volume, VOLUME),
    theme: raw.theme === "light" || raw.theme === "dark" ? raw.theme : null, // null: follow the system
  };
}

/** Write the settings; a full or forbidden storage only loses the preference. */
export function saveSettings(settings, storage = globalThis.localStorage) {
  try {
    storage?.setItem(STORAGE_KEY, JSON.stringify(settings));
  } catch (error) {
    console.warn("could not save the settings", error);
  }
}
