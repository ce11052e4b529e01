// radiolens reading viewer, built on Cornerstone3D (web/: `npm ci && npm run build` writes static/app/viewer.js).
// Two ways in: an API key (kept in sessionStorage, cleared with the tab) or the session cookie of a password sign-in
// (/viewer/signin; HttpOnly, so the page never holds it: the browser sends it, and state-changing requests echo the
// radiolens_csrf cookie in X-CSRF-Token). Every image shown is the service's de-identified copy: the full-depth
// pixels (pixels.png, 16-bit) with their rescale and default window, never the upload.
// `/viewer/?prediction=<id>` opens a stored prediction (the worklist's Enter); N / P then move through the
// worklist's items (kept by the worklist page in sessionStorage) without going back to the list.
import {
  RenderingEngine, Enums, imageLoader, cache, metaData, init as csInit, utilities as csUtils,
} from "@cornerstonejs/core";
import {
  init as toolsInit, addTool, ToolGroupManager, WindowLevelTool, PanTool, ZoomTool, Enums as ToolEnums,
  synchronizers,
} from "@cornerstonejs/tools";
import { decode as decodePng } from "fast-png";
import { presetWindow } from "./presets.js";

const $ = (id) => document.getElementById(id);
const ADMIN = "if it keeps happening, tell your radiolens administrator.";
const ENGINE_ID = "radiolens-engine", GROUP_ID = "radiolens-tools";
const VIEWPORTS = { main: "viewport", heat: "viewport-heat" };

const state = {
  key: sessionStorage.getItem("radiolens.key"), me: null, mine: null, model: null, upload: 0,
  result: null, heat: null, pixels: null, imageId: null, engine: null, layout: "overlaid",
};

// ------------------------------------------------------------------ API and errors
// Every failure becomes an ApiError with what went wrong (message) and what to do (action). The service sends both
// in its JSON error body; answers without one (a proxy's 502, no network) get a plain-language pair here.
class ApiError extends Error {
  constructor(message, action, status, code) { super(message); this.action = action; this.status = status; this.code = code; }
}

function cookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

// With a key: the key, and no cookie matters (the service prefers a key). Without one: no Authorization header at
// all (an empty "Bearer" would be refused before the cookie is looked at), the session cookie, and the CSRF token
// on every request that changes something.
function authHeaders(method) {
  if (state.key) return { Authorization: "Bearer " + state.key };
  return ["POST", "PUT", "PATCH", "DELETE"].includes(method) ? { "X-CSRF-Token": cookie("radiolens_csrf") } : {};
}

