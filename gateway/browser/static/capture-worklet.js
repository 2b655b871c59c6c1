// The microphone, in the audio thread: resampled to the line's rate and cut into 20 ms PCM16 frames, each
// posted to the page with the audio-context time of its first sample; the peak level and the time of the
// last loud sample go with it (the page's meter, and the end of the caller's speech for its latency figure).
import { Resampler, floatToInt16 } from "./audio.js";

const LOUD = 1000 / 32768; // the gateway's own threshold for "the caller made a sound" (gateway.metrics)

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.lineRate = options.processorOptions.lineRate;
    this.resampler = new Resampler(sampleRate, this.lineRate);
    this.frameLength = Math.round(this.lineRate * 0.02);
    this.frame = new Float32Array(this.frameLength);
    this.filled = 0;
    this.frameStart = 0; // context time of the frame's first sample
    this.peak = 0;
    this.lastLoud = -1;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    const input = channel || new Float32Array(128); // no microphone yet: silence keeps the line alive
    for (let i = 0; i < input.length; i++) {
      const level = Math.abs(input[i]);
      if (level > LOUD) this.lastLoud = currentTime + i / sampleRate;
      if (level > this.peak) this.peak = level;
    }
    const resampled = this.resampler.process(input);
    let offset = 0;
    while (offset < resampled.length) {
      if (this.filled === 0) this.frameStart = currentTime + offset / this.lineRate;
      const take = Math.min(this.frameLength - this.filled, resampled.length - offset);
      this.frame.set(resampled.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === this.frameLength) {
        const pcm = floatToInt16(this.frame);
        this.port.postMessage(
          { frame: pcm.buffer, start: this.frameStart, peak: this.peak, lastLoud: this.lastLoud },
          [pcm.buffer],
        );
        this.filled = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("capture", Capture);
