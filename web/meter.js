// A live waveform of the microphone while recording (WebAudio AnalyserNode on a canvas).
//
// start() asks for the microphone; its promise rejects with the DOMException
// (NotAllowedError, NotFoundError, …) so that the caller can say what went wrong.
// onLevel(level) is called every frame with the loudness from 0 to 1.

export class LevelMeter {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {object} [options]
   * @param {(level: number) => void} [options.onLevel]
   */
  constructor(canvas, { onLevel = () => {} } = {}) {
    this.canvas = canvas;
    this.onLevel = onLevel;
    this.stream = null;
    this.context = null;
    this.analyser = null;
    this.frame = 0;
    this.session = 0;
  }

  get supported() {
    return Boolean(navigator.mediaDevices?.getUserMedia) && Boolean(globalThis.AudioContext);
  }

  async start() {
    this.stop();
    if (!this.supported) return;
    const session = this.session;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
    });
    if (session !== this.session) {
      // Released before the microphone opened.
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.stream = stream;
    this.context = new AudioContext();
    const source = this.context.createMediaStreamSource(stream);
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 1024;
    source.connect(this.analyser);
    this._draw();
  }

  stop() {
    this.session += 1;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    if (this.context) {
      this.context.close().catch(() => {});
    }
    this.context = null;
    this.analyser = null;
    this.onLevel(0);
    this._clear();
  }

  _size() {
    const ratio = globalThis.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    return { width, height, ratio };
  }

  _clear() {
    const context = this.canvas.getContext("2d");
    if (!context) return;
    const { width, height } = this._size();
    context.clearRect(0, 0, width, height);
  }

  _draw() {
    const analyser = this.analyser;
    if (!analyser) return;
    const samples = new Float32Array(analyser.fftSize);
    const paint = () => {
      if (this.analyser !== analyser) return;
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const sample of samples) sum += sample * sample;
      const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      this.onLevel(level);
      const context = this.canvas.getContext("2d");
      if (context) {
        const { width, height, ratio } = this._size();
        context.clearRect(0, 0, width, height);
        context.lineWidth = 2 * ratio;
        context.lineJoin = "round";
        context.strokeStyle = getComputedStyle(this.canvas).color;
        context.beginPath();
        const step = samples.length / width;
        for (let x = 0; x < width; x += 1) {
          const sample = samples[Math.floor(x * step)] ?? 0;
          const y = height / 2 + sample * (height / 2) * 0.9;
          if (x === 0) context.moveTo(x, y);
          else context.lineTo(x, y);
        }
        context.stroke();
      }
      this.frame = requestAnimationFrame(paint);
    };
    paint();
  }
}