async function api(path, options = {}) {
  const headers = Object.assign(authHeaders((options.method || "GET").toUpperCase()), options.headers || {});
  let resp;
  try {
    resp = await fetch(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
  } catch (e) {
    throw new ApiError("The radiolens service cannot be reached.", "Check the network connection and try again; " + ADMIN, 0, "network");
  }
  if (!resp.ok) {
    let message = "The service answered " + resp.status + " " + resp.statusText + ".";
    let action = "Try again; " + ADMIN, code = "http_error";
    try {
      const body = await resp.json();
      if (body.error) { message = body.error.message || message; action = body.error.action || action; code = body.error.code || code; }
    } catch (e) { /* not JSON: keep the plain-language pair */ }
    throw new ApiError(message, action, resp.status, code);
  }
  return resp;
}

// Shows an error in `el` as two lines: what went wrong, then what to do. Text nodes only (messages are never HTML).
function showError(el, err, prefix = "") {
  const message = err instanceof ApiError ? err.message : "The viewer could not show this result.";
  const action = err instanceof ApiError ? err.action : "Reload the page and try again; " + ADMIN;
  if (!(err instanceof ApiError)) console.error(err);
  const what = document.createElement("span"); what.className = "what";
  what.textContent = prefix + message.charAt(0).toUpperCase() + message.slice(1);
  const todo = document.createElement("span"); todo.className = "todo"; todo.textContent = action;
  el.replaceChildren(what, document.createElement("br"), todo);
  show(el, true);
}

function show(el, visible) { el.hidden = !visible; }

// ------------------------------------------------------------------ sign-in
async function signIn(key) {
  if (!key) {
    showError($("login-error"), new ApiError("No API key entered.", "Paste the key your radiolens administrator gave you (rlk_...), then Sign in."));
    return;
  }
  state.key = key;
  try {
    await enter();
    sessionStorage.setItem("radiolens.key", key);
  } catch (e) {
    state.key = null; sessionStorage.removeItem("radiolens.key");
    showError($("login-error"), e.status === 401 ? new ApiError("Unknown or revoked key.", e.action, 401) : e);
  }
}

// A password sign-in's session (its CSRF cookie is the sign that one may exist: the session cookie is HttpOnly).
async function resumeSession() {
  if (!cookie("radiolens_csrf")) return;
  try {
    await enter();
  } catch (e) {
    showError($("login-error"), e.status === 401
      ? new ApiError("Your sign-in has ended.", "Sign in again with your username and password (link below).", 401) : e);
  }
}

// Who is signed in and which model answers; then the app, and the prediction named in the address, if any.
async function enter() {
  const me = await (await api("/v1/me")).json();
  const models = await (await api("/v1/models")).json();
  state.me = me;
  state.model = models.models[0];
  $("who").textContent = "user " + me.user_id + " (" + me.role + ")" + (state.key ? "" : ", signed in");
  $("model").textContent = state.model.name + " v" + state.model.version;
  const sel = $("corrected");
  sel.replaceChildren();
  const labels = [""].concat(state.model.class_names);
  if (state.model.task === "binary") labels.push(state.model.negative_name);
  for (const l of labels) { const o = document.createElement("option"); o.value = l; o.textContent = l || "(none)"; sel.appendChild(o); }
  show($("login"), false); show($("app"), true); show($("login-error"), false);
  const id = new URLSearchParams(window.location.search).get("prediction");
  if (id) openPrediction(id);
}

async function signOut() {
  if (!state.key && cookie("radiolens_csrf")) {
    try { await api("/v1/session", { method: "DELETE" }); } catch (e) { /* ended already: signed out either way */ }
  }
  sessionStorage.removeItem("radiolens.key");
  state.key = null; state.me = null; clearResult(); show($("upload-error"), false); show($("reading-nav"), false);
  show($("app"), false); show($("login"), true);
}

// ------------------------------------------------------------------ Cornerstone3D set-up
let ready = null;
function cornerstone() {
  if (!ready) {
    ready = (async () => {
      // CPU rendering: one 2D image needs no WebGL, and the canvas then holds exactly the window applied to the
      // stored values on every machine (the viewer's tests check rendered values), GPU or none.
      csInit({ rendering: { useCPURendering: true } });
      toolsInit();
      metaData.addProvider(describeImage, 10000);
      for (const tool of [WindowLevelTool, PanTool, ZoomTool]) addTool(tool);
      const group = ToolGroupManager.createToolGroup(GROUP_ID);
      for (const tool of [WindowLevelTool, PanTool, ZoomTool]) group.addTool(tool.toolName);
      const B = ToolEnums.MouseBindings, K = ToolEnums.KeyboardBindings;
      group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: B.Primary }] });
      group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: B.Auxiliary },
        { mouseButton: B.Primary, modifierKey: K.Shift }] });
      group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: B.Secondary }, { mouseButton: B.Wheel },
        { mouseButton: B.Primary, modifierKey: K.Ctrl }] });
      state.engine = new RenderingEngine(ENGINE_ID);
      // The two panes (side by side) move, zoom and window together.
      state.sync = [synchronizers.createCameraPositionSynchronizer("radiolens-camera"),
        synchronizers.createVOISynchronizer("radiolens-voi", { syncInvertState: true, syncColormap: false })];
      return group;
    })();
  }
  return ready;
}

function viewport(id = VIEWPORTS.main) { return state.engine ? state.engine.getViewport(id) : undefined; }

function enable(group, id) {
  const element = $(id);
  element.oncontextmenu = (e) => e.preventDefault();  // right-drag zooms
  state.engine.enableElement({ viewportId: id, type: Enums.ViewportType.STACK, element,
    defaultOptions: { background: [0, 0, 0] } });
  group.addViewport(id, ENGINE_ID);
  for (const s of state.sync) s.add({ renderingEngineId: ENGINE_ID, viewportId: id });
  element.addEventListener(Enums.Events.CAMERA_MODIFIED, () => { drawOverlay(); showZoom(); });
  element.addEventListener(Enums.Events.IMAGE_RENDERED, drawOverlay);
  element.addEventListener(Enums.Events.VOI_MODIFIED, showWindow);
}

