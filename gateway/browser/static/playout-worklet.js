// The agent's voice, in the audio thread: a small jitter buffer played out sample by sample.
//
// It behaves as Twilio's playout buffer does for the gateway: audio plays in order; a mark is acknowledged
// (posted back, then sent to the gateway) when the playout reaches it; `clear` drops everything not yet
// played at once and acknowledges the marks it flushed. Playout starts once PREBUFFER_S is queued (or a
// mark says the turn has no more audio), so a late packet does not become a click of silence mid-word.
import { Resampler, int16ToFloat } from "./audio.js";

const PREBUFFER_S = 0.04;
const REPORT_S = 0.05; // how often the page hears the level and the queue

class Playout extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {samples, offset} and {mark}
    this.queued = 0; // samples of audio in the queue
    this.playing = false;
    this.lastWasMark = true; // what the playout reached last: a mark (a turn's end) or audio
    this.resampler = null;
    this.peak = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.audio) {
      if (!this.resampler || this.resampler.inRate !== message.rate) {
        this.resampler = new Resampler(message.rate, sampleRate);
      }
      const samples = this.resampler.process(int16ToFloat(new Int16Array(message.audio)));
      if (samples.length) {
        this.queue.push({ samples, offset: 0 });
        this.queued += samples.length;
      }
    } else if (message.mark !== undefined) {
      this.queue.push({ mark: message.mark });
    } else if (message.clear) {
      for (const item of this.queue) {
        if (item.mark !== undefined) this.port.postMessage({ played: item.mark, flushed: true });
      }
      this.queue = [];
      this.queued = 0;
      this.playing = false;
      if (this.resampler) this.resampler.reset();
      this.port.postMessage({ cleared: currentTime });
    }
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing) {
      const turnEnds = this.queue.some((item) => item.mark !== undefined);
      if (this.queued >= PREBUFFER_S * sampleRate || (turnEnds && this.queue.length)) {
        this.playing = true;
        if (this.queued) this.port.postMessage({ started: currentTime });
      }
    }
    let written = 0;
    while (this.playing && this.queue.length) {
      const item = this.queue[0];
      if (item.mark !== undefined) {
        this.queue.shift();
        this.lastWasMark = true;
        this.port.postMessage({ played: item.mark });
        continue;
      }
      if (written === out.length) break;
      const take = Math.min(out.length - written, item.samples.length - item.offset);
      out.set(item.samples.subarray(item.offset, item.offset + take), written);
      item.offset += take;
      written += take;
      this.queued -= take;
      this.lastWasMark = false;
      if (item.offset === item.samples.length) this.queue.shift();
    }
    if (this.playing && !this.queue.length) {
      this.playing = false; // the turn has played out (or the network is late): buffer again before going on
      this.port.postMessage({ idle: true, underrun: !this.lastWasMark }); // an underrun: the mark has not come
    }
    for (let i = 0; i < written; i++) this.peak = Math.max(this.peak, Math.abs(out[i]));
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= REPORT_S * sampleRate) {
      this.port.postMessage({ level: this.peak, queuedMs: (1000 * this.queued) / sampleRate });
      this.peak = 0;
      this.sinceReport = 0;
    }
    return true;
  }
}

registerProcessor("playout", Playout);
