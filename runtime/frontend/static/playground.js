// Orpheus TTS playground: a key, a voice, some text, and speech played while it streams.
//
// No dependencies and nothing inline: the page is served with script-src 'self' and
// connect-src 'self' (runtime/frontend/playground.py). The API key lives in this tab's
// sessionStorage and travels only in the X-API-Key header of same-origin /v1 calls (relative
// URLs, redirects refused so that a redirect can never carry it elsewhere).
//
// WAV plays as it streams: the page asks for raw pcm (s16le mono) with stream: true and
// schedules each chunk on a Web Audio clock as it arrives; Download wraps what was received in a
// WAV header. The compressed formats are played once they have fully arrived (the browser's
// decoder needs the whole file) and downloaded as received.

const KEY_STORAGE = "orpheus.apiKey";
const STREAMED_FORMAT = "wav";
const LEAD_S = 0.08; // how far ahead of the audio clock a chunk is scheduled
const COLD_START_HINT_S = 6; // after this long without audio, explain cold starts
const MIME = { wav: "audio/wav", mp3: "audio/mpeg", opus: "audio/ogg", flac: "audio/flac",
               aac: "audio/aac", pcm: "audio/L16" };

const $ = (id) => document.getElementById(id);
const ui = {
  keyForm: $("key-form"), key: $("key"), forget: $("forget"), keyStatus: $("key-status"),
  voice: $("voice"), format: $("format"), speed: $("speed"), speedValue: $("speed-value"),
  tags: $("tags"), text: $("text"), count: $("count"),
  speak: $("speak"), stop: $("stop"), download: $("download"), downloadLink: $("download-link"),
  status: $("status"), firstAudio: $("first-audio"), total: $("total"), received: $("received"),
  played: $("played"), error: $("error"),
};

let apiKey = null;
let capabilities = null; // GET /v1/audio/capabilities
let audioContext = null;
let take = null; // the request being played, or the last one

// --- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, code = null, requestId = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }

  static async from(response) {
    let message = `the service answered ${response.status} ${response.statusText}`.trim();
    let code = null;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) {
        message = body.error.message;
        code = body.error.code || null;
      }
    } catch { /* not JSON: Cloud Run's own error page, a proxy */ }
    return new ApiError(response.status, message, code, response.headers.get("x-request-id"));
  }
}

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("X-API-Key", apiKey);
  let response;
  try {
    response = await fetch(path, { ...init, headers, cache: "no-store", credentials: "omit",
                                   redirect: "error" });
  } catch (err) {
    if (init.signal && init.signal.aborted) throw err;
    throw new ApiError(0, `could not reach the service (${err.message})`);
  }
  if (!response.ok) throw await ApiError.from(response);
  return response;
}

// What to do about an error, for a person.
function advice(err) {
  if (err.status === 401) {
    return "Check the key (`orpheus keys list` shows the last four characters of each); a key " +
      "created or revoked in the last 30 seconds may not be in force yet.";
  }
  if (err.code === "concurrency_limit_exceeded" || err.code === "rate_limit_exceeded") {
    return "This key is over its limit of streams or requests; wait for its other requests, " +
      "or the time the error names.";
  }
  if (err.code === "queue_full" || err.code === "queue_timeout") {
    return "Every GPU slot is busy and the queue is full or the wait ran out; try again shortly.";
  }
  if (err.status === 503 || err.status === 429) {
    return "The GPU backend is probably starting (after an idle period a cold start loads the " +
      "model, which can take a few minutes). Try again shortly.";
  }
  if (err.status === 504) {
    return "No audio arrived in time; the backend may still be starting. Try again shortly.";
  }
  if (err.code === "input_too_long" || err.status === 413) {
    return `Shorten the text to at most ${capabilities ? capabilities.max_input_chars : "the"} ` +
      "characters.";
  }
  if (err.status >= 500) return "The service failed; its log has this request's id.";
  if (err.status === 0) return "Check that the service is running and reachable.";
  return "";
}

// --- errors and status -------------------------------------------------------------------