function disableAll() {
  if (!state.engine) return;
  for (const id of Object.values(VIEWPORTS)) {
    if (viewport(id)) {
      for (const s of state.sync) s.remove({ renderingEngineId: ENGINE_ID, viewportId: id });
      ToolGroupManager.getToolGroup(GROUP_ID)?.removeViewports(ENGINE_ID, id);
      state.engine.disableElement(id);
    }
    $(id).replaceChildren();  // the canvas Cornerstone leaves behind still holds the last study's pixels
  }
  if (state.imageId) cache.removeImageLoadObject(state.imageId, { force: true });
  state.imageId = null;
}

// ------------------------------------------------------------------ loading a result's pixels
// The full-depth copy: a 16-bit grey PNG of the de-identified stored values, decoded here (browsers draw PNGs at
// 8 bits), mapped through the stored rescale to modality values. Predictions stored before it existed fall back to
// the 8-bit display copy, which the panel then says.
async function loadPixels(result) {
  if (result.pixels_url && result.pixels) {
    const png = decodePng(new Uint8Array(await (await api(result.pixels_url)).arrayBuffer()));
    const p = result.pixels, n = png.width * png.height, src = png.data, step = png.channels;
    // Modality values in the narrowest exact array: integers (the usual case) as Uint16/Int16, else Float32.
    let smin = Infinity, smax = -Infinity;
    for (let j = 0; j < src.length; j += step) { const v = src[j]; if (v < smin) smin = v; if (v > smax) smax = v; }
    const lo = smin * p.rescale_slope + p.rescale_intercept, hi = smax * p.rescale_slope + p.rescale_intercept;
    const integral = Number.isInteger(p.rescale_slope) && Number.isInteger(p.rescale_intercept);
    const Typed = !integral ? Float32Array : lo >= 0 && hi <= 65535 ? Uint16Array
      : lo >= -32768 && hi <= 32767 ? Int16Array : Float32Array;
    const values = new Typed(n);
    for (let i = 0, j = 0; i < n; i += 1, j += step) values[i] = src[j] * p.rescale_slope + p.rescale_intercept;
    return { values, width: png.width, height: png.height, meta: p, fullDepth: true };
  }
  const bitmap = await createImageBitmap(await (await api(result.image_url)).blob());
  const canvas = document.createElement("canvas"); canvas.width = bitmap.width; canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d"); ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const values = new Float32Array(bitmap.width * bitmap.height);
  for (let i = 0; i < values.length; i += 1) values[i] = rgba[i * 4];
  return { values, width: bitmap.width, height: bitmap.height, fullDepth: false,
    meta: { bits_stored: 8, photometric: "MONOCHROME2", window_center: 127.5, window_width: 255, rescale_slope: 1, rescale_intercept: 0 } };
}

// The header facts Cornerstone asks of an image beyond its pixel and plane modules (which the local image carries):
// modality and default window, from the prediction's `pixels` block. Values are already rescaled (slope 1).
function describeImage(type, imageId) {
  if (!state.pixels || imageId !== state.imageId) return undefined;
  const m = state.pixels.meta;
  if (type === "generalSeriesModule") return { modality: m.modality || "OT", seriesInstanceUID: "radiolens" };
  if (type === "voiLutModule") return { windowCenter: [m.window_center], windowWidth: [m.window_width] };
  if (type === "modalityLutModule") return { rescaleSlope: 1, rescaleIntercept: 0 };
  return undefined;
}

async function loadBitmap(url) { return await createImageBitmap(await (await api(url)).blob()); }

async function showImage() {
  const group = await cornerstone();
  disableAll();
  const px = state.pixels;
  state.imageId = "radiolens:" + state.result.id;
  imageLoader.createAndCacheLocalImage(state.imageId, { scalarData: px.values, dimensions: [px.width, px.height],
    spacing: [1, 1], origin: [0, 0, 0], direction: [1, 0, 0, 0, 1, 0], frameOfReferenceUID: "radiolens" });
  enable(group, VIEWPORTS.main);
  await viewport().setStack([state.imageId]);
  if (state.layout === "side-by-side") await enableHeatPane(group);
  resetView();
}

