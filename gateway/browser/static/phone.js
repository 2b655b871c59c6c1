// The console's softphone: the microphone to the gateway and the agent back, over one WebSocket, through
// the same call path a phone call takes (see gateway/browser/protocol.py for the messages).
//
// Everything the tests and a person tuning an agent read is in the DOM: the counters (#frames-sent,
// #frames-received, #bytes-received, #clears, #marks, #underruns), the transcript (#transcript), each turn's
// response latency (#turns), the measured path latencies (#rtt, #mic-to-gateway, #gateway-to-speaker) and
// the call's state (data-state on #phone: idle, connecting, in-call, ended).
import { ulawDecode, ulawEncode } from "./audio.js";

const STATIC = new URL(".", import.meta.url).href;
const PING_S = 1;
const $ = (id) => document.getElementById(id);

const counters = {
  "frames-sent": 0, "bytes-sent": 0, "frames-received": 0, "bytes-received": 0,
  clears: 0, marks: 0, underruns: 0,
};

function count(name, by = 1) {
  counters[name] += by;
  $(name).textContent = String(counters[name]);
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function show(id, ms) {
  $(id).textContent = ms === null ? "-" : `${Math.round(ms)} ms`;
  $(id).dataset.ms = ms === null ? "" : String(ms);
}

function setState(state, text) {
  $("phone").dataset.state = state;
  $("status").textContent = text;
  $("call").disabled = state === "connecting" || state === "in-call";
  $("hangup").disabled = !(state === "connecting" || state === "in-call");
}

class PhoneCall {
  constructor(agent, quality) {
    this.agent = agent;
    this.quality = quality;
    this.muted = false;
    this.pings = new Map();
    this.pingId = 0;
    this.rtts = [];
    this.micAges = [];
    this.speakerDelays = [];
    this.lastLoud = -1; // context time of the caller's last loud sample
    this.lastStart = -1; // context time the agent's audio last began to play
    this.playing = false; // the page's playout is playing the agent (not idle, not buffering)
    this.firstArrival = null; // performance time the first audio since playout went idle arrived
    this.turn = 0;
  }

  async start() {
    setState("connecting", "Connecting…");
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule(STATIC + "capture-worklet.js");
    await this.ctx.audioWorklet.addModule(STATIC + "playout-worklet.js");
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    this.playout = new AudioWorkletNode(this.ctx, "playout", { numberOfInputs: 0, outputChannelCount: [1] });
    this.playout.port.onmessage = (event) => this.fromPlayout(event.data);
    this.playout.connect(this.ctx.destination);
    const url = new URL("/console/phone/ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.send({ type: "start", agent: this.agent, quality: this.quality });
    this.ws.onmessage = (event) => this.fromGateway(event.data);
    this.ws.onclose = (event) => this.closed(event);
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  began(message) {
    this.line = message;
    this.mulaw = message.encoding === "mulaw";
    $("call-sid").textContent = message.call_sid;
    setState("in-call", `In a call with ${message.agent} (${message.quality}: ` +
      `${message.in_rate / 1000} kHz up, ${message.out_rate / 1000} kHz down)`);
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, "capture", {
      processorOptions: { lineRate: message.in_rate }, outputChannelCount: [1],
    });
    this.capture.port.onmessage = (event) => this.fromMicrophone(event.data);
    source.connect(this.capture).connect(this.ctx.destination); // its output is silence: it only listens
    this.pinger = setInterval(() => this.ping(), PING_S * 1000);
    this.ping();
  }

  fromMicrophone({ frame, start, peak, lastLoud }) {
    if (this.muted) {
      new Int16Array(frame).fill(0);
    } else {
      this.lastLoud = lastLoud;
      $("mic-level").value = peak;
    }
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const pcm = new Int16Array(frame);
    const data = this.mulaw ? ulawEncode(pcm) : new Uint8Array(frame);
    this.ws.send(data);
    count("frames-sent");
    count("bytes-sent", data.byteLength);
    // From the frame's first sample entering the audio graph to its send, plus half the round trip.
    this.micAges.push((this.ctx.currentTime - start) * 1000);
    if (this.micAges.length > 200) this.micAges.shift();
    this.showPath();
  }

  fromGateway(data) {
    if (data instanceof ArrayBuffer) {
      if (!this.playing && this.firstArrival === null) this.firstArrival = performance.now();
      count("frames-received");
      count("bytes-received", data.byteLength); // before the buffer moves to the worklet
      const pcm = this.mulaw ? ulawDecode(new Uint8Array(data)) : new Int16Array(data);
      this.playout.port.postMessage({ audio: pcm.buffer, rate: this.line.out_rate }, [pcm.buffer]);
      return;
    }
    const message = JSON.parse(data);
    switch (message.type) {
      case "started": this.began(message); break;
      case "mark": this.playout.port.postMessage({ mark: message.name }); break;
      case "clear":
        this.playout.port.postMessage({ clear: true });
        this.playing = false;
        this.firstArrival = null;
        count("clears");
        $("clears").dataset.framesBefore = String(counters["frames-received"]); // what came after is new
        break;
      case "transcript": this.transcript(message.role, message.text); break;
      case "response": this.gatewayLatency(message.latency_ms); break;
      case "pong": this.pong(message.id); break;
      case "transfer":
        this.note(`The agent transferred the call to ${message.target}. A phone caller would now be ` +
          "connected to that number; a browser call ends here.");
        break;
      case "ended": this.outcome = message.outcome; break;
    }
  }

  fromPlayout(message) {
    if (message.played !== undefined) {
      this.send({ type: "mark", name: message.played });
      count("marks");
    } else if (message.started !== undefined) {
      this.agentStarted(message.started);
    } else if (message.level !== undefined) {
      $("agent-level").value = message.level;
      $("queued").textContent = `${Math.round(message.queuedMs)} ms`;
    } else if (message.idle) {
      this.playing = false;
      if (message.underrun) count("underruns");
    }
  }

  outputLatencyMs() {
    return 1000 * (this.ctx.outputLatency || this.ctx.baseLatency || 0);
  }

  agentStarted(at) {
    this.playing = true;
    // The gateway-to-speaker path: from the first packet's arrival to its playout start, then the output.
    if (this.firstArrival !== null) {
      const startedAt = performance.now() - (this.ctx.currentTime - at) * 1000;
      this.speakerDelays.push(startedAt - this.firstArrival + this.outputLatencyMs());
      this.firstArrival = null;
      this.showPath();
    }
    // Response latency heard here: the caller's last loud sample to the agent's first audible sample.
    if (this.lastLoud > this.lastStart) {
      this.heardLatency((at - this.lastLoud) * 1000 + this.outputLatencyMs());
    }
    this.lastStart = at;
  }

  turnRow(column) {
    const rows = $("turns").rows;
    const last = rows[rows.length - 1];
    if (last && !last.cells[column].textContent) return last;
    const row = $("turns").insertRow();
    row.insertCell().textContent = String(++this.turn);
    row.insertCell();
    row.insertCell();
    return row;
  }

  gatewayLatency(ms) {
    const cell = this.turnRow(1).cells[1];
    cell.textContent = `${ms} ms`;
    cell.dataset.ms = String(ms);
  }

  heardLatency(ms) {
    const cell = this.turnRow(2).cells[2];
    cell.textContent = `${Math.round(ms)} ms`;
    cell.dataset.ms = String(ms);
  }

  transcript(role, text) {
    const item = document.createElement("li");
    item.className = role;
    item.dataset.role = role;
    item.textContent = text;
    $("transcript").append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  note(text) {
    const item = document.createElement("li");
    item.className = "note";
    item.textContent = text;
    $("transcript").append(item);
  }

  ping() {
    const id = this.pingId++;
    this.pings.set(id, performance.now());
    this.send({ type: "ping", id });
  }

  pong(id) {
    const sent = this.pings.get(id);
    this.pings.delete(id);
    if (sent === undefined) return;
    this.rtts.push(performance.now() - sent);
    if (this.rtts.length > 60) this.rtts.shift();
    this.showPath();
  }

  showPath() {
    const rtt = median(this.rtts);
    const half = rtt === null ? 0 : rtt / 2;
    show("rtt", rtt);
    const mic = median(this.micAges);
    show("mic-to-gateway", mic === null ? null : mic + half);
    const speaker = median(this.speakerDelays);
    show("gateway-to-speaker", speaker === null ? null : speaker + half);
  }

  key(digit) {
    this.send({ type: "dtmf", digit });
    $("digits").textContent += digit;
  }

  hangUp() {
    this.send({ type: "hangup" });
    setState("connecting", "Hanging up…");
  }

  closed(event) {
    clearInterval(this.pinger);
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.ctx) this.ctx.close();
    const why = this.outcome || event.reason || `closed (${event.code})`;
    $("outcome").textContent = why;
    // Nothing is muted or playing any more: the controls say so (the next call starts unmuted).
    $("mute").textContent = "Mute";
    $("mute").setAttribute("aria-pressed", "false");
    $("mic-level").value = 0;
    $("agent-level").value = 0;
    setState("ended", `Call ended: ${why.replaceAll("_", " ")}`);
    if (this.line) {
      $("record").href = `/console/calls/${this.line.call_sid}`; // its transcript, recording and cost
      $("record").hidden = false;
    }
    call = null;
  }
}

let call = null;

// The form only groups the controls: Enter in it must not reload the page (no inline handler: the CSP has
// no 'unsafe-inline').
$("dial").addEventListener("submit", (event) => event.preventDefault());

$("call").addEventListener("click", async () => {
  for (const id of ["transcript", "turns"]) $(id).replaceChildren();
  $("digits").textContent = "";
  $("outcome").textContent = "";
  $("record").hidden = true;
  $("mute").textContent = "Mute";
  $("mute").setAttribute("aria-pressed", "false");
  for (const name of Object.keys(counters)) count(name, -counters[name]);
  const quality = document.querySelector("input[name=quality]:checked").value;
  call = new PhoneCall($("agent").value, quality);
  try {
    await call.start();
  } catch (error) {
    setState("ended", `Could not start the call: ${error.message || error}`);
    call = null;
  }
});

$("hangup").addEventListener("click", () => call && call.hangUp());
$("mute").addEventListener("click", () => {
  if (!call) return;
  call.muted = !call.muted;
  $("mute").setAttribute("aria-pressed", String(call.muted));
  $("mute").textContent = call.muted ? "Unmute" : "Mute";
});
for (const button of document.querySelectorAll("#keypad button")) {
  button.addEventListener("click", () => call && call.key(button.dataset.digit));
}
function showAbout() {
  $("about").textContent = $("agent").selectedOptions[0]?.dataset.about || "";
}
$("agent").addEventListener("change", showAbout);
showAbout();
setState("idle", "Ready");
