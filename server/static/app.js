// cspserve web demo: picks a model, sends an image to the friendly REST API (/v1) and shows the
// classes or the boxes it returns. Plain ES module, no dependencies, no build step.
//
// State the browser test reads: body[data-state] (loading | ready | running | done | error),
// #detections li[data-label][data-score][data-class-id], #classes li[data-label][data-score],
// #overlay[data-boxes] (boxes drawn), #error (the server's message).

const $ = (id) => document.getElementById(id);

const ui = {
  model: $("model"),
  modelInfo: $("model-info"),
  apiKey: $("api-key"),
  score: $("score"),
  scoreValue: $("score-value"),
  iou: $("iou"),
  iouValue: $("iou-value"),
  topK: $("top-k"),
  dropZone: $("drop-zone"),
  file: $("file"),
  cameraCapture: $("camera-capture"),
  cameraFile: $("camera-file"),
  cameraOpen: $("camera-open"),
  camera: $("camera"),
  cameraVideo: $("camera-video"),
  cameraShoot: $("camera-shoot"),
  cameraClose: $("camera-close"),
  error: $("error"),
  status: $("status"),
  results: $("results"),
  stage: $("stage"),
  frame: $("stage-frame"),
  preview: $("preview"),
  overlay: $("overlay"),
  caption: $("stage-caption"),
  classes: $("classes"),
  detections: $("detections"),
  timings: $("timings"),
};

const DEBOUNCE_MS = 250;
/** The one-column layout's breakpoint (app.css). */
const NARROW = "(max-width: 46rem)";
const KEY_STORAGE = "cspserve.apiKey";

const state = {
  models: [],
  /** The last image: { blob, name, url }. */
  image: null,
  /** The last successful result for the current image, kept to redraw on resize. */
  result: null,
  /** Each run gets a number; only the latest one may touch the page. */
  run: 0,
  controller: null,
  timer: 0,
  stream: null,
};

// ---------------------------------------------------------------------------------------------
// Talking to the server

/** A failed API call, with the server's JSON error when it sent one. */
class ApiFailure extends Error {
  constructor(status, statusText, message, kind) {
    super(message);
    this.status = status;
    this.statusText = statusText;
    this.kind = kind;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = ui.apiKey.value.trim();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiFailure(0, "", `could not reach the server (${e.message})`, "network");
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : text.trim() || "no error message";
    throw new ApiFailure(response.status, response.statusText, message, body && body.kind);
  }
  if (body === null) throw new ApiFailure(response.status, response.statusText, "the response is not JSON", "");
  return body;
}

// ---------------------------------------------------------------------------------------------
// Models

async function loadModels(wanted) {
  setState("loading");
  try {
    const body = await api("/v1/models");
    state.models = Array.isArray(body.models) ? body.models : [];
  } catch (e) {
    showError(e);
    ui.model.replaceChildren(new Option("No models (see the error)", ""));
    return;
  }
  ui.model.replaceChildren(
    ...state.models.map((m) => new Option(`${m.name} (${taskName(m.task)}, ${inputSize(m)})`, m.name)),
  );
  if (state.models.length === 0) {
    ui.model.replaceChildren(new Option("The server serves no models", ""));
    setStatus("The server serves no models.");
    setState("error");
    return;
  }
  if (wanted && state.models.some((m) => m.name === wanted)) ui.model.value = wanted;
  ui.model.disabled = false;
  modelChanged(false);
  setState("ready");
}

function currentModel() {
  return state.models.find((m) => m.name === ui.model.value) || null;
}

function taskName(task) {
  return task === "detect" ? "detector" : "classifier";
}

/** `input_size` is [height, width]; people read width x height. */
function inputSize(model) {
  const [h, w] = model.input_size || [];
  return `${w}\u00d7${h}`;
}