async function enableHeatPane(group) {
  show($(VIEWPORTS.heat), true);
  enable(group, VIEWPORTS.heat);
  await viewport(VIEWPORTS.heat).setStack([state.imageId]);
  const main = viewport();
  viewport(VIEWPORTS.heat).setCamera(main.getCamera());
  viewport(VIEWPORTS.heat).setProperties(main.getProperties());
  state.engine.resize(true, true);
  viewport(VIEWPORTS.heat).render();
}

async function setLayout(layout) {
  state.layout = layout;
  $("layout").value = layout;
  if (!state.pixels || !state.engine) return;
  const group = await cornerstone();
  if (layout === "side-by-side" && !viewport(VIEWPORTS.heat)) {
    await enableHeatPane(group);
  } else if (layout !== "side-by-side" && viewport(VIEWPORTS.heat)) {
    for (const s of state.sync) s.remove({ renderingEngineId: ENGINE_ID, viewportId: VIEWPORTS.heat });
    group.removeViewports(ENGINE_ID, VIEWPORTS.heat);
    state.engine.disableElement(VIEWPORTS.heat);
    $(VIEWPORTS.heat).replaceChildren();
    show($(VIEWPORTS.heat), false);
    state.engine.resize(true, true);
  }
  drawOverlay();
}

// ------------------------------------------------------------------ window/level, zoom, pan, invert
function setWindow(center, width) {
  const vp = viewport();
  if (!vp || !(width > 0) || !Number.isFinite(center)) return;
  vp.setProperties({ voiRange: csUtils.windowLevel.toLowHighRange(width, center) });
  vp.render();
  showWindow();
}

function applyPreset(name) {
  if (!state.pixels) return;
  const w = presetWindow(name, state.pixels);
  setWindow(w.center, w.width);
  $("preset-name").textContent = w.label;
}

function showWindow() {
  const vp = viewport();
  if (!vp) return;
  const { voiRange, invert } = vp.getProperties();
  if (!voiRange) return;
  const { windowWidth, windowCenter } = csUtils.windowLevel.toWindowLevel(voiRange.lower, voiRange.upper);
  if (document.activeElement !== $("ww")) $("ww").value = round(windowWidth);
  if (document.activeElement !== $("wc")) $("wc").value = round(windowCenter);
  $("invert").setAttribute("aria-pressed", String(Boolean(invert)));
  $("invert-state").textContent = invert ? "inverted" : "";
}

function round(v) { return Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 100) / 100; }

function toggleInvert() {
  const vp = viewport();
  if (!vp) return;
  vp.setProperties({ invert: !vp.getProperties().invert });
  vp.render();
  showWindow();
}

// Image pixels per screen (CSS) pixel, from where the image's corners are drawn.
function displayScale(vp = viewport()) {
  if (!vp || !state.imageId) return null;
  const a = vp.worldToCanvas(csUtils.imageToWorldCoords(state.imageId, [0, 0]));
  const b = vp.worldToCanvas(csUtils.imageToWorldCoords(state.imageId, [state.pixels.width, 0]));
  return Math.hypot(b[0] - a[0], b[1] - a[1]) / state.pixels.width;
}

function showZoom() {
  const s = displayScale();
  $("zoom-level").textContent = s ? "scale " + Math.round(s * 100) + "% (" + (s >= 1 ? "1 image pixel = " + s.toFixed(2) + " screen pixels" : "1 screen pixel = " + (1 / s).toFixed(2) + " image pixels") + ")" : "";
  $("zoom-level").dataset.scale = s ? String(s) : "";
}

function zoomBy(factor) {
  const vp = viewport();
  if (!vp) return;
  vp.setZoom(vp.getZoom() * factor);
  vp.render();
}

function fit() { const vp = viewport(); if (vp) { vp.resetCamera(); vp.render(); } }

function actualSize() {  // 1:1, one image pixel per screen pixel
  const vp = viewport(), s = displayScale(vp);
  if (!vp || !s) return;
  vp.setZoom(vp.getZoom() / (s * window.devicePixelRatio));
  vp.render();
}

function panBy(dx, dy) {  // in screen pixels
  const vp = viewport();
  if (!vp) return;
  const [x, y] = vp.getPan();
  const s = displayScale(vp) || 1;
  vp.setPan([x + dx / s, y + dy / s]);
  vp.render();
}

