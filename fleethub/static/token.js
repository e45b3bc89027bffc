// The token page (token.html): request and revoke tokens through the hub's REST API, as the logged-in user
// (cookie, with the `_xsrf` cookie's value in the X-XSRFToken header). A new token is put in the page once
// and in no URL, log or storage; it is cleared when the page is left.
(function () {
  "use strict";

  var page = document.getElementById("token-page");
  if (!page) return;
  var apiUrl = page.dataset.api;
  var tokensUrl = apiUrl + "users/" + encodeURIComponent(page.dataset.user) + "/tokens";

  function xsrf() {
    var found = document.cookie.split("; ").filter(function (c) { return c.indexOf("_xsrf=") === 0; })[0];
    return found ? decodeURIComponent(found.slice(6)) : "";
  }

  // the API's answer: {ok, status, data}; `data.message` explains a refusal
  function call(method, url, body) {
    var headers = { "X-XSRFToken": xsrf(), "Accept": "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (r) {
      return r.text().then(function (text) {
        var data = {};
        try { data = text ? JSON.parse(text) : {}; } catch (e) { data = {}; }
        if (!data.message && !r.ok) data.message = "The hub answered " + r.status + " " + r.statusText;
        return { ok: r.ok, status: r.status, data: data };
      });
    }, function () {
      return { ok: false, status: 0, data: { message: "The hub could not be reached; try again." } };
    });
  }

  // live regions stay in the page (a region shown and filled at once may not be read out)
  function say(el, text, isError) {
    el.textContent = text;
    if (isError !== undefined) el.className = isError ? "error" : "ok";
  }

  function timeCell(iso, empty) {
    var td = document.createElement("td");
    if (!iso) { td.textContent = empty; return td; }
    var t = document.createElement("time");
    t.dateTime = iso;
    t.textContent = iso.slice(0, 10) + " " + iso.slice(11, 16) + " UTC";
    td.appendChild(t);
    return td;
  }

  function showTable(table, emptyNote) {
    var rows = table.tBodies[0].rows.length;
    table.hidden = rows === 0;
    if (emptyNote) emptyNote.hidden = rows !== 0;
  }

  // a row of the API tokens table for a token just made (built from text: a note is never markup)
  function addRow(model) {
    var table = document.getElementById("api-tokens");
    if (!table) return;
    var tr = document.createElement("tr");
    tr.dataset.tokenId = model.id;
    var note = document.createElement("td");
    note.className = "note";
    note.id = "note-" + model.id;
    note.textContent = model.note || "";
    var scopes = document.createElement("td");
    scopes.className = "scopes";
    (model.scopes || []).forEach(function (s) {
      var code = document.createElement("code");
      code.textContent = s;
      scopes.appendChild(code);
    });
    var action = document.createElement("td");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "danger";
    button.dataset.revoke = model.id;
    button.setAttribute("aria-describedby", note.id);
    button.textContent = "Revoke";
    action.appendChild(button);
    [note, scopes, timeCell(model.created, ""), timeCell(model.last_activity, "Never"),
     timeCell(model.expires_at, "Never"), action].forEach(function (td) { tr.appendChild(td); });
    table.tBodies[0].insertBefore(tr, table.tBodies[0].firstChild);
    showTable(table, document.getElementById("api-tokens-empty"));
  }

  var form = document.getElementById("token-form");
  var result = document.getElementById("token-result");
  var value = document.getElementById("token-value");
  var copied = document.getElementById("token-copied");
  var shownId = null;

  function forgetToken() {
    if (!value) return;
    value.value = "";
    result.hidden = true;
    shownId = null;
    say(copied, "");
  }

  if (form) {
    var error = document.getElementById("token-error");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var submit = form.querySelector("button[type=submit]");
      var note = form.elements.note.value.trim();
      var expires = parseInt(form.elements.expires_in.value, 10);
      var scopes = form.elements.scopes.value.split(/[\s,]+/).filter(Boolean);
      var body = {};
      if (note) body.note = note;
      if (expires > 0) body.expires_in = expires;
      if (scopes.length) body.scopes = scopes;
      say(error, "");
      forgetToken();
      submit.disabled = true;
      call("POST", tokensUrl, body).then(function (r) {
        submit.disabled = false;
        if (!r.ok || !r.data.token) {
          say(error, r.data.message || "The token was not made.");
          form.elements[r.status === 400 && scopes.length ? "scopes" : "note"].focus();
          return;
        }
        value.value = r.data.token;
        shownId = r.data.id;
        result.hidden = false;
        form.elements.note.value = "";
        form.elements.scopes.value = "";
        addRow(r.data);
        value.focus();
        value.select();
      });
    });

    document.getElementById("token-copy").addEventListener("click", function () {
      var done = function () { say(copied, "Copied to the clipboard."); };
      var byHand = function () {
        value.focus();
        value.select();
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        if (ok) done(); else say(copied, "Selected: copy it with Ctrl+C (⌘C).");
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(value.value).then(done, byHand);
      } else {
        byHand();
      }
    });

    // leaving the page (or the back/forward cache keeping it) must not keep the token on screen
    window.addEventListener("pagehide", forgetToken);
  }

  var status = document.getElementById("revoke-status");
  page.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-revoke]") : null;
    if (!button) return;
    var id = button.dataset.revoke;
    var row = button.closest("tr");
    var table = row.closest("table");
    var section = table.closest("section");
    var described = document.getElementById(button.getAttribute("aria-describedby"));
    var what = described && described.textContent.trim();
    button.disabled = true;
    say(status, "");
    call("DELETE", tokensUrl + "/" + encodeURIComponent(id)).then(function (r) {
      if (!r.ok && r.status !== 404) {  // 404: already gone (expired, or revoked elsewhere)
        button.disabled = false;
        say(status, "Not revoked: " + r.data.message, true);
        button.focus();
        return;
      }
      row.parentNode.removeChild(row);
      var empty = table.id === "api-tokens" ? "api-tokens-empty" : "oauth-empty";
      showTable(table, document.getElementById(empty));
      if (id === shownId) forgetToken();
      say(status, (table.id === "api-tokens" ? "Token revoked" : "Access revoked") + (what ? ": " + what : "."),
          false);
      section.querySelector("h2").focus();  // the button is gone: keep the keyboard user in this list
    });
  });
})();