function modelChanged(rerun = true) {
  const model = currentModel();
  if (!model) return;
  const labels = model.labels && model.labels.length ? "" : ", no class names";
  ui.modelInfo.textContent =
    `${model.architecture}, ${taskName(model.task)}, input ${inputSize(model)}, ` +
    `${model.num_classes} classes${labels}, ${formatFlops(model.bflops)} BFLOPs on ${model.device}` +
    (model.dtype && model.dtype !== "f32" ? ` in ${model.dtype}` : "");
  for (const el of document.querySelectorAll("[data-task]")) el.hidden = el.dataset.task !== model.task;
  ui.topK.max = String(Math.max(1, model.num_classes));
  saveToUrl();
  if (rerun) runNow();
}

// ---------------------------------------------------------------------------------------------
// Parameters (mirrored in the URL so a setup can be shared: /?model=det&score=0.1)

function readUrl() {
  const q = new URLSearchParams(location.search);
  const number = (name, input) => {
    const v = q.get(name);
    if (v !== null && v.trim() !== "" && Number.isFinite(Number(v))) input.value = v;
  };
  number("score", ui.score);
  number("iou", ui.iou);
  number("top_k", ui.topK);
  return q.get("model");
}

function saveToUrl() {
  const q = new URLSearchParams();
  if (ui.model.value) q.set("model", ui.model.value);
  const model = currentModel();
  if (model && model.task === "detect") {
    q.set("score", ui.score.value);
    q.set("iou", ui.iou.value);
  } else if (model) {
    q.set("top_k", ui.topK.value);
  }
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

function showParameterValues() {
  ui.scoreValue.value = Number(ui.score.value).toFixed(3);
  ui.iouValue.value = Number(ui.iou.value).toFixed(2);
}

function topKValid() {
  const k = Number(ui.topK.value);
  const ok = Number.isInteger(k) && k >= 1;
  ui.topK.setAttribute("aria-invalid", String(!ok));
  return ok;
}

/** The query string of a request for `model`, from the controls. */
function requestQuery(model) {
  const q = new URLSearchParams();
  if (model.task === "detect") {
    q.set("score_threshold", ui.score.value);
    q.set("iou_threshold", ui.iou.value);
  } else {
    q.set("top_k", String(Math.min(Number(ui.topK.value), Math.max(1, model.num_classes))));
  }
  return q;
}

// ---------------------------------------------------------------------------------------------
// Images in

function setImage(blob, name) {
  if (!blob) return;
  if (state.image) URL.revokeObjectURL(state.image.url);
  state.image = { blob, name: name || "image", url: URL.createObjectURL(blob) };
  state.result = null;
  clearOutput();
  ui.frame.hidden = false;
  ui.preview.src = state.image.url;
  ui.preview.alt = `The image ${state.image.name}`;
  ui.stage.hidden = false;
  ui.caption.textContent = `${state.image.name}, ${formatBytes(blob.size)}`;
  // On a phone the results are below the controls: bring them into view.
  if (window.matchMedia(NARROW).matches) {
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    ui.results.scrollIntoView({ block: "start", behavior: smooth ? "smooth" : "auto" });
  }
  runNow();
}

/** The browser cannot show the file (the server will say why it cannot use it either). */
function previewFailed() {
  if (!state.image) return;
  ui.frame.hidden = true;
  ui.caption.textContent = `${state.image.name}, ${formatBytes(state.image.blob.size)}: the browser cannot show this file`;
}

function firstFile(list) {
  return list && list.length ? list[0] : null;
}

function wireImageInputs() {
  ui.file.addEventListener("change", () => {
    const file = firstFile(ui.file.files);
    if (file) setImage(file, file.name);
    ui.file.value = ""; // choosing the same file again still fires `change`
  });
  ui.cameraFile.addEventListener("change", () => {
    const file = firstFile(ui.cameraFile.files);
    if (file) setImage(file, file.name || "photo");
    ui.cameraFile.value = "";
  });

  // Drag and drop onto the zone; a file dropped elsewhere must not navigate away from the page.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  ui.dropZone.addEventListener("dragenter", () => ui.dropZone.classList.add("dragging"));
  ui.dropZone.addEventListener("dragover", (e) => {
    e.dataTransfer.dropEffect = "copy";
    ui.dropZone.classList.add("dragging");
  });
  ui.dropZone.addEventListener("dragleave", (e) => {
    if (!ui.dropZone.contains(e.relatedTarget)) ui.dropZone.classList.remove("dragging");
  });
  ui.dropZone.addEventListener("drop", (e) => {
    ui.dropZone.classList.remove("dragging");
    const file = firstFile(e.dataTransfer.files);
    if (file) setImage(file, file.name);
  });

  document.addEventListener("paste", (e) => {
    const file = firstFile(e.clipboardData && e.clipboardData.files);
    if (file) setImage(file, file.name || "pasted image");
  });

  // A capture-enabled file input opens the camera app on phones; elsewhere it is a plain picker.
  if (window.matchMedia("(pointer: coarse)").matches) ui.cameraCapture.hidden = false;
  if (navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function") {
    ui.cameraOpen.hidden = false;
    ui.cameraOpen.addEventListener("click", openCamera);
    ui.cameraShoot.addEventListener("click", shoot);
    ui.cameraClose.addEventListener("click", closeCamera);
  }
}

async function openCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (e) {
    showMessage("Camera unavailable", `${e.name}: ${e.message}`);
    return;
  }
  ui.cameraVideo.srcObject = state.stream;
  ui.camera.hidden = false;
  ui.cameraOpen.hidden = true;
  await ui.cameraVideo.play().catch(() => {});
  ui.cameraShoot.focus();
}