function resetView() {
  const vp = viewport();
  if (!vp) return;
  const m = state.pixels.meta;
  vp.resetCamera();
  vp.setProperties({ invert: m.photometric === "MONOCHROME1",
    voiRange: csUtils.windowLevel.toLowHighRange(m.window_width, m.window_center) });
  vp.render();
  $("preset-name").textContent = "default (" + (state.pixels.fullDepth ? "from the image" : "8-bit display copy") + ")";
  showWindow(); showZoom();
}

// ------------------------------------------------------------------ heatmap overlay
// Drawn on a canvas above the pane, through the viewport's own image-to-screen mapping, so it follows zoom and pan.
function overlayPane() { return state.layout === "side-by-side" ? VIEWPORTS.heat : VIEWPORTS.main; }

function drawOverlay() {
  for (const id of Object.values(VIEWPORTS)) {
    const canvas = $(id + "-overlay"), pane = $(id);
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(pane.clientWidth * dpr); canvas.height = Math.round(pane.clientHeight * dpr);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const vp = viewport(id);
    if (!state.heat || !vp || !state.imageId || id !== overlayPane() || !$("overlay").checked) continue;
    const corner = (x, y) => vp.worldToCanvas(csUtils.imageToWorldCoords(state.imageId, [x, y]));
    const [x0, y0] = corner(0, 0), [x1, y1] = corner(state.pixels.width, state.pixels.height);
    ctx.globalAlpha = Number($("opacity").value) / 100;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(state.heat, x0 * dpr, y0 * dpr, (x1 - x0) * dpr, (y1 - y0) * dpr);
  }
}

function toggleOverlay() {
  if ($("overlay").disabled) return;
  $("overlay").checked = !$("overlay").checked;
  drawOverlay();
}

// ------------------------------------------------------------------ result panel
// Removes every trace of the previous study (image, heatmap, probabilities, verdict, review, scope, refs, feedback
// state) and invalidates any upload still in flight, so no result is ever shown beside another file or an error.
function clearResult() {
  state.upload += 1;
  state.result = null; state.heat = null; state.pixels = null;
  disableAll();
  show($("result"), false);
  $("probs").querySelector("tbody").replaceChildren();
  $("scope-table").querySelector("tbody").replaceChildren();
  for (const id of ["not-assessed", "decision", "review", "study", "model-ref", "feedback-status", "scope-warning",
    "scope-note", "zoom-level", "pixel-info", "preset-name", "feedback-current", "feedback-disabled"]) $(id).textContent = "";
  show($("feedback-disabled"), false);
  show($("not-assessed"), false); show($("scope-warning"), false);
  $("review").className = "review";
  drawOverlay();
}

async function predict() {
  clearResult();
  const upload = state.upload;
  const file = $("file").files[0];
  if (!file) {
    showError($("upload-error"), new ApiError("No file chosen.", "Choose a DICOM, PNG or JPEG file, then press Analyse."));
    return;
  }
  show($("upload-error"), false); show($("busy"), true); $("predict").disabled = true;
  try {
    const form = new FormData();
    form.append("file", file, "upload");  // the local file name is not sent: it may identify the patient
    const result = await (await api("/v1/predictions", { method: "POST", body: form })).json();
    if (upload !== state.upload) return;
    // a new study, not the worklist item the address named: the address and the worklist bar say so
    history.replaceState(null, "", "/viewer/");
    show($("reading-nav"), false);
    await showPrediction(result, upload);
  } catch (e) {
    if (upload !== state.upload) return;
    clearResult();
    showError($("upload-error"), e);
  } finally {
    show($("busy"), false); $("predict").disabled = false;
  }
}

// Shows a prediction (just made, or stored) as the reading view: pixels, heatmap, findings, this reader's feedback.
// `upload` is the token taken when the request started: a result whose study is no longer wanted is dropped.
async function showPrediction(result, upload) {
  const pixels = await loadPixels(result);
  const heat = result.heatmap_url ? await loadBitmap(result.heatmap_url) : null;
  if (upload !== state.upload) return;  // another file or study was chosen meanwhile: this result belongs to neither
  state.result = result; state.pixels = pixels; state.heat = heat;
  renderResult();
  await showImage();
  if (upload !== state.upload) { clearResult(); return; }
  $("viewport").focus();
}

