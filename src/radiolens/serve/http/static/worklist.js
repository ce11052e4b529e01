// radiolens worklist: GET /v1/predictions a page at a time, with filters and keyboard navigation. Signed in with the
// session cookie (the sign-in page); state-changing requests echo the CSRF cookie in X-CSRF-Token. The filters live
// in the page's address (so the viewer's "back to the worklist" and a reload keep them), and what is listed is kept
// in sessionStorage ("radiolens.worklist") for the viewer's next / previous keys.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { items: [], selected: -1, cursor: null, query: "" };

  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  function toSignIn() {
    window.location.assign("/viewer/signin?next=" + encodeURIComponent("/viewer/worklist" + window.location.search));
  }

  // The form's values as the page address's query (dates as typed), and back.
  const FIELDS = { flagged: "f-flagged", decision: "f-decision", since: "f-since", until: "f-until" };
  function filtersToAddress() {
    const q = new URLSearchParams();
    for (const [name, id] of Object.entries(FIELDS)) if ($(id).value.trim()) q.set(name, $(id).value.trim());
    if ($("f-awaiting").checked) q.set("awaiting", "true");
    return q.toString();
  }
  function filtersFromAddress() {
    const q = new URLSearchParams(window.location.search);
    for (const [name, id] of Object.entries(FIELDS)) if (q.get(name)) $(id).value = q.get(name);
    $("f-awaiting").checked = q.get("awaiting") === "true";
    return q.get("selected");
  }
  function remember() {
    sessionStorage.setItem("radiolens.worklist", JSON.stringify({
      filters: filtersToAddress(), query: state.query, ids: state.items.map((it) => it.id), cursor: state.cursor }));
  }

  function showError(body, status) {
    const err = (body && body.error) || { message: "The service answered " + status + ".", action: "Reload the page." };
    const what = document.createElement("span"); what.textContent = err.message;
    const todo = document.createElement("span"); todo.className = "todo"; todo.textContent = err.action || "";
    $("list-error").replaceChildren(what, document.createElement("br"), todo);
    $("list-error").hidden = false;
  }

  async function get(path) {
    const resp = await fetch(path, { credentials: "same-origin" });
    if (resp.status === 401) { toSignIn(); throw new Error("signed out"); }
    const body = await resp.json().catch(() => null);
    if (!resp.ok) { showError(body, resp.status); throw new Error("request failed"); }
    return body;
  }

  function nextDay(isoDate) {
    const d = new Date(isoDate + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + 1);
    return d.toISOString().slice(0, 10);
  }

  function query() {
    const q = new URLSearchParams({ limit: "50" });
    if ($("f-flagged").value) q.set("flagged", $("f-flagged").value);
    if ($("f-awaiting").checked) q.set("awaiting_feedback", "true");
    if ($("f-decision").value.trim()) q.set("decision", $("f-decision").value.trim());
    if ($("f-since").value) q.set("since", $("f-since").value + "T00:00:00Z");
    if ($("f-until").value) q.set("until", nextDay($("f-until").value) + "T00:00:00Z");
    return q;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function feedbackText(fb) {
    if (fb.state === "given") return (fb.agree ? "agreed" : "disagreed") + (fb.corrected_label ? " (" + fb.corrected_label + ")" : "");
    return { awaiting: "awaiting", not_allowed: "not applicable (not assessed)", unavailable: "unavailable" }[fb.state] || fb.state;
  }

  function row(item, index) {
    const tr = document.createElement("tr");
    tr.dataset.id = item.id;
    tr.id = "row-" + item.id;
    tr.setAttribute("aria-selected", "false");
    tr.appendChild(cell(item.created_at.replace("T", " ").slice(0, 19)));
    if (item.integrity !== "ok") {
      tr.appendChild(cell("withheld: integrity check failed", "flag"));
      tr.appendChild(cell("")); tr.appendChild(cell("")); tr.appendChild(cell(""));
    } else {
      tr.appendChild(cell(item.decision, item.status === "ok" ? "" : "not-assessed"));
      tr.appendChild(cell(item.review.flag ? "review: " + item.review.reason : "no flag", item.review.flag ? "flag" : ""));
      tr.appendChild(cell(item.probabilities.map((p) => p.name + " " + p.probability.toFixed(2)).join(", ") || "withheld"));
      tr.appendChild(cell(feedbackText(item.feedback)));
    }
    tr.addEventListener("click", () => select(index));
    tr.addEventListener("dblclick", () => open(index));
    return tr;
  }

  function select(index) {
    const rows = $("worklist").tBodies[0].rows;
    if (!rows.length) return;
    index = Math.max(0, Math.min(rows.length - 1, index));
    if (state.selected >= 0 && rows[state.selected]) {
      rows[state.selected].classList.remove("selected");
      rows[state.selected].setAttribute("aria-selected", "false");
    }
    state.selected = index;
    rows[index].classList.add("selected");
    rows[index].setAttribute("aria-selected", "true");
    rows[index].scrollIntoView({ block: "nearest" });
  }

  function open(index) {
    const item = state.items[index];
    if (item) window.location.assign("/viewer/?prediction=" + encodeURIComponent(item.id));
  }

  async function load(append, selectId) {
    $("list-error").hidden = true;
    const q = append ? new URLSearchParams(state.query) : query();
    if (append) q.set("cursor", state.cursor); else state.query = q.toString();
    const page = await get("/v1/predictions?" + q.toString());
    const body = $("worklist").tBodies[0];
    if (!append) { body.replaceChildren(); state.items = []; state.selected = -1; }
    for (const item of page.items) { body.appendChild(row(item, state.items.length)); state.items.push(item); }
    state.cursor = page.next_cursor;
    $("more").hidden = !state.cursor;
    $("count").textContent = state.items.length + (state.cursor ? "+" : "") + " predictions";
    if (!append) history.replaceState(null, "", "/viewer/worklist" + (filtersToAddress() ? "?" + filtersToAddress() : ""));
    remember();
    const wanted = selectId ? state.items.findIndex((it) => it.id === selectId) : -1;
    if (state.items.length) select(wanted >= 0 ? wanted : append ? state.selected + 1 : 0);
  }

  function typing(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
  }

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (typing(e.target)) { if (e.key === "Escape") e.target.blur(); return; }
    if (e.key === "j" || e.key === "ArrowDown") { select(state.selected + 1); e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { select(state.selected - 1); e.preventDefault(); }
    else if (e.key === "Enter") { open(state.selected); e.preventDefault(); }
    else if (e.key === "n" && state.cursor) { load(true).catch(() => {}); }
    else if (e.key === "r") { load(false).catch(() => {}); }
    else if (e.key === "/") { $("f-flagged").focus(); e.preventDefault(); }
  });

  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(false).catch(() => {}); $("f-apply").blur(); });
  $("more").addEventListener("click", () => load(true).catch(() => {}));
  $("sign-out").addEventListener("click", async () => {
    await fetch("/v1/session", { method: "DELETE", credentials: "same-origin", headers: { "X-CSRF-Token": cookie("radiolens_csrf") } });
    toSignIn();
  });

  const selected = filtersFromAddress();
  get("/v1/me").then((me) => {
    $("who").textContent = "user " + me.user_id + " (" + me.role + ")";
    return load(false, selected);
  }).catch(() => {});
})();
