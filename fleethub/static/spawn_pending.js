// The spawn-pending page (spawn_pending.html): follows the spawn's progress stream (server-sent events in
// JupyterHub's format), moves the bar and lists each message, then goes to the server once it is ready; a
// failed start shows its message and the page's "Try again". The stream is authenticated by the hub's
// cookie; an EventSource cannot send headers, so the XSRF token goes as `?_xsrf=`, as JupyterHub's page does.
"use strict";

(() => {
  const root = document.getElementById("spawn-pending");
  if (!root || root.dataset.state !== "starting" || !window.EventSource) {
    return;
  }
  const bar = document.getElementById("spawn-progress");
  const log = root.querySelector("#progress-log ol");
  const status = document.getElementById("spawn-status");
  const heading = document.getElementById("spawn-heading");
  const failed = document.getElementById("spawn-failed");
  const lost = document.getElementById("spawn-lost");
  // a stream refused or cut off: the page is loaded again (the hub then says where the server is), a few
  // times at most in a row, never in a loop
  const RETRIES = `fleethub.spawn-pending.retries:${location.pathname}`;
  const MAX_RETRIES = 3;

  const stored = (use) => {
    try {
      return use(window.sessionStorage);
    } catch {
      return undefined; // storage disabled: no count of retries, so none (the link below remains)
    }
  };

  const cookie = (name) => {
    for (const part of document.cookie.split(";")) {
      const [key, ...value] = part.trim().split("=");
      if (key === name) {
        return decodeURIComponent(value.join("="));
      }
    }
    return "";
  };

  const note = (message) => {
    if (typeof message !== "string" || !message) {
      return;
    }
    // a reconnected stream starts again with "Server requested": each message is listed once
    for (const item of log.children) {
      if (item.textContent === message) {
        return;
      }
    }
    const item = document.createElement("li");
    item.textContent = message; // text, never HTML: a message may hold anything
    log.appendChild(item);
  };

  const advance = (percent) => {
    if (typeof percent !== "number" || !Number.isFinite(percent)) {
      return;
    }
    const value = Math.min(100, Math.max(0, percent));
    if (value > bar.value) { // never backwards (a reconnected stream starts at 0 again)
      bar.value = value;
      bar.textContent = `${Math.round(value)}%`;
    }
  };

  const fail = (message) => {
    root.classList.add("failed");
    root.dataset.state = "failed";
    heading.textContent = heading.dataset.failed;
    document.title = `Start failed · ${document.title.split(" · ").pop()}`;
    status.textContent = "";
    failed.hidden = false;
    document.getElementById("spawn-error").textContent = message || "The server did not start.";
    document.getElementById("try-again").focus();
  };

  const source = new EventSource(`${root.dataset.progressUrl}?_xsrf=${encodeURIComponent(cookie("_xsrf"))}`);

  source.onmessage = (msg) => {
    stored((s) => s.removeItem(RETRIES));
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (event.ready) {
      source.close();
      advance(100);
      note(event.message);
      root.dataset.state = "ready";
      status.textContent = "Your server is ready: opening it…";
      location.replace(root.dataset.nextUrl);
    } else if (event.failed) {
      source.close();
      note(event.message);
      fail(event.message);
    } else {
      advance(event.progress);
      note(event.message);
    }
  };

  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      return; // cut off: the browser reconnects by itself
    }
    const count = stored((s) => s.getItem(RETRIES));
    const tries = Number(count || 0);
    lost.hidden = false;
    if (count !== undefined && tries < MAX_RETRIES) {
      stored((s) => s.setItem(RETRIES, String(tries + 1)));
      lost.textContent = "Lost contact with the hub; checking again…";
      setTimeout(() => location.reload(), 1000 * 2 ** tries);
      return;
    }
    stored((s) => s.removeItem(RETRIES));
    lost.textContent = "Lost contact with the hub. ";
    const again = document.createElement("a");
    again.href = location.href;
    again.textContent = "Check again";
    lost.appendChild(again);
  };
})();