// A stored prediction (`/viewer/?prediction=<id>`, the worklist's Enter, N / P): GET /v1/predictions/{id} and its
// de-identified pixels and heatmap, drawn exactly as after an upload.
async function openPrediction(id) {
  clearResult();
  show($("upload-error"), false);
  const upload = state.upload;
  history.replaceState(null, "", "/viewer/?prediction=" + encodeURIComponent(id));
  updateSignInLink();
  renderNav(id);
  show($("busy"), true);
  try {
    const result = await (await api("/v1/predictions/" + encodeURIComponent(id))).json();
    if (upload !== state.upload) return;
    await showPrediction(result, upload);
  } catch (e) {
    if (upload !== state.upload) return;
    clearResult();
    showError($("upload-error"), e, "This study could not be opened: ");
  } finally {
    if (upload === state.upload) show($("busy"), false);
  }
}

// ------------------------------------------------------------------ worklist context (N / P, back to the list)
// The worklist page keeps what it listed in sessionStorage ("radiolens.worklist": the form's filters as a query
// string, the API query, the ids shown in order and the next page's cursor).
function worklist() {
  try { return JSON.parse(sessionStorage.getItem("radiolens.worklist")) || null; } catch (e) { return null; }
}

function worklistHref(selected) {
  const w = worklist(), q = new URLSearchParams(w ? w.filters : "");
  if (selected) q.set("selected", selected);
  const qs = q.toString();
  return "/viewer/worklist" + (qs ? "?" + qs : "");
}

function renderNav(id) {
  const w = worklist(), i = w ? w.ids.indexOf(id) : -1;
  for (const a of [$("back-to-worklist"), $("worklist-link")]) a.href = worklistHref(id);
  show($("reading-nav"), i >= 0);
  if (i < 0) return;
  $("nav-pos").textContent = "study " + (i + 1) + " of " + w.ids.length + (w.cursor ? "+" : "") + " in the worklist";
  $("prev-item").disabled = i === 0;
  $("next-item").disabled = i === w.ids.length - 1 && !w.cursor;
}

async function step(delta) {
  const w = worklist(), id = state.result ? state.result.id : new URLSearchParams(window.location.search).get("prediction");
  const i = w ? w.ids.indexOf(id) : -1;
  if (i < 0) return;
  if (i + delta >= w.ids.length && w.cursor) {  // past the last listed item: the worklist's next page
    try {
      const q = new URLSearchParams(w.query); q.set("cursor", w.cursor);
      const page = await (await api("/v1/predictions?" + q.toString())).json();
      w.ids = w.ids.concat(page.items.map((it) => it.id)); w.cursor = page.next_cursor;
      sessionStorage.setItem("radiolens.worklist", JSON.stringify(w));
    } catch (e) { showError($("upload-error"), e, "The worklist's next page could not be read: "); return; }
  }
  const next = w.ids[i + delta];
  if (next) openPrediction(next);
}

function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }

function renderResult() {
  const r = state.result;
  const tbody = $("probs").querySelector("tbody");
  tbody.replaceChildren();
  for (const p of r.probabilities) {
    const tr = document.createElement("tr");
    tr.className = p.positive ? "positive" : "negative";
    cell(tr, p.name); cell(tr, p.probability.toFixed(3)); cell(tr, p.threshold.toFixed(3));
    cell(tr, p.positive ? "\u25B2 POSITIVE (above threshold)" : "negative (below threshold)", "verdict");
    tbody.appendChild(tr);
  }
  // The input gate withholds the model output for images outside what the model was trained on.
  const assessed = (r.status || "ok") === "ok";
  $("not-assessed").textContent = assessed ? "" :
    "Not assessed: this image is outside what the model was trained on. No probability is shown.";
  show($("not-assessed"), !assessed);
  show($("probs"), assessed);
  $("decision").textContent = r.decision.label;
  const anyPositive = r.probabilities.some((p) => p.positive);
  $("decision").className = assessed ? (anyPositive ? "positive-text" : "negative-text") : "";
  const review = $("review");
  review.textContent = (r.review.flag ? "Human review recommended: " : "No review flag: ") + r.review.reason +
    (r.review.spread === null || r.review.spread === undefined ? "" : " (MC-dropout spread " + r.review.spread.toFixed(3) + ")");
  review.className = "review " + (r.review.flag ? "flagged" : "clear");
  $("study").textContent = r.study_ref;
  $("model-ref").textContent = r.model.name + " v" + r.model.version + " sha256 " + r.model.sha256.slice(0, 12);
  renderScope(r.scope);
  $("overlay").disabled = !r.heatmap_url;
  $("opacity").disabled = !r.heatmap_url;
  $("feedback-status").textContent = "";
  renderFeedback();
  const m = state.pixels.meta;
  $("pixel-info").textContent = state.pixels.fullDepth
    ? "De-identified image, " + state.pixels.width + " \u00D7 " + state.pixels.height + " px, " + m.bits_stored +
      " bits stored (" + m.photometric + "), window values in stored units" + (m.rescale_slope !== 1 || m.rescale_intercept !== 0 ? " after rescale" : "") + "."
    : "8-bit display copy (this prediction was stored before full-depth pixels were kept).";
  show($("result"), true);
}