function showError(err) {
  const box = ui.error;
  box.replaceChildren();
  const title = document.createElement("p");
  title.className = "error-message";
  title.textContent = err.status ? `Error ${err.status}: ${err.message}` : `Error: ${err.message}`;
  box.append(title);
  const hint = advice(err);
  if (hint) {
    const line = document.createElement("p");
    line.textContent = hint;
    box.append(line);
  }
  if (err.requestId) {
    const id = document.createElement("p");
    id.className = "request-id";
    id.textContent = `Request id: ${err.requestId}`;
    box.append(id);
  }
  box.dataset.status = String(err.status);
  box.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.replaceChildren();
  delete ui.error.dataset.status;
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function seconds(value) {
  return `${value.toFixed(2)} s`;
}

// --- the key -----------------------------------------------------------------------------

function setConnected(connected) {
  for (const control of [ui.voice, ui.format, ui.speed]) control.disabled = !connected;
  ui.forget.disabled = !connected;
  for (const button of ui.tags.querySelectorAll("button")) button.disabled = !connected;
  updateSpeakButton();
}

async function connect(key) {
  apiKey = key;
  hideError();
  ui.keyStatus.dataset.state = "checking";
  ui.keyStatus.textContent = "Checking the key…";
  try {
    const [voices, caps] = await Promise.all([
      api("/v1/audio/voices").then((r) => r.json()),
      api("/v1/audio/capabilities").then((r) => r.json()),
    ]);
    capabilities = caps;
    sessionStorage.setItem(KEY_STORAGE, key);
    fillVoices(voices);
    fillFormats(caps);
    ui.speed.min = String(caps.min_speed);
    ui.speed.max = String(caps.max_speed);
    ui.keyStatus.dataset.state = "connected";
    ui.keyStatus.textContent = `Connected: ${voices.voices.length} voices, up to ` +
      `${caps.max_input_chars} characters per request.`;
    setConnected(true);
  } catch (err) {
    apiKey = null;
    capabilities = null;
    sessionStorage.removeItem(KEY_STORAGE);
    ui.keyStatus.dataset.state = "refused";
    ui.keyStatus.textContent = err.status === 401 ? "The key was refused." : "Not connected.";
    setConnected(false);
    showError(err);
  }
  updateCount();
}

function forget() {
  apiKey = null;
  capabilities = null;
  sessionStorage.removeItem(KEY_STORAGE);
  ui.key.value = "";
  ui.keyStatus.dataset.state = "none";
  ui.keyStatus.textContent = "Not connected.";
  setConnected(false);
  updateCount();
}

function fillVoices(list) {
  ui.voice.replaceChildren(...list.voices.map((name) => new Option(name, name)));
  ui.voice.value = list.default;
  ui.tags.replaceChildren(...list.emotion_tags.map((tag) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tag";
    button.textContent = tag;
    button.title = `Insert ${tag} at the cursor`;
    button.addEventListener("click", () => insertAtCursor(tag));
    return button;
  }));
}

function fillFormats(caps) {
  // WAV is fetched as pcm and streamed; the others arrive whole before they play.
  const names = [STREAMED_FORMAT, ...caps.formats.filter((f) => f !== "pcm" && f !== "wav")];
  ui.format.replaceChildren(...names.map((name) => new Option(
    name === STREAMED_FORMAT ? "wav (plays while streaming)" : `${name} (plays when complete)`,
    name)));
  ui.format.value = STREAMED_FORMAT;
}

// --- the text ----------------------------------------------------------------------------

function insertAtCursor(tag) {
  const text = ui.text;
  const start = text.selectionStart;
  const end = text.selectionEnd;
  const before = text.value.slice(0, start);
  const after = text.value.slice(end);
  const lead = before && !/\s$/.test(before) ? " " : "";
  const trail = after && /^\s/.test(after) ? "" : " ";
  text.setRangeText(lead + tag + trail, start, end, "end");
  text.focus();
  updateCount();
}

function characters() {
  // The server counts code points of the trimmed text (Python's len), not UTF-16 units.
  return [...ui.text.value.trim()].length;
}

function updateCount() {
  const count = characters();
  const limit = capabilities ? capabilities.max_input_chars : null;
  const over = limit !== null && count > limit;
  ui.count.textContent = limit === null
    ? `${count} characters`
    : `${count} / ${limit} characters` + (over ? ` (${count - limit} over the limit)` : "");
  ui.count.classList.toggle("over", over);
  updateSpeakButton();
}

function updateSpeakButton() {
  const busy = take !== null && take.running;
  ui.speak.disabled = busy || apiKey === null || capabilities === null || characters() === 0;
  ui.stop.disabled = !(busy || (take !== null && take.playing()));
}

// --- playback ----------------------------------------------------------------------------

