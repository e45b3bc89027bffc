// fleethub's home page: keeps each server's state current (polling the user's model, and following a
// start under way on the API's progress stream) and drives the forms marked data-js through the REST
// API, so the page is not left. Without this script every action is still a plain form; with it, the
// same markup is shown or hidden per state (data-show).
(function () {
  "use strict";
  var root = document.getElementById("home");
  if (!root || !window.fetch) return;

  var api = root.dataset.api;             // /hub/api/users/<name>
  var spawnUrl = root.dataset.spawn;      // /hub/spawn/<name>
  var withOptions = root.dataset.options === "yes";
  var limit = parseInt(root.dataset.limit || "0", 10);
  var status = document.getElementById("home-status");
  var table = document.getElementById("named-servers");
  var tbody = table ? table.tBodies[0] : null;
  var rowTemplate = document.getElementById("server-row");
  var createForm = document.getElementById("new-server");
  var PLACEHOLDER = "{server}";
  var FAST = 1000, SLOW = 5000;           // ms between polls: while something changes, and otherwise
  var timer = null;
  var epoch = 0;                          // bumped by each action: a poll begun before it is stale
  var pollFailed = false;
  var inFlight = 0;                       // actions under way: their rows show what they expect
  var announced = {};                     // servers whose start or stop was announced: say when it is done
  var streams = {};                       // server name -> the EventSource following its start
  var MAX_STREAMS = 3;

  function xsrfToken() {
    var m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : root.dataset.xsrf;
  }

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  // a REST call with the cookie's XSRF token; rejects with the API's message
  function call(method, path, body) {
    var headers = { "X-XSRFToken": xsrfToken(), "Accept": "application/json" };
    var init = { method: method, credentials: "same-origin", headers: headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      if (r.ok) return r;
      return r.json().then(
        function (j) { throw new Error(j.message || r.status + " " + r.statusText); },
        function () { throw new Error(r.status + " " + r.statusText); });
    });
  }

  function serverPath(name) {
    return name ? api + "/servers/" + encodeURIComponent(name) : api + "/server";
  }

  // the Server model in the home page's words (server_rows.row_state)
  function stateOf(model) {
    if (!model || model.stopped) return "stopped";
    if (model.pending === "spawn") return "starting";
    if (model.pending === "stop") return "stopping";
    return model.ready ? "running" : "starting";
  }

  function ago(iso) {
    if (!iso) return "never";
    var seconds = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    var units = [["day", 86400], ["hour", 3600], ["minute", 60]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][1]) {
        var n = Math.floor(seconds / units[i][1]);
        return n + " " + units[i][0] + (n > 1 ? "s" : "") + " ago";
      }
    }
    return "just now";
  }

  function rows() {
    return Array.prototype.slice.call(root.querySelectorAll("[data-server]"));
  }

  function namedRows() {
    return tbody ? Array.prototype.slice.call(tbody.querySelectorAll("tr[data-server]")) : [];
  }

  function findRow(name) {
    return rows().filter(function (el) { return el.dataset.server === name; })[0] || null;
  }

  function showState(el, state) {
    el.dataset.state = state;
    var word = el.querySelector("[data-field=state]");
    if (word) word.textContent = state;
    var sentence = el.querySelector("[data-field=sentence]");
    if (sentence) sentence.textContent = "Your server is " + state + ".";
    Array.prototype.forEach.call(el.querySelectorAll("[data-show]"), function (part) {
      part.hidden = part.dataset.show.split(" ").indexOf(state) < 0;
    });
  }

  function showActivity(el, iso) {
    var time = el.querySelector("[data-field=activity]");
    if (!time) return;
    if (iso !== undefined) time.setAttribute("datetime", iso || "");
    time.textContent = ago(time.getAttribute("datetime"));
  }

  // a row for a server the page did not show: the template's, renamed (attributes only, never markup)
  function addRow(name) {
    var row = rowTemplate.content.firstElementChild.cloneNode(true);
    var encoded = encodeURIComponent(name);
    var all = [row].concat(Array.prototype.slice.call(row.querySelectorAll("*")));
    all.forEach(function (el) {
      Array.prototype.forEach.call(el.attributes, function (attr) {
        var value = attr.value.split("%7Bserver%7D").join(encoded).split(PLACEHOLDER).join(name);
        if (value !== attr.value) el.setAttribute(attr.name, value);
      });
      if (el.children.length === 0 && el.textContent === PLACEHOLDER) el.textContent = name;
    });
    var before = namedRows().filter(function (r) { return r.dataset.server > name; })[0] || null;
    tbody.insertBefore(row, before);
    return row;
  }

  function updateCount() {
    if (!tbody) return;
    var count = namedRows().length;
    document.getElementById("no-named").hidden = count > 0;
    var full = limit > 0 && count >= limit;
    if (createForm) {
      Array.prototype.forEach.call(createForm.querySelectorAll("input[name=server_name], button"), function (c) {
        c.disabled = full;
      });
    }
    var note = document.getElementById("limit-note");
    if (note && limit > 0) {
      note.textContent = full
        ? "You have the maximum of " + limit + " named servers: delete one to create another."
        : "You have " + count + " of at most " + limit + " named servers.";
    }
  }

  function settled(name, state) {
    if (!(name in announced) || state === "starting" || state === "stopping") return;
    delete announced[name];
    say((name ? name : "Your server") + " is " + state + ".");
  }

  function unfollow(name) {
    if (!streams[name]) return;
    streams[name].close();
    delete streams[name];
  }

  // a start under way is followed on its progress stream (server-sent events, as on the pending page):
  // its messages are shown, and its end (ready or failed) is fetched at once; meanwhile polls are slow
  function follow(el) {
    var name = el.dataset.server;
    if (el.dataset.state !== "starting") return unfollow(name);
    // at most MAX_STREAMS at once: a browser keeps ~6 connections per host over HTTP/1.1, and the page's
    // own calls need some; further starts are followed by the (fast) polls
    if (streams[name] || !window.EventSource || Object.keys(streams).length >= MAX_STREAMS) return;
    var source = new EventSource(serverPath(name) + "/progress?_xsrf=" + encodeURIComponent(xsrfToken()));
    streams[name] = source;
    source.onmessage = function (msg) {
      var event;
      try { event = JSON.parse(msg.data); } catch (e) { return; }
      if (name in announced && event.message) say((name || "Your server") + ": " + event.message, event.failed);
      if (event.failed) delete announced[name];  // its message stays, not replaced by "… is stopped."
      if (event.ready || event.failed) {
        unfollow(name);
        refresh();
      }
    };
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) return;  // cut off: the browser reconnects by itself
      unfollow(name);  // refused (not starting any more) or gone: the polls follow it from now on
      schedule(FAST);
    };
  }

  function apply(model) {
    var servers = model.servers || {};
    rows().forEach(function (el) {
      var name = el.dataset.server;
      if (name in servers) {
        showState(el, stateOf(servers[name]));
        settled(name, stateOf(servers[name]));
        showActivity(el, servers[name].last_activity);
      } else if (name === "") {
        showState(el, "stopped");
        settled(name, "stopped");
      } else {
        el.remove();  // deleted elsewhere
      }
    });
    if (tbody) {
      Object.keys(servers).forEach(function (name) {
        if (name && !findRow(name)) {
          var row = addRow(name);
          showState(row, stateOf(servers[name]));
          showActivity(row, servers[name].last_activity);
        }
      });
    }
    Object.keys(streams).forEach(function (name) { if (!findRow(name)) unfollow(name); });
    rows().forEach(follow);
    updateCount();
  }

  // a change the polls must watch closely: a stop, or a start no stream follows
  function changing() {
    return rows().some(function (el) {
      return el.dataset.state === "stopping" || (el.dataset.state === "starting" && !streams[el.dataset.server]);
    });
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay);
  }

  function refresh() {
    if (document.hidden) return;  // polled again once visible
    var begun = epoch;
    call("GET", api + "?include_stopped_servers=1")
      .then(function (r) { return r.json(); })
      .then(function (model) {
        if (begun !== epoch || inFlight) return schedule(FAST);  // it may predate an action's effect
        apply(model);
        if (pollFailed) say("");
        pollFailed = false;
        schedule(changing() ? FAST : SLOW);
      })
      .catch(function (err) {
        pollFailed = true;
        say("Could not refresh the servers' states: " + err.message, true);
        schedule(SLOW);
      });
  }

  function busy(el, on) {
    Array.prototype.forEach.call(el.querySelectorAll("button, input"), function (c) { c.disabled = on; });
  }

  // each action shows its effect at once (the REST call may wait for the server), the polls then follow it
  var actions = {
    start: function (row, name) {
      showState(row, "starting");
      announced[name] = true;
      say("Starting " + name + "…");
      return call("POST", serverPath(name), {});
    },
    stop: function (row, name) {
      showState(row, "stopping");
      announced[name] = true;
      say("Stopping " + (name || "your server") + "…");
      return call("DELETE", serverPath(name));
    },
    "delete": function (row, name) {
      return call("DELETE", serverPath(name), { remove: true }).then(function () {
        row.remove();
        say("Deleted " + name + ".");
        var input = document.getElementById("server-name");
        if (input && !input.disabled) input.focus();
      });
    }
  };

  function create(form) {
    var input = form.querySelector("input[name=server_name]");
    var name = input.value.trim();
    if (!input.checkValidity()) {
      input.reportValidity();
      return Promise.resolve();
    }
    if (withOptions) {  // options to choose first: the new server's form
      window.location.assign(spawnUrl + "/" + encodeURIComponent(name));
      return Promise.resolve();
    }
    var existing = findRow(name);
    if (existing) {
      say("You already have a server named " + name + ".", true);
      return Promise.resolve();
    }
    var row = addRow(name);
    showState(row, "starting");
    showActivity(row, null);
    say("Creating " + name + "…");
    announced[name] = true;
    return call("POST", serverPath(name), {}).then(function () {
      input.value = "";
      say("Created " + name + ": starting…");
    }, function (err) {
      row.remove();
      throw err;
    });
  }

  root.addEventListener("submit", function (event) {
    var form = event.target;
    var kind = form.dataset.js;
    if (!kind) return;
    event.preventDefault();
    var row = form.closest("[data-server]");
    inFlight++;
    var done = kind === "create" ? create(form) : actions[kind](row, row.dataset.server);
    busy(form, true);
    done.catch(function (err) { say(err.message, true); })
      .then(function () {
        inFlight--;
        epoch++;
        busy(form, false);
        updateCount();
        // the field lost the focus while disabled: give it back, for the next name (unless the limit is reached)
        var input = kind === "create" ? form.querySelector("input[name=server_name]") : null;
        if (input && !input.disabled) input.focus();
        schedule(FAST);
      });
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });

  rows().forEach(function (el) { showActivity(el); follow(el); });
  schedule(changing() ? FAST : SLOW);
})();