// The scope record is computed by the service (radiolens.models.population.scope_of); this only shows it.
function renderScope(scope) {
  const tbody = $("scope-table").querySelector("tbody");
  tbody.replaceChildren();
  if (!scope) {
    $("scope-note").textContent = "Scope not recorded for this prediction.";
    return;
  }
  const rows = [["Age band", scope.image.age_band], ["Sex", scope.image.sex], ["View", scope.image.view],
    ["Model population", scope.model.population], ["Model ages", scope.model.ages || "not stated"],
    ["Model views", scope.model.views.length ? scope.model.views.join(", ") : "not stated"],
    ["Model input size", scope.model.input_size.join(" \u00D7 ") + " px"]];
  for (const [k, v] of rows) { const tr = document.createElement("tr"); cell(tr, k); cell(tr, v); tbody.appendChild(tr); }
  const warn = $("scope-warning");
  if (scope.warnings.length) {
    warn.replaceChildren();
    const head = document.createElement("strong");
    head.textContent = "\u26A0 OUTSIDE THE MODEL'S INTENDED POPULATION: interpret the output with caution.";
    warn.appendChild(head);
    const ul = document.createElement("ul");
    for (const w of scope.warnings) { const li = document.createElement("li"); li.textContent = w; ul.appendChild(li); }
    warn.appendChild(ul);
  }
  show(warn, scope.warnings.length > 0);
  $("scope-note").textContent = scope.in_scope === true ? "Within the model's stated population." :
    scope.in_scope === null ? "Not checked against the model's population: " + scope.not_checked.join("; ") + "." : "";
}

// ------------------------------------------------------------------ reader feedback (one per reader per study)
function feedbackWords(fb) {
  return (fb.agree ? "agree" : "disagree") + (fb.corrected_label ? ", corrected to " + fb.corrected_label : "");
}

// This reader's current feedback (their row not superseded), from the prediction's feedback list; the controls
// show it, and are off, with the reason on screen, for a study the model did not assess (the API refuses it).
function renderFeedback() {
  const r = state.result, assessed = (r.status || "ok") === "ok";
  const uid = state.me ? state.me.user_id : null;
  state.mine = (r.feedback || []).filter((f) => f.user_id === uid && !f.superseded_at).pop() || null;
  for (const id of ["agree", "disagree", "corrected"]) $(id).disabled = !assessed;
  $("feedback-disabled").textContent = assessed ? "" : "Feedback is off for this study: the model did not assess it " +
    "(its input check refused the image), so there is no result to agree or disagree with.";
  show($("feedback-disabled"), !assessed);
  const mine = state.mine;
  $("agree").setAttribute("aria-pressed", String(Boolean(mine && mine.agree)));
  $("disagree").setAttribute("aria-pressed", String(Boolean(mine && !mine.agree)));
  $("corrected").value = mine && mine.corrected_label ? mine.corrected_label : "";
  $("feedback-current").textContent = !assessed ? "" : mine
    ? "Your feedback: " + feedbackWords(mine) + " (given " + mine.created_at.replace("T", " ").slice(0, 16) +
      " UTC). Press Agree or Disagree to change it."
    : "You have not given feedback on this study yet.";
}

