// The voice settings panel (language, voice, speed, volume) and the theme toggle,
// bound to the settings object that settings.js loads and saves.

import { LANGUAGES, saveSettings } from "./settings.js";

function normLang(tag) {
  return String(tag ?? "").replace("_", "-").toLowerCase();
}

export class SettingsPanel {
  /**
   * @param {object} settings               from loadSettings(); changed in place and saved
   * @param {object} elements               {language, voice, rate, rateOut, volume, volumeOut, themeToggle}
   * @param {object} options
   * @param {(language: string) => void} options.onLanguage   the user picked another language
   * @param {SpeechSynthesis|null} [options.synth]
   */
  constructor(settings, elements, { onLanguage, synth = globalThis.speechSynthesis ?? null }) {
    this.settings = settings;
    this.el = elements;
    this.onLanguage = onLanguage;
    this.synth = synth;
    this.darkQuery = globalThis.matchMedia?.("(prefers-color-scheme: dark)") ?? null;
    this._bind();
    this._render();
  }

  /** The voice to speak with: the chosen one for the language, else the best match, else null. */
  voice() {
    const voices = this._voicesFor(this.settings.language);
    const uri = this.settings.voices[this.settings.language];
    return voices.find((v) => v.voiceURI === uri) ?? voices[0] ?? null;
  }

  /** Whether the page shows the dark theme. */
  get dark() {
    return this.settings.theme ? this.settings.theme === "dark" : Boolean(this.darkQuery?.matches);
  }

  _save() {
    saveSettings(this.settings);
  }

  /** The browser's voices for `language` (same base language), exact region first. */
  _voicesFor(language) {
    if (!this.synth) return [];
    const wanted = normLang(language);
    const base = wanted.split("-")[0];
    const exact = (voice) => Number(normLang(voice.lang) === wanted);
    return this.synth
      .getVoices()
      .filter((voice) => normLang(voice.lang).split("-")[0] === base)
      .sort((a, b) => exact(b) - exact(a) || a.name.localeCompare(b.name));
  }

  _render() {
    const { el, settings } = this;
    el.language.replaceChildren(...LANGUAGES.map((l) => new Option(l.label, l.tag)));
    el.language.value = settings.language;
    el.rate.value = String(settings.rate);
    el.volume.value = String(settings.volume);
    this._renderOutputs();
    this._renderVoices();
    this._renderTheme();
  }

  _renderOutputs() {
    this.el.rateOut.value = `${this.settings.rate.toFixed(1)}×`;
    this.el.volumeOut.value = `${Math.round(this.settings.volume * 100)} %`;
  }

  _renderVoices() {
    const voices = this._voicesFor(this.settings.language);
    const chosen = this.settings.voices[this.settings.language] ?? "";
    const options = [new Option(voices.length ? "Automatic" : "Browser default", "")];
    for (const voice of voices) options.push(new Option(`${voice.name} (${voice.lang})`, voice.voiceURI));
    this.el.voice.replaceChildren(...options);
    this.el.voice.value = voices.some((v) => v.voiceURI === chosen) ? chosen : "";
    this.el.voice.disabled = !this.synth;
  }

  _renderTheme() {
    const root = document.documentElement;
    if (this.settings.theme) root.dataset.theme = this.settings.theme;
    else delete root.dataset.theme;
    const dark = this.dark;
    this.el.themeToggle.setAttribute("aria-pressed", String(dark));
    this.el.themeToggle.title = dark ? "Switch to the light theme" : "Switch to the dark theme";
  }

  _bind() {
    const { el, settings } = this;
    el.language.addEventListener("change", () => {
      settings.language = el.language.value;
      this._save();
      this._renderVoices();
      this.onLanguage(settings.language);
    });
    el.voice.addEventListener("change", () => {
      settings.voices[settings.language] = el.voice.value;
      this._save();
    });
    el.rate.addEventListener("input", () => {
      settings.rate = Number(el.rate.value);
      this._renderOutputs();
      this._save();
    });
    el.volume.addEventListener("input", () => {
      settings.volume = Number(el.volume.value);
      this._renderOutputs();
      this._save();
    });
    el.themeToggle.addEventListener("click", () => {
      settings.theme = this.dark ? "light" : "dark";
      this._save();
      this._renderTheme();
    });
    this.synth?.addEventListener?.("voiceschanged", () => this._renderVoices());
    this.darkQuery?.addEventListener?.("change", () => this._renderTheme());
  }
}
