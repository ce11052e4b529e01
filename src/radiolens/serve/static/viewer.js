// radiolens viewer: plain JS, no build step. The API key lives in sessionStorage (cleared with the tab).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("radiolens.key"), result: null, grey: null, heat: null, model: null };
const MAX_SIDE = 512;

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.key }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { const body = await resp.json(); if (body.error) message = body.error.message; } catch (e) { /* not JSON */ }
    const err = new Error(message); err.status = resp.status; throw err;
  }
  return resp;
}

function show(el, visible) { el.hidden = !visible; }

async function signIn(key) {
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
    $("login-error").textContent = e.status === 401 ? "Unknown or revoked key." : e.message;
    show($("login-error"), true);
  }
}

function signOut() {
  sessionStorage.removeItem("radiolens.key");
  state.key = null; state.result = null;
  show($("app"), false); show($("result"), false); show($("login"), true);
}

async function loadBitmap(url) {
  const blob = await (await api(url)).blob();
  return await createImageBitmap(blob);
}

async function predict() {
  const file = $("file").files[0];
  if (!file) { $("upload-error").textContent = "Choose a file first."; show($("upload-error"), true); return; }
  show($("upload-error"), false); show($("busy"), true); $("predict").disabled = true;
  try {
    const form = new FormData();
    form.append("file", file, "upload");  // the local file name is not sent: it may identify the patient
    const result = await (await api("/v1/predictions", { method: "POST", body: form })).json();
    state.result = result;
    state.grey = await loadBitmap(result.image_url);
    state.heat = result.heatmap_url ? await loadBitmap(result.heatmap_url) : null;
    renderResult();
  } catch (e) {
    $("upload-error").textContent = e.message; show($("upload-error"), true);
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
  const corrected = $("corrected").value || null;
  try {
    const fb = await (await api("/v1/predictions/" + state.result.id + "/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ agree, corrected_label: corrected }),
    })).json();
    $("feedback-status").textContent = "Feedback recorded (" + (fb.agree ? "agree" : "disagree") +
      (fb.corrected_label ? ", corrected to " + fb.corrected_label : "") + ").";
  } catch (e) {
    $("feedback-status").textContent = "Feedback failed: " + e.message;
  }
}

$("sign-in").addEventListener("click", () => signIn($("api-key").value.trim()));
$("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn($("api-key").value.trim()); });
$("sign-out").addEventListener("click", signOut);
$("predict").addEventListener("click", predict);
for (const id of ["level", "width", "opacity", "overlay"]) $(id).addEventListener("input", draw);
$("overlay").addEventListener("change", draw);
$("reset-wl").addEventListener("click", resetWindow);
$("agree").addEventListener("click", () => feedback(true));
$("disagree").addEventListener("click", () => feedback(false));
if (state.key) signIn(state.key);