// The first feedback is a POST, a change a PUT (the service keeps the earlier row, superseded, in the audit log).
// A 409 (feedback given meanwhile elsewhere, study not assessed) shows the API's message and what to do; after
// feedback_exists the current state is read again, so the next press changes it.
async function feedback(agree) {
  if (!state.result) return;
  const corrected = $("corrected").value || null, upload = state.upload, before = state.mine;
  try {
    const resp = await api("/v1/predictions/" + state.result.id + "/feedback", {
      method: before ? "PUT" : "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ agree, corrected_label: corrected }),
    });
    const fb = await resp.json();
    if (upload !== state.upload) return;  // the study on screen has changed: the status is not about it
    const same = before && before.agree === fb.agree && (before.corrected_label || null) === (fb.corrected_label || null);
    $("feedback-status").textContent = (resp.status === 201 ? "Feedback recorded (" : same ? "Feedback unchanged (" : "Feedback changed (") +
      feedbackWords(fb) + ").";
    state.result.feedback = (state.result.feedback || []).filter((f) => f.id !== fb.id).concat([fb]);
    if (before && !same) before.superseded_at = fb.created_at;
    renderFeedback();
  } catch (e) {
    if (upload !== state.upload) return;
    showError($("feedback-status"), e, "Feedback not recorded: ");
    if (e.code === "feedback_exists") {
      try {
        const fresh = await (await api("/v1/predictions/" + state.result.id)).json();
        if (upload === state.upload) { state.result.feedback = fresh.feedback; renderFeedback(); }
      } catch (e2) { /* the message above stands */ }
    }
  }
}

// ------------------------------------------------------------------ keyboard (listed on screen, #shortcuts)
const KEYS = {
  "1": () => applyPreset("lung"), "2": () => applyPreset("mediastinum"), "3": () => applyPreset("bone"),
  "0": resetView, i: toggleInvert, f: fit, a: actualSize, "+": () => zoomBy(1.25), "=": () => zoomBy(1.25),
  "-": () => zoomBy(0.8), h: toggleOverlay, s: () => setLayout(state.layout === "overlaid" ? "side-by-side" : "overlaid"),
  n: () => step(1), p: () => step(-1),
  ArrowLeft: () => panBy(-40, 0), ArrowRight: () => panBy(40, 0), ArrowUp: () => panBy(0, -40), ArrowDown: () => panBy(0, 40),
};

document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || (t && ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName) && t.type !== "checkbox" && t.type !== "range")) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  // N / P also move on from a study that could not be shown; everything else needs an image
  if (!state.pixels && !((key === "n" || key === "p") && state.me)) return;
  const action = KEYS[key];
  if (action) { e.preventDefault(); action(); }
});

// ------------------------------------------------------------------ wiring
$("sign-in").addEventListener("click", () => signIn($("api-key").value.trim()));
$("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn($("api-key").value.trim()); });
$("sign-out").addEventListener("click", signOut);
$("predict").addEventListener("click", predict);
$("file").addEventListener("change", () => { clearResult(); show($("upload-error"), false); });
for (const id of ["ww", "wc"]) {
  $(id).addEventListener("change", () => { setWindow(Number($("wc").value), Number($("ww").value)); $("preset-name").textContent = "manual"; });
}
for (const b of document.querySelectorAll("[data-preset]")) b.addEventListener("click", () => applyPreset(b.dataset.preset));
$("reset-wl").addEventListener("click", resetView);
$("invert").addEventListener("click", toggleInvert);
$("fit").addEventListener("click", fit);
$("one-to-one").addEventListener("click", actualSize);
$("zoom-in").addEventListener("click", () => zoomBy(1.25));
$("zoom-out").addEventListener("click", () => zoomBy(0.8));
$("overlay").addEventListener("change", drawOverlay);
$("opacity").addEventListener("input", drawOverlay);
$("layout").addEventListener("change", () => setLayout($("layout").value));
window.addEventListener("resize", () => { if (state.engine) { state.engine.resize(true, true); drawOverlay(); showZoom(); } });
$("agree").addEventListener("click", () => feedback(true));
$("disagree").addEventListener("click", () => feedback(false));
$("prev-item").addEventListener("click", () => step(-1));
$("next-item").addEventListener("click", () => step(1));

// "Sign in with username": the sign-in page sends the reader back here, to the same study.
function updateSignInLink() {
  $("signin-link").href = "/viewer/signin?next=" + encodeURIComponent(window.location.pathname + window.location.search);
}
updateSignInLink();
if (state.key) signIn(state.key); else resumeSession();