function shoot() {
  const video = ui.cameraVideo;
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => setImage(blob, "camera.jpg"), "image/jpeg", 0.92);
}

function closeCamera() {
  if (state.stream) for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  ui.cameraVideo.srcObject = null;
  ui.camera.hidden = true;
  ui.cameraOpen.hidden = false;
  ui.cameraOpen.focus();
}

// ---------------------------------------------------------------------------------------------
// Running

/** Re-runs after the controls have been still for a moment. */
function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(runNow, DEBOUNCE_MS);
}

async function runNow() {
  clearTimeout(state.timer);
  const model = currentModel();
  if (!model || !state.image) return;
  if (model.task === "classify" && !topKValid()) {
    showMessage("Invalid parameter", "Top classes must be a whole number of at least 1.");
    return;
  }
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const run = ++state.run;
  const image = state.image;
  const endpoint = model.task === "detect" ? "detect" : "classify";
  const path = `/v1/models/${encodeURIComponent(model.name)}/${endpoint}?${requestQuery(model)}`;
  // The server checks the bytes itself: anything that does not say it is an image goes as bytes.
  const type = image.blob.type && image.blob.type.startsWith("image/") ? image.blob.type : "application/octet-stream";

  setState("running");
  setStatus(`Running ${model.name} on ${image.name}\u2026`);
  const started = performance.now();
  try {
    const body = await api(path, {
      method: "POST",
      headers: { "Content-Type": type },
      body: image.blob,
      signal: controller.signal,
    });
    if (run !== state.run) return;
    const roundTrip = performance.now() - started;
    state.result = { model, body, roundTrip };
    hideError();
    render();
    setState("done");
  } catch (e) {
    if (e.name === "AbortError" || run !== state.run) return;
    state.result = null;
    clearOutput();
    showError(e);
  } finally {
    if (state.controller === controller) state.controller = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Results out

function render() {
  const { model, body, roundTrip } = state.result;
  const result = body.results && body.results[0];
  if (!result) {
    showMessage("Unexpected response", "the server returned no result for the image");
    return;
  }
  clearOutput();
  if (model.task === "detect") {
    const detections = [...(result.detections || [])].sort((a, b) => b.score - a.score);
    renderDetections(detections);
    drawBoxes();
    const n = detections.length;
    setStatus(
      n === 0
        ? `No detections above score ${Number(ui.score.value).toFixed(3)}.`
        : `${n} detection${n === 1 ? "" : "s"}: ${summary(detections.map(labelOf))}.`,
    );
  } else {
    const classes = result.classes || [];
    renderClasses(classes);
    drawBoxes();
    const best = classes[0];
    setStatus(best ? `Top class: ${labelOf(best)} (${best.score.toFixed(3)}).` : "No classes returned.");
  }
  renderTimings(body.timing || {}, roundTrip, result);
}

function labelOf(item) {
  if (item.label) return item.label;
  const id = item.class_id !== undefined ? item.class_id : item.index;
  return `class ${id}`;
}

/** "2 person, 1 dog" from a list of labels, most frequent first. */
function summary(labels) {
  const counts = new Map();
  for (const l of labels) counts.set(l, (counts.get(l) || 0) + 1);
  const parts = [...counts].sort((a, b) => b[1] - a[1]).map(([l, c]) => `${c} ${l}`);
  return parts.length > 4 ? `${parts.slice(0, 4).join(", ")}, \u2026` : parts.join(", ");
}

function renderDetections(detections) {
  const items = detections.map((d, i) => {
    const li = document.createElement("li");
    li.dataset.label = labelOf(d);
    li.dataset.score = String(d.score);
    li.dataset.classId = String(d.class_id);
    li.dataset.bbox = d.bbox.map((v) => v.toFixed(1)).join(",");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourOf(d.class_id).fill;
    swatch.setAttribute("aria-hidden", "true");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${i + 1}. ${labelOf(d)}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = d.score.toFixed(3);
    const box = document.createElement("span");
    box.className = "box";
    const [x1, y1, x2, y2] = d.bbox.map(Math.round);
    box.textContent = `(${x1}, ${y1}) \u2013 (${x2}, ${y2})`;
    box.title = "Box corners in image pixels";
    li.append(swatch, name, score, box);
    return li;
  });
  ui.detections.replaceChildren(...items);
  ui.detections.hidden = false;
}

function renderClasses(classes) {
  const items = classes.map((c) => {
    const li = document.createElement("li");
    li.dataset.label = labelOf(c);
    li.dataset.score = String(c.score);
    li.dataset.classId = String(c.index);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = labelOf(c);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = c.score.toFixed(3);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(1, c.score)) * 100}%`;
    bar.append(fill);
    li.append(name, score, bar);
    return li;
  });
  ui.classes.replaceChildren(...items);
  ui.classes.hidden = false;
}

function renderTimings(timing, roundTrip, result) {
  const rows = [
    ["decode", "Decode", timing.decode],
    ["queue", "Queue", timing.queue],
    ["inference", "Inference", timing.inference],
    ["total", "Total (server)", timing.total],
    ["round-trip", "Round trip (browser)", roundTrip],
  ];
  const pairs = [];
  const pair = (key, name, value) => {
    const div = document.createElement("div");
    div.dataset.timing = key;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    div.append(dt, dd);
    pairs.push(div);
  };
  for (const [key, name, ms] of rows) {
    if (typeof ms === "number") pair(key, name, `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`);
  }
  pair("image", "Image", `${result.width}\u00d7${result.height} px`);
  ui.timings.replaceChildren(...pairs);
  ui.timings.hidden = false;
}

function clearOutput() {
  ui.classes.replaceChildren();
  ui.detections.replaceChildren();
  ui.timings.replaceChildren();
  ui.classes.hidden = true;
  ui.detections.hidden = true;
  ui.timings.hidden = true;
  drawBoxes();
}

// ---------------------------------------------------------------------------------------------
// The overlay: boxes in original-image pixels scaled to the displayed image

const PALETTE = [
  "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
  "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324", "#800000",
];

/** A fill colour per class and the text colour readable on it. */
function colourOf(classId) {
  const fill = PALETTE[Math.abs(Number(classId) || 0) % PALETTE.length];
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(fill.slice(i, i + 2), 16) / 255);
  const lin = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const luminance = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  return { fill, text: luminance > 0.179 ? "#000" : "#fff" };
}

function drawBoxes() {
  const canvas = ui.overlay;
  const ctx = canvas.getContext("2d");
  const rect = ui.preview.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(rect.width * dpr));
  canvas.height = Math.max(1, Math.round(rect.height * dpr));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.boxes = "0";
  const current = state.result;
  if (!current || current.model.task !== "detect" || !rect.width) return;
  const result = current.body.results[0];
  const detections = [...(result.detections || [])].sort((a, b) => a.score - b.score); // best on top
  // The server's boxes are in the pixels it decoded (the preview ignores EXIF rotation, as it does).
  const sx = canvas.width / result.width;
  const sy = canvas.height / result.height;
  const fontPx = Math.round(12 * dpr);
  ctx.font = `600 ${fontPx}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  let drawn = 0;
  for (const d of detections) {
    const [x1, y1, x2, y2] = d.bbox;
    const x = x1 * sx;
    const y = y1 * sy;
    const w = Math.max(1, (x2 - x1) * sx);
    const h = Math.max(1, (y2 - y1) * sy);
    const { fill, text } = colourOf(d.class_id);
    ctx.lineWidth = 4 * dpr;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
    ctx.strokeRect(x, y, w, h);
    ctx.lineWidth = 2 * dpr;
    ctx.strokeStyle = fill;
    ctx.strokeRect(x, y, w, h);
    const label = `${labelOf(d)} ${d.score.toFixed(2)}`;
    const pad = 3 * dpr;
    const tw = ctx.measureText(label).width + 2 * pad;
    const th = fontPx + 2 * pad;
    const lx = Math.min(Math.max(0, x), Math.max(0, canvas.width - tw));
    const ly = y - th >= 0 ? y - th : Math.min(y, canvas.height - th);
    ctx.fillStyle = fill;
    ctx.fillRect(lx, ly, tw, th);
    ctx.fillStyle = text;
    ctx.fillText(label, lx + pad, ly + pad);
    drawn += 1;
  }
  canvas.dataset.boxes = String(drawn);
}

// ---------------------------------------------------------------------------------------------
// Status and errors

function setState(name) {
  document.body.dataset.state = name;
  ui.status.setAttribute("aria-busy", String(name === "running" || name === "loading"));
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(e) {
  if (e instanceof ApiFailure) {
    const head = e.status ? `${e.status} ${e.statusText}`.trim() : "Network error";
    let hint = "";
    if (e.status === 401) hint = "Enter the server's API key above, then try again.";
    showMessage(head, e.message, e.kind, hint);
  } else {
    showMessage("Error", String((e && e.message) || e));
  }
}

function showMessage(head, message, kind, hint) {
  const title = document.createElement("strong");
  title.textContent = head;
  const text = document.createElement("span");
  text.className = "message";
  text.textContent = message;
  const parts = [title, text];
  if (kind) {
    const code = document.createElement("code");
    code.textContent = kind;
    parts.push(code);
  }
  if (hint) {
    const p = document.createElement("span");
    p.className = "error-hint";
    p.textContent = hint;
    parts.push(p);
  }
  ui.error.replaceChildren(...parts);
  ui.error.hidden = false;
  ui.error.dataset.status = head;
  setStatus("The request failed.");
  setState("error");
}

function hideError() {
  ui.error.hidden = true;
  ui.error.replaceChildren();
}

function formatFlops(bflops) {
  const n = Number(bflops);
  return n >= 10 ? n.toFixed(1) : n.toPrecision(3);
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------------------------
// Start

function init() {
  const wanted = readUrl();
  showParameterValues();
  try {
    ui.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    // Storage can be off (private modes); the key then lives in the field only.
  }
  ui.apiKey.addEventListener("change", () => {
    try {
      sessionStorage.setItem(KEY_STORAGE, ui.apiKey.value.trim());
    } catch {
      // See above.
    }
    if (state.models.length === 0) loadModels(ui.model.value || wanted);
    else runNow();
  });
  ui.model.addEventListener("change", () => modelChanged(true));
  for (const input of [ui.score, ui.iou]) {
    input.addEventListener("input", () => {
      showParameterValues();
      saveToUrl();
      schedule();
    });
  }
  ui.topK.addEventListener("input", () => {
    if (!topKValid()) return;
    saveToUrl();
    schedule();
  });
  wireImageInputs();
  ui.preview.addEventListener("load", drawBoxes);
  ui.preview.addEventListener("error", previewFailed);
  new ResizeObserver(() => drawBoxes()).observe(ui.preview);
  loadModels(wanted);
}

init();