// Schedules s16le mono chunks back to back on the audio clock as they arrive.
class PcmPlayer {
  constructor(context, sampleRate, onIdle) {
    this.context = context;
    this.sampleRate = sampleRate;
    this.onIdle = onIdle;
    this.carry = null; // a chunk can end in the middle of a sample
    this.next = 0;
    this.segments = []; // [start, duration] on the audio clock
    this.sources = new Set();
    this.finished = false;
  }

  push(bytes) {
    let data = bytes;
    if (this.carry !== null) {
      data = new Uint8Array(bytes.length + 1);
      data[0] = this.carry;
      data.set(bytes, 1);
      this.carry = null;
    }
    if (data.length % 2) {
      this.carry = data[data.length - 1];
      data = data.subarray(0, data.length - 1);
    }
    const count = data.length / 2;
    if (!count) return;
    const view = new DataView(data.buffer, data.byteOffset, data.length);
    const buffer = this.context.createBuffer(1, count, this.sampleRate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // Late chunks (a stream slower than real time) start a little after now: a gap, not a skip.
    const at = Math.max(this.next, this.context.currentTime + LEAD_S);
    source.start(at);
    this.next = at + buffer.duration;
    this.segments.push([at, buffer.duration]);
    this.sources.add(source);
    source.addEventListener("ended", () => {
      this.sources.delete(source);
      if (this.finished && this.sources.size === 0) this.onIdle();
    });
  }

  finish() {
    this.finished = true;
    if (this.sources.size === 0) this.onIdle();
  }

  stop() {
    this.finished = true;
    for (const source of this.sources) source.stop();
    this.sources.clear();
  }

  active() {
    return this.sources.size > 0;
  }

  played() {
    const now = this.context.currentTime;
    let total = 0;
    for (const [start, duration] of this.segments) {
      total += Math.min(Math.max(now - start, 0), duration);
    }
    return total;
  }
}

// One press of Speak: the request, what arrived, and how it is being played.
class Take {
  constructor(format, voice, sampleRate) {
    this.format = format;
    this.voice = voice;
    this.sampleRate = sampleRate;
    this.streamed = format === STREAMED_FORMAT;
    this.controller = new AbortController();
    this.chunks = [];
    this.bytes = 0;
    this.t0 = performance.now();
    this.firstAudio = null; // seconds from Speak to the first scheduled audio
    this.total = null; // seconds from Speak to the end of the stream
    this.running = true;
    this.player = null;
  }

  add(chunk) {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  elapsed() {
    return (performance.now() - this.t0) / 1000;
  }

  receivedSeconds() {
    return this.streamed ? Math.floor(this.bytes / 2) / this.sampleRate : null;
  }

  playing() {
    return this.player !== null && this.player.active();
  }

  stop() {
    this.controller.abort();
    if (this.player) this.player.stop();
  }
}

async function getAudioContext() {
  if (audioContext === null) audioContext = new AudioContext();
  if (audioContext.state !== "running") await audioContext.resume();
  return audioContext;
}

function showMetrics(current) {
  ui.firstAudio.textContent = current.firstAudio === null ? "–" : seconds(current.firstAudio);
  ui.total.textContent = current.total === null ? "–" : seconds(current.total);
  const received = current.receivedSeconds();
  ui.received.textContent = received === null
    ? `${(current.bytes / 1024).toFixed(1)} KiB`
    : seconds(received);
  ui.played.textContent = current.player ? seconds(current.player.played()) : "–";
}

function tick(current) {
  showMetrics(current);
  if (current.running && current.firstAudio === null) {
    const waited = current.elapsed();
    let text = `Waiting for the first audio… ${Math.floor(waited)} s`;
    if (waited >= COLD_START_HINT_S) {
      text += " (the first request after an idle period waits for the GPU backend to start: " +
        "up to a few minutes)";
    }
    setStatus("waiting", text);
  }
}

function finished(current) {
  if (take !== current || current.running) return;
  showMetrics(current);
  updateSpeakButton();
  // A stream that broke off or was stopped keeps saying so once its audio has played out.
  if (ui.status.dataset.state === "error" || ui.status.dataset.state === "stopped") return;
  setStatus("done", `Done: ${seconds(current.player.played())} of audio.`);
}

async function speak() {
  if (take !== null) take.stop();
  hideError();
  const context = await getAudioContext();
  const current = new Take(ui.format.value, ui.voice.value, capabilities.sample_rate);
  take = current;
  ui.download.disabled = true;
  setStatus("waiting", "Waiting for the first audio…");
  updateSpeakButton();
  showMetrics(current);
  const timer = setInterval(() => tick(current), 100);
  try {
    const response = await api("/v1/audio/speech", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: "orpheus",
        input: ui.text.value,
        voice: ui.voice.value,
        response_format: current.streamed ? "pcm" : current.format,
        speed: Number(ui.speed.value),
        stream: true,
      }),
      signal: current.controller.signal,
    });
    current.requestId = response.headers.get("x-request-id");
    if (current.streamed) {
      current.player = new PcmPlayer(context, current.sampleRate, () => finished(current));
    }
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!value || value.length === 0) continue;
      current.add(value);
      if (current.player) {
        current.player.push(value);
        if (current.firstAudio === null) {
          current.firstAudio = current.elapsed();
          setStatus("playing", "Playing while it streams…");
        }
      }
      showMetrics(current);
    }
    current.total = current.elapsed();
    current.running = false;
    if (current.player) {
      current.player.finish();
    } else {
      await playWhole(context, current);
    }
  } catch (err) {
    current.running = false;
    if (take !== current) return; // replaced by a newer take: the page is about that one now
    if (current.controller.signal.aborted) {
      setStatus("stopped", "Stopped.");
    } else if (err instanceof ApiError) {
      setStatus("error", "The request failed.");
      showError(err);
    } else {
      // The body broke off: the service failed after audio had started.
      const got = current.receivedSeconds();
      setStatus("error", "The stream broke off.");
      showError(new ApiError(0, "the stream broke off after " +
        (got === null ? `${current.bytes} bytes` : seconds(got)) + ` of audio (${err.message})`,
        null, current.requestId));
      if (current.player) current.player.finish();
    }
  } finally {
    clearInterval(timer);
    current.running = false;
    if (take === current) {
      showMetrics(current);
      ui.download.disabled = current.bytes === 0;
    }
    updateSpeakButton();
  }
}

