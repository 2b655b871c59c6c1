// Audio helpers shared by the page and its worklets: mu-law (G.711) and a streaming resampler.
// Pure functions and one small class, no Web Audio: node runs them in tests/test_browser_audio.py.

const BIAS = 0x84;
const SEGMENT_ENDS = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

/** One PCM16 sample as a mu-law byte: G.711 on the top 14 bits, bit-exact with the gateway's (audioop). */
export function ulawEncodeSample(sample) {
  let value = sample >> 2;
  let mask = 0xff;
  if (value < 0) {
    value = -value;
    mask = 0x7f;
  }
  value = Math.min(value, 8159) + (BIAS >> 2);
  let segment = 0;
  while (segment < 8 && value > SEGMENT_ENDS[segment]) segment++;
  if (segment >= 8) return 0x7f ^ mask;
  return ((segment << 4) | ((value >> (segment + 1)) & 0x0f)) ^ mask;
}

const DECODE = new Int16Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  const exponent = (u >> 4) & 0x07;
  const magnitude = (((u & 0x0f) << 3) + BIAS) << exponent;
  DECODE[i] = u & 0x80 ? BIAS - magnitude : magnitude - BIAS;
}

export function ulawEncode(pcm /* Int16Array */) {
  const out = new Uint8Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = ulawEncodeSample(pcm[i]);
  return out;
}

export function ulawDecode(bytes /* Uint8Array */) {
  const out = new Int16Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODE[bytes[i]];
  return out;
}

export function floatToInt16(samples /* Float32Array */) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = Math.round(s * 32767);
  }
  return out;
}

export function int16ToFloat(samples /* Int16Array */) {
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}

/**
 * A streaming windowed-sinc resampler for any pair of rates (the audio context runs at the device's rate,
 * 44.1 or 48 kHz; the line at 8, 16 or 24 kHz). Going down it low-passes below the new Nyquist first, so
 * nothing above it folds back into the band; streamed output does not depend on how the input is chunked.
 */
export class Resampler {
  constructor(inRate, outRate, zeroCrossings = 8) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    // Cutoff relative to the input's Nyquist, a little under the lower rate's Nyquist (the transition band).
    this.cutoff = Math.min(1, outRate / inRate) * 0.9;
    this.half = Math.ceil(zeroCrossings / this.cutoff); // taps each side, in input samples
    this.reset();
  }

  reset() {
    this.buffer = new Float32Array(2 * this.half); // history: zeros before the first sample
    this.position = this.half; // where the next output sample lies, in `buffer`'s samples
  }

  kernel(t) {
    if (t === 0) return this.cutoff;
    const x = Math.PI * t;
    // Hann, zero at the kernel's edges: a tap there weighs nothing, whichever side of it a position falls.
    const window = 0.5 + 0.5 * Math.cos(x / this.half);
    return (Math.sin(this.cutoff * x) / x) * window;
  }

  /** Resample the next chunk (Float32Array); returns what can be produced so far. */
  process(input) {
    if (this.inRate === this.outRate) return input;
    const joined = new Float32Array(this.buffer.length + input.length);
    joined.set(this.buffer);
    joined.set(input, this.buffer.length);
    const out = [];
    let p = this.position;
    while (p + this.half < joined.length) {
      const centre = Math.floor(p);
      let sum = 0;
      for (let k = centre - this.half + 1; k <= centre + this.half; k++) {
        sum += joined[k] * this.kernel(p - k);
      }
      out.push(sum);
      p += this.step;
    }
    const keepFrom = Math.max(0, Math.floor(p) - this.half);
    this.buffer = joined.slice(keepFrom);
    this.position = p - keepFrom;
    return Float32Array.from(out);
  }
}
