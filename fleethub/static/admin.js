/* fleethub's admin panel (/hub/admin): lists and buttons over the hub's REST API.
 *
 * Every call goes to /hub/api/... with the browser's login cookie and the `_xsrf` cookie's token in
 * X-XSRFToken, so the API checks each action against the admin's own scopes. Values from the API reach
 * the page through textContent and attributes only (never innerHTML): a user called "<b>x" shows as such.
 */
(() => {
  "use strict";

  const root = document.getElementById("admin");
  if (!root) return;
  const cfg = {
    me: root.dataset.me || "",
    hub: (root.dataset.baseUrl || "/") + "hub",  // the hub's pages under the base_url
    access: JSON.parse(root.dataset.access || "[]"),
    signups: root.dataset.signups === "true",
    named: root.dataset.namedServers === "true",
    spawnForm: root.dataset.spawnForm === "true",
    pageSize: Number(root.dataset.pageSize) || 50,
  };
  const PAGINATED = "application/jupyterhub-pagination+json";
  const POLL_MS = 1000;
  const seg = encodeURIComponent;

  // --- talking to the API ------------------------------------------------------------------------

  function xsrfToken() {
    for (const part of document.cookie.split(";")) {
      const eq = part.indexOf("=");
      if (part.slice(0, eq).trim() === "_xsrf") return decodeURIComponent(part.slice(eq + 1).trim());
    }
    return "";
  }

  /** Call the API; resolves to {status, data}, rejects with an Error carrying the API's `message`. */
  async function api(method, path, body, accept = "application/json") {
    const headers = { "X-XSRFToken": xsrfToken(), Accept: accept };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(cfg.hub + "/api" + path, init);
    } catch (exc) {
      throw new Error(`The hub did not answer (${exc.message}).`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data && typeof data.message === "string" ? data.message : response.statusText;
      throw new Error(`${message} (${response.status})`);
    }
    return { status: response.status, data };
  }

  const userPath = (name) => `/users/${seg(name)}`;
  const serverPath = (user, server) => userPath(user) + (server ? `/servers/${seg(server)}` : "/server");

  // --- small DOM helpers -------------------------------------------------------------------------

  const byId = (id) => document.getElementById(id);
  const clone = (id) => byId(id).content.firstElementChild.cloneNode(true);
  const field = (el, name) => el.querySelector(`[data-field="${name}"]`);
  const control = (el, action) => el.querySelector(`[data-action="${action}"]`);

  function say(el, text, kind = "ok") {
    el.textContent = text;
    el.classList.toggle("error", kind === "error");
    el.classList.toggle("ok", kind === "ok");
  }

  /** Run `work` once at a time per button (marked aria-disabled meanwhile: a disabled button would lose the
   * keyboard focus); a failure is said in `out` with the API's message. */
  async function busy(button, out, work) {
    if (button && button.getAttribute("aria-disabled") === "true") return undefined;
    if (button) button.setAttribute("aria-disabled", "true");
    try {
      return await work();
    } catch (exc) {
      say(out, exc.message, "error");
      return undefined;
    } finally {
      if (button) button.removeAttribute("aria-disabled");
    }
  }

  /** Replace `old` by `fresh`, keeping the keyboard focus on the same control (or a neighbour of it). */
  function replaceKeepingFocus(old, fresh) {
    const active = document.activeElement;
    const key = active && old.contains(active) ? active.dataset.key : null;
    old.replaceWith(fresh);
    if (!key) return;
    const usable = (el) => el && !el.disabled && el.checkVisibility();
    const firstIn = (el) => el && [...el.querySelectorAll("button, a[href]")].find(usable);
    const same = fresh.querySelector(`[data-key="${CSS.escape(key)}"]`);
    const server = key.includes(":") ? fresh.querySelector(`[data-server="${CSS.escape(key.slice(key.indexOf(":") + 1))}"]`) : null;
    const home = fresh.querySelector("summary, [tabindex='-1']");
    const target = usable(same) ? same : firstIn(server) || home || firstIn(fresh);
    if (target) target.focus();
  }

  const confirmDialog = byId("confirm-dialog");
  const renameDialog = byId("rename-dialog");
  for (const dialog of [confirmDialog, renameDialog]) {
    for (const closer of dialog.querySelectorAll("[data-close]")) {
      closer.addEventListener("click", () => dialog.close("cancel"));
    }
  }

  /** Show a modal dialog; resolves true if it was submitted (not cancelled), focus back where it was. */
  function ask(dialog) {
    const back = document.activeElement;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        if (back && back.isConnected) back.focus();
        resolve(dialog.returnValue === "ok");
      }, { once: true });
      dialog.showModal();
    });
  }

  function confirmAction(question, label) {
    byId("confirm-text").textContent = question;
    byId("confirm-ok").textContent = label;
    return ask(confirmDialog);
  }

  // --- paging ------------------------------------------------------------------------------------

  /** A paginated list of the API (JupyterHub's `_pagination`) shown with Previous/Next buttons. */
  class Pager {
    constructor(prefix, noun, load) {
      this.offset = 0;
      this.noun = noun;
      this.load = load;
      this.prev = byId(`${prefix}-prev`);
      this.next = byId(`${prefix}-next`);
      this.range = byId(`${prefix}-range`);
      this.nextOffset = null;
      this.prev.addEventListener("click", () => { this.offset = Math.max(0, this.offset - cfg.pageSize); this.load(); });
      this.next.addEventListener("click", () => { if (this.nextOffset !== null) { this.offset = this.nextOffset; this.load(); } });
    }

    query() {
      return new URLSearchParams({ offset: String(this.offset), limit: String(cfg.pageSize) });
    }

    show(pagination, count) {
      const { offset, total, next } = pagination;
      this.nextOffset = next ? next.offset : null;
      this.range.textContent = total ? `${this.noun} ${offset + 1}–${offset + count} of ${total}` : `No ${this.noun.toLowerCase()}`;
      this.prev.disabled = offset === 0;
      this.next.disabled = this.nextOffset === null;
    }
  }

  // --- users and their servers -------------------------------------------------------------------

  const userBody = byId("user-table").tBodies[0];
  const usersMsg = byId("users-msg");
  const polls = new Map(); // user name -> timer of the next refresh while one of its servers is pending
  let filter = "";
  let listed = 0; // answers to older list requests are dropped

  function serverState(server) {
    if (!server || server.stopped) return "stopped";
    if (server.pending === "stop") return "stopping";
    if (server.pending === "spawn" || !server.ready) return "starting";
    return "running";
  }

  function mayOpen(user, server) {
    return cfg.access.some((s) => s === "access:servers" || s === `access:servers!user=${user}`
      || s === `access:servers!server=${user}/${server}`);
  }

  function serverItem(user, name, server) {
    const li = clone("tpl-server");
    const state = serverState(server);
    const label = name ? `server ${name}` : "default server";
    const whose = `${user}'s ${label}`;
    li.dataset.server = name;
    field(li, "label").textContent = name || "default";
    const badge = field(li, "state");
    badge.textContent = state;
    badge.classList.add(`state-${state}`);
    const start = control(li, "start");
    const form = control(li, "start-form");
    const stop = control(li, "stop");
    const open = control(li, "open");
    const remove = control(li, "remove-server");
    for (const [el, action, text] of [[start, "start", "Start"], [form, "start-form", "Start"], [stop, "stop", "Stop"],
      [open, "open", "Open"], [remove, "remove-server", "Delete"]]) {
      el.dataset.key = `${action}:${name}`;
      el.setAttribute("aria-label", `${text} ${whose}`);
    }
    const stopped = state === "stopped";
    start.hidden = !stopped || cfg.spawnForm;
    form.hidden = !stopped || !cfg.spawnForm;
    if (!form.hidden) form.href = `${cfg.hub}/spawn/${seg(user)}` + (name ? `/${seg(name)}` : "");
    stop.hidden = stopped || state === "stopping";
    open.hidden = state !== "running" || !mayOpen(user, name);
    if (!open.hidden) open.href = server.url;
    remove.hidden = !name;
    return li;
  }

  function userRow(user) {
    const row = clone("tpl-user");
    row.dataset.user = user.name;
    field(row, "name").textContent = user.name;
    const role = field(row, "role");
    role.textContent = user.admin ? "admin" : "user";
    role.classList.toggle("role-admin", Boolean(user.admin));
    const servers = user.servers || {};
    const names = Object.keys(servers).filter((n) => n).sort();
    field(row, "servers").replaceChildren(serverItem(user.name, "", servers[""]),
      ...names.map((n) => serverItem(user.name, n, servers[n])));
    const rename = control(row, "rename");
    const admin = control(row, "admin");
    const del = control(row, "delete-user");
    admin.textContent = user.admin ? "Remove admin" : "Make admin";
    row.dataset.admin = user.admin ? "true" : "false";
    for (const [el, key, text] of [[rename, "rename", `Rename ${user.name}`],
      [admin, "admin", `${admin.textContent}: ${user.name}`], [del, "delete-user", `Delete user ${user.name}`]]) {
      el.dataset.key = key;
      el.setAttribute("aria-label", text);
    }
    del.hidden = user.name === cfg.me; // the API refuses it anyway ("Cannot delete yourself!")
    const newServer = field(row, "new-server");
    newServer.hidden = !cfg.named;
    newServer.querySelector("input").setAttribute("aria-label", `Name of a new server of ${user.name}`);
    newServer.querySelector("button").setAttribute("aria-label", `Start a new server of ${user.name}`);
    return row;
  }

  const isPending = (user) => Object.values(user.servers || {}).some((s) => s.pending);
  const rowOf = (name) => [...userBody.rows].find((r) => r.dataset.user === name);

  function watch(user) {
    clearTimeout(polls.get(user.name));
    polls.delete(user.name);
    if (isPending(user)) polls.set(user.name, setTimeout(() => refreshUser(user.name), POLL_MS));
  }

  async function refreshUser(name) {
    const old = rowOf(name);
    if (!old) return;
    try {
      const { data } = await api("GET", `${userPath(name)}?include_stopped_servers=true`);
      const fresh = userRow(data);
      const current = rowOf(name);
      if (!current) return;
      field(fresh, "msg").textContent = field(current, "msg").textContent;
      field(fresh, "msg").className = field(current, "msg").className;
      replaceKeepingFocus(current, fresh);
      watch(data);
    } catch (exc) {
      say(field(old, "msg"), exc.message, "error");
    }
  }

  const users = new Pager("users", "Users", loadUsers);

  async function loadUsers() {
    const mine = ++listed;
    const query = users.query();
    query.set("include_stopped_servers", "true");
    if (filter) query.set("name_filter", filter);
    try {
      const { data } = await api("GET", `/users?${query}`, undefined, PAGINATED);
      if (mine !== listed) return;
      if (!data.items.length && users.offset > 0 && data._pagination.total > 0) {
        users.offset = Math.max(0, data._pagination.total - cfg.pageSize); // the last page shrank: go back
        loadUsers();
        return;
      }
      for (const timer of polls.values()) clearTimeout(timer);
      polls.clear();
      const hadFocus = userBody.contains(document.activeElement);
      userBody.replaceChildren(...data.items.map(userRow));
      if (!data.items.length) {
        const empty = userBody.insertRow();
        const cell = empty.insertCell();
        cell.colSpan = 4;
        cell.className = "muted";
        cell.textContent = filter ? `No user's name contains "${filter}".` : "No users.";
      }
      data.items.forEach(watch);
      users.show(data._pagination, data.items.length);
      if (hadFocus) byId("users-title").focus();
    } catch (exc) {
      if (mine === listed) say(usersMsg, exc.message, "error");
    }
  }

  const serverTitle = (user, server) => (server ? `${user}'s server ${server}` : `${user}'s server`);

  async function startServer(user, server, button, out) {
    say(out, `Starting ${serverTitle(user, server)}…`);
    await busy(button, out, async () => {
      const { status } = await api("POST", serverPath(user, server));
      say(out, `${serverTitle(user, server)} is ${status === 201 ? "running" : "starting"}.`);
    });
    await refreshUser(user);
  }

  async function stopServer(user, server, button, out) {
    say(out, `Stopping ${serverTitle(user, server)}…`);
    await busy(button, out, async () => {
      const { status } = await api("DELETE", serverPath(user, server));
      say(out, `${serverTitle(user, server)} is ${status === 204 ? "stopped" : "stopping"}.`);
    });
    await refreshUser(user);
  }

  async function removeServer(user, server, button, out) {
    if (!await confirmAction(`Delete ${user}'s server "${server}"? It is stopped first; its name is freed.`,
      "Delete server")) return;
    await busy(button, out, async () => {
      await api("DELETE", serverPath(user, server), { remove: true });
      say(out, `Server ${server} of ${user} deleted.`);
    });
    await refreshUser(user);
  }

  async function toggleAdmin(user, row, button, out) {
    const admin = row.dataset.admin !== "true";
    await busy(button, out, async () => {
      await api("PATCH", userPath(user), { admin });
      say(out, admin ? `${user} is now an admin.` : `${user} is no longer an admin.`);
    });
    await refreshUser(user);
  }

  async function renameUser(user, button, out) {
    field(renameDialog, "name").textContent = user;
    const input = byId("rename-input");
    input.value = user;
    if (!await ask(renameDialog)) return;
    const name = input.value;
    if (!name || name === user) return;
    const done = await busy(button, out, async () => {
      await api("PATCH", userPath(user), { name });
      return true;
    });
    if (done) {
      say(usersMsg, `${user} is now called ${name}.`);
      await loadUsers();
    }
  }

  async function deleteUser(user, button, out) {
    if (!await confirmAction(`Delete user ${user}? Their servers are stopped and deleted too.`,
      "Delete user")) return;
    const done = await busy(button, out, async () => {
      await api("DELETE", userPath(user));
      return true;
    });
    if (done) {
      say(usersMsg, `User ${user} deleted.`);
      await loadUsers();
    }
  }

  userBody.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const row = button && button.closest("tr");
    if (!row || !row.dataset.user) return;
    const user = row.dataset.user;
    const item = button.closest("li[data-server]");
    const server = item ? item.dataset.server : "";
    const out = field(row, "msg");
    const actions = {
      start: () => startServer(user, server, button, out),
      stop: () => stopServer(user, server, button, out),
      "remove-server": () => removeServer(user, server, button, out),
      admin: () => toggleAdmin(user, row, button, out),
      rename: () => renameUser(user, button, out),
      "delete-user": () => deleteUser(user, button, out),
    };
    const act = actions[button.dataset.action];
    if (act) act();
  });

  userBody.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const row = form.closest("tr");
    if (form.dataset.form !== "new-server" || !row) return;
    const user = row.dataset.user;
    const server = form.elements.server.value.trim();
    if (!server) return;
    if (cfg.spawnForm) { // options to choose first: the spawn form (a GET starts nothing)
      window.location.assign(`${cfg.hub}/spawn/${seg(user)}/${seg(server)}`);
      return;
    }
    await startServer(user, server, form.querySelector("button"), field(row, "msg"));
  });

  let typing = null;
  const filterInput = byId("user-filter");
  function search() {
    clearTimeout(typing);
    filter = filterInput.value.trim();
    users.offset = 0;
    say(usersMsg, "");
    loadUsers();
  }
  byId("user-search").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  filterInput.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(search, 300); });

  byId("add-users-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const out = byId("add-users-msg");
    const usernames = [...new Set(form.elements.usernames.value.split("\n").map((n) => n.trim()).filter(Boolean))];
    if (!usernames.length) {
      say(out, "Give at least one name.", "error");
      return;
    }
    const admin = form.elements.admin.checked;
    await busy(form.querySelector("button[type=submit]"), out, async () => {
      const { data } = await api("POST", "/users", { usernames, admin });
      const made = data.map((u) => u.name);
      say(out, `Added ${made.length} user${made.length === 1 ? "" : "s"}: ${made.join(", ")}.`);
      form.reset();
      await loadUsers();
    });
  });

  // --- groups ------------------------------------------------------------------------------------

  const groupList = byId("group-list");
  const groupsMsg = byId("groups-msg");
  let groupsListed = 0;

  function groupItem(group, open = false) {
    const li = clone("tpl-group");
    li.dataset.group = group.name;
    const details = li.querySelector("details");
    details.open = open;
    field(li, "name").textContent = group.name;
    const members = group.users || [];
    field(li, "count").textContent = `(${members.length} member${members.length === 1 ? "" : "s"})`;
    field(li, "members").replaceChildren(...members.map((name) => {
      const item = clone("tpl-member");
      field(item, "name").textContent = name;
      const remove = control(item, "remove-member");
      remove.dataset.member = name;
      remove.dataset.key = `remove-member:${name}`;
      remove.setAttribute("aria-label", `Remove ${name} from ${group.name}`);
      return item;
    }));
    const addForm = li.querySelector('[data-form="add-member"]');
    addForm.elements.member.dataset.key = "member";
    addForm.querySelector("button").dataset.key = "add-member";
    const propsForm = li.querySelector('[data-form="properties"]');
    propsForm.elements.properties.value = JSON.stringify(group.properties || {}, null, 2);
    propsForm.elements.properties.dataset.key = "properties";
    propsForm.querySelector("button").dataset.key = "save-properties";
    const del = control(li, "delete-group");
    del.dataset.key = "delete-group";
    del.setAttribute("aria-label", `Delete group ${group.name}`);
    return li;
  }

  function showGroup(old, group, message, kind = "ok") {
    const fresh = groupItem(group, true);
    replaceKeepingFocus(old, fresh);
    say(field(fresh, "msg"), message, kind);
  }

  const groups = new Pager("groups", "Groups", loadGroups);

  async function loadGroups() {
    const mine = ++groupsListed;
    try {
      const { data } = await api("GET", `/groups?${groups.query()}`, undefined, PAGINATED);
      if (mine !== groupsListed) return;
      const open = new Set([...groupList.children].filter((li) => li.querySelector("details").open)
        .map((li) => li.dataset.group));
      groupList.replaceChildren(...data.items.map((g) => groupItem(g, open.has(g.name))));
      groups.show(data._pagination, data.items.length);
    } catch (exc) {
      if (mine === groupsListed) say(groupsMsg, exc.message, "error");
    }
  }

  const groupPath = (name) => `/groups/${seg(name)}`;

  groupList.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const li = form.closest("li[data-group]");
    const name = li.dataset.group;
    const out = field(li, "msg");
    const button = form.querySelector("button[type=submit]");
    if (form.dataset.form === "add-member") {
      const member = form.elements.member.value.trim();
      if (!member) return;
      await busy(button, out, async () => {
        const { data } = await api("POST", `${groupPath(name)}/users`, { users: [member] });
        showGroup(li, data, `${member} added to ${name}.`);
      });
    } else if (form.dataset.form === "properties") {
      let properties;
      try {
        properties = JSON.parse(form.elements.properties.value || "{}");
      } catch (exc) {
        say(out, `Properties are not valid JSON: ${exc.message}`, "error");
        return;
      }
      if (properties === null || typeof properties !== "object" || Array.isArray(properties)) {
        say(out, "Properties must be a JSON object, such as {\"key\": \"value\"}.", "error");
        return;
      }
      await busy(button, out, async () => {
        const { data } = await api("PUT", `${groupPath(name)}/properties`, properties);
        showGroup(li, data, `Properties of ${name} saved.`);
      });
    }
  });

  groupList.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    const li = button && button.closest("li[data-group]");
    if (!li) return;
    const name = li.dataset.group;
    const out = field(li, "msg");
    if (button.dataset.action === "remove-member") {
      const member = button.dataset.member;
      await busy(button, out, async () => {
        const { data } = await api("DELETE", `${groupPath(name)}/users`, { users: [member] });
        showGroup(li, data, `${member} removed from ${name}.`);
      });
    } else if (button.dataset.action === "delete-group") {
      if (!await confirmAction(`Delete group ${name}? Its members stay; the group's roles no longer reach them.`,
        "Delete group")) return;
      const done = await busy(button, out, async () => {
        await api("DELETE", groupPath(name));
        return true;
      });
      if (done) {
        say(groupsMsg, `Group ${name} deleted.`);
        byId("groups-title").focus();
        await loadGroups();
      }
    }
  });

  byId("new-group-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const name = form.elements.name.value.trim();
    if (!name) return;
    await busy(form.querySelector("button[type=submit]"), groupsMsg, async () => {
      await api("POST", groupPath(name), {});
      say(groupsMsg, `Group ${name} created.`);
      form.reset();
      await loadGroups();
    });
  });

  // --- sign-ups ----------------------------------------------------------------------------------

  async function loadSignups() {
    const body = byId("signup-table").tBodies[0];
    const out = byId("signups-msg");
    try {
      const { data } = await api("GET", "/signups");
      body.replaceChildren(...data.map((signup) => {
        const row = clone("tpl-signup");
        row.dataset.user = signup.name;
        field(row, "name").textContent = signup.name;
        const created = field(row, "created");
        created.textContent = signup.created ? new Date(signup.created).toLocaleString() : "";
        control(row, "approve").setAttribute("aria-label", `Approve ${signup.name}`);
        control(row, "reject").setAttribute("aria-label", `Reject ${signup.name}`);
        return row;
      }));
      if (!data.length) {
        const cell = body.insertRow().insertCell();
        cell.colSpan = 3;
        cell.className = "muted";
        cell.textContent = "No sign-up is waiting.";
      }
    } catch (exc) {
      say(out, exc.message, "error");
    }
  }

  if (cfg.signups) {
    byId("signup-table").tBodies[0].addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      const row = button && button.closest("tr");
      if (!row || !row.dataset.user) return;
      const name = row.dataset.user;
      const out = byId("signups-msg");
      if (button.dataset.action === "approve") {
        const done = await busy(button, out, async () => {
          await api("POST", `/signups/${seg(name)}`);
          return true;
        });
        if (done) say(out, `${name} may log in now.`);
      } else if (button.dataset.action === "reject") {
        if (!await confirmAction(`Reject the sign-up of ${name}? The account is deleted.`, "Reject")) return;
        const done = await busy(button, out, async () => {
          await api("DELETE", `/signups/${seg(name)}`);
          return true;
        });
        if (done) say(out, `The sign-up of ${name} was rejected.`);
      } else {
        return;
      }
      byId("signups-title").focus();
      await Promise.all([loadSignups(), loadUsers()]);
    });
  }

  for (const id of ["users-title", "groups-title", "signups-title"]) {
    const heading = byId(id);
    if (heading) heading.tabIndex = -1; // focus lands here when the list under it is redrawn
  }
  loadUsers();
  loadGroups();
  if (cfg.signups) loadSignups();
})();
