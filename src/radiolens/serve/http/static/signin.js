// radiolens sign-in page: username and password -> POST /v1/session, which sets the session cookie (HttpOnly) and
// the CSRF cookie; then back to the page that sent the reader here (same-origin /viewer/ paths only).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  function nextPage() {
    const next = new URLSearchParams(window.location.search).get("next") || "";
    return /^\/viewer\/[A-Za-z0-9/_?=&.+%-]*$/.test(next) ? next : "/viewer/worklist";
  }

  function showError(message, action) {
    const what = document.createElement("span"); what.textContent = message;
    const todo = document.createElement("span"); todo.className = "todo"; todo.textContent = action || "";
    $("signin-error").replaceChildren(what, document.createElement("br"), todo);
    $("signin-error").hidden = false;
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = $("username").value.trim(), password = $("password").value;
    if (!username || !password) { showError("Enter your username and password.", ""); return; }
    $("signin-submit").disabled = true;
    try {
      const resp = await fetch("/v1/session", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      if (resp.ok) { window.location.assign(nextPage()); return; }
      let message = "Sign-in failed (" + resp.status + ").", action = "";
      try { const body = await resp.json(); if (body.error) { message = body.error.message; action = body.error.action; } } catch (e) { /* keep */ }
      showError(message.charAt(0).toUpperCase() + message.slice(1) + ".", action);
      $("password").value = "";
      $("password").focus();
    } catch (e) {
      showError("The radiolens service cannot be reached.", "Check the network connection and try again.");
    } finally {
      $("signin-submit").disabled = false;
    }
  });
})();
