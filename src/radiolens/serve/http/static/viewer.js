// radiolens viewer: plain JS, no build step. The API key lives in sessionStorage (cleared with the tab).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("radiolens.key"), result: null, grey: null, heat: null, model: null, upload: 0 };
const MAX_SIDE = 512;

const ADMIN = "if it keeps happening, tell your radiolens administrator.";

// Every failure becomes an ApiError with what went wrong (message) and what to do (action). The service sends both
// in its JSON error body; answers without one (a proxy's 502, no network) get a plain-language pair here.
class ApiError extends Error {
  constructor(message, action, status, code) { super(message); this.action = action; this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.key }, options.headers || {});
  let resp;
  try {
    resp = await fetch(path, Object.assign({}, options, { headers }));
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
  const what = document.createElement("span"); what.className = "what";
  what.textContent = prefix + message.charAt(0).toUpperCase() + message.slice(1);
  const todo = document.createElement("span"); todo.className = "todo"; todo.textContent = action;
  el.replaceChildren(what, document.createElement("br"), todo);
  show(el, true);
}

function show(el, visible) { el.hidden = !visible; }

async function signIn(key) {
  if (!key) {
    showError($("login-error"), new ApiError("No API key entered.", "Paste the key your radiolens administrator gave you (rlk_...), then Sign in."));
    return;
  }
  state.key = key;
  try {
    const me = await (await api("/v1/me")).json();
    const models = await (await api("/v1/models")).json();
    state.model = models.models[0];
    sessionStorage.setItem("radiolens.key", key);
    $("who").textContent = "user " + me.user_id + " (" + me.role + ")";
    $("model").textContent = state.model.name + " v" + state.model.version;
    const sel = $("corrected");
    sel.innerHTML = "";
    const labels = [""].concat(state.model.class_names);
    if (state.model.task === "binary") labels.push(state.model.negative_name);
    for (const l of labels) { const o = document.createElement("option"); o.value = l; o.textContent = l || "(none)"; sel.appendChild(o); }
    show($("login"), false); show($("app"), true); show($("login-error"), false);
  } catch (e) {
    state.key = null; sessionStorage.removeItem("radiolens.key");
    showError($("login-error"), e.status === 401 ? new ApiError("Unknown or revoked key.", e.action, 401) : e);
  }
}

function signOut() {
  sessionStorage.removeItem("radiolens.key");
  state.key = null; clearResult(); show($("upload-error"), false);
  show($("app"), false); show($("login"), true);
}

// Removes every trace of the previous study (image, heatmap, probabilities, verdict, review, refs, feedback state)
// and invalidates any upload still in flight, so no result is ever shown beside another file or an error.
function clearResult() {
  state.upload += 1;
  state.result = null; state.grey = null; state.heat = null;
  show($("result"), false);
  $("probs").querySelector("tbody").replaceChildren();
  for (const id of ["not-assessed", "decision", "review", "study", "model-ref", "feedback-status"]) $(id).textContent = "";
  show($("not-assessed"), false);
  $("review").className = "review";
  const canvas = $("canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

async function loadBitmap(url) {
  const blob = await (await api(url)).blob();
  return await createImageBitmap(blob);
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
    const grey = await loadBitmap(result.image_url);
    const heat = result.heatmap_url ? await loadBitmap(result.heatmap_url) : null;
    if (upload !== state.upload) return;  // another file was chosen meanwhile: this result belongs to neither
    state.result = result; state.grey = grey; state.heat = heat;
    renderResult();
  } catch (e) {
    if (upload !== state.upload) return;
    clearResult();
    showError($("upload-error"), e);
  } finally {
    show($("busy"), false); $("predict").disabled = false;
  }
}

function renderResult() {
  const r = state.result;
  const tbody = $("probs").querySelector("tbody");
  tbody.innerHTML = "";
  for (const p of r.probabilities) {
    const tr = document.createElement("tr");
    if (p.positive) tr.className = "positive";
    for (const v of [p.name, p.probability.toFixed(3), p.threshold.toFixed(3), p.positive ? "above" : "below"]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  // The input gate withholds the model output for images outside what the model was trained on.
  const assessed = (r.status || "ok") === "ok";
  $("not-assessed").textContent = assessed ? "" :
    "Not assessed: this image is outside what the model was trained on. No probability is shown.";
  show($("not-assessed"), !assessed);
  show($("probs"), assessed);
  $("decision").textContent = r.decision.label;
  const review = $("review");
  review.textContent = (r.review.flag ? "Human review recommended: " : "No review flag: ") + r.review.reason +
    (r.review.spread === null || r.review.spread === undefined ? "" : " (MC-dropout spread " + r.review.spread.toFixed(3) + ")");
  review.className = "review " + (r.review.flag ? "flagged" : "clear");
  $("study").textContent = r.study_ref;
  $("model-ref").textContent = r.model.name + " v" + r.model.version + " sha256 " + r.model.sha256.slice(0, 12);
  $("overlay").disabled = !state.heat;
  $("feedback-status").textContent = "";
  resetWindow();
  show($("result"), true);
}

function resetWindow() { $("level").value = 128; $("width").value = 255; draw(); }

function draw() {
  if (!state.grey) return;
  const canvas = $("canvas");
  const scale = Math.min(1, MAX_SIDE / Math.max(state.grey.width, state.grey.height));
  canvas.width = Math.round(state.grey.width * scale);
  canvas.height = Math.round(state.grey.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(state.grey, 0, 0, canvas.width, canvas.height);
  // Window/level on the display values: out = (v - (L - W/2)) / W, clipped to [0, 255].
  const level = Number($("level").value), width = Math.max(1, Number($("width").value));
  if (!(level === 128 && width === 255)) {
    const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const d = img.data, lo = level - width / 2;
    for (let i = 0; i < d.length; i += 4) {
      const v = Math.max(0, Math.min(255, ((d[i] - lo) / width) * 255));
      d[i] = d[i + 1] = d[i + 2] = v;
    }
    ctx.putImageData(img, 0, 0);
  }
  if (state.heat && $("overlay").checked) {
    ctx.globalAlpha = Number($("opacity").value) / 100;
    ctx.drawImage(state.heat, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }
}

async function feedback(agree) {
  if (!state.result) return;
  const corrected = $("corrected").value || null, upload = state.upload;
  try {
    const fb = await (await api("/v1/predictions/" + state.result.id + "/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ agree, corrected_label: corrected }),
    })).json();
    if (upload !== state.upload) return;  // the study on screen has changed: the status is not about it
    $("feedback-status").textContent = "Feedback recorded (" + (fb.agree ? "agree" : "disagree") +
      (fb.corrected_label ? ", corrected to " + fb.corrected_label : "") + ").";
  } catch (e) {
    if (upload === state.upload) showError($("feedback-status"), e, "Feedback not recorded: ");
  }
}

$("sign-in").addEventListener("click", () => signIn($("api-key").value.trim()));
$("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn($("api-key").value.trim()); });
$("sign-out").addEventListener("click", signOut);
$("predict").addEventListener("click", predict);
$("file").addEventListener("change", () => { clearResult(); show($("upload-error"), false); });
for (const id of ["level", "width", "opacity", "overlay"]) $(id).addEventListener("input", draw);
$("overlay").addEventListener("change", draw);
$("reset-wl").addEventListener("click", resetWindow);
$("agree").addEventListener("click", () => feedback(true));
$("disagree").addEventListener("click", () => feedback(false));
if (state.key) signIn(state.key);