async function playWhole(context, current) {
  const whole = await new Blob(current.chunks).arrayBuffer();
  let buffer;
  try {
    buffer = await context.decodeAudioData(whole);
  } catch {
    setStatus("done", `The ${current.format} file arrived, but this browser cannot play it: ` +
      "use Download.");
    return;
  }
  current.player = new PcmPlayer(context, buffer.sampleRate, () => finished(current));
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  const at = context.currentTime + LEAD_S;
  source.start(at);
  current.player.segments.push([at, buffer.duration]);
  current.player.sources.add(source);
  source.addEventListener("ended", () => {
    current.player.sources.delete(source);
    current.player.finish();
  });
  current.firstAudio = current.elapsed();
  setStatus("playing", `Playing the ${current.format} file…`);
}

function stop() {
  if (take === null) return;
  take.stop();
  setStatus("stopped", "Stopped.");
  updateSpeakButton();
}

// --- download ----------------------------------------------------------------------------

function wavHeader(dataBytes, sampleRate) {
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i++) header.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  ascii(36, "data");
  header.setUint32(40, dataBytes, true);
  return header.buffer;
}

function download() {
  if (take === null || take.bytes === 0) return;
  let blob;
  let extension = take.format;
  if (take.streamed) {
    const pcm = new Uint8Array(take.bytes - (take.bytes % 2)); // whole samples only
    let offset = 0;
    for (const chunk of take.chunks) {
      const part = chunk.subarray(0, Math.min(chunk.length, pcm.length - offset));
      pcm.set(part, offset);
      offset += part.length;
    }
    blob = new Blob([wavHeader(pcm.length, take.sampleRate), pcm], { type: MIME.wav });
    extension = "wav";
  } else {
    blob = new Blob(take.chunks, { type: MIME[take.format] || "application/octet-stream" });
  }
  const url = URL.createObjectURL(blob);
  ui.downloadLink.href = url;
  ui.downloadLink.download = `orpheus-${take.voice}.${extension}`;
  ui.downloadLink.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// --- wiring ------------------------------------------------------------------------------

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = ui.key.value.trim();
  if (key) connect(key);
});
ui.forget.addEventListener("click", forget);
ui.text.addEventListener("input", updateCount);
ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !ui.speak.disabled) speak();
});
ui.speed.addEventListener("input", () => {
  ui.speedValue.textContent = `${Number(ui.speed.value).toFixed(2)}×`;
});
ui.speak.addEventListener("click", speak);
ui.stop.addEventListener("click", stop);
ui.download.addEventListener("click", download);

updateCount();
const saved = sessionStorage.getItem(KEY_STORAGE);
if (saved) {
  ui.key.value = saved;
  connect(saved);
}
