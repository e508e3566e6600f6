// The web console: a tenant's view (online users, devices, messages, token
// lifetimes) and the operator's view (tenants). Served by the edge at /console.

import { api, basicAuth, bearerAuth, el, formatTime, formData } from "./api.js";

const params = new URLSearchParams(location.search);
// Period of the online users refresh, in milliseconds (`?poll=` overrides it).
const POLL_MS = Number(params.get("poll")) || 2000;
const TENANTS_PAGE_SIZE = 20;
const HISTORY_LIMIT = 20;

const $ = (selector) => document.querySelector(selector);

// The signed-in caller: {kind: "tenant" | "operator", authorization, account}.
let session = null;
let pollTimer = null;
const users = { page: 1, size: 20, total: 0 };
const tenants = { page: 1, total: 0 };
// The conversation or broadcast list shown, and the seq to page back from.
let history = null;

function call(method, path, options) {
  return api(session.authorization, method, path, options);
}

// `source` marks who set the line, so a refresh clears only its own error and
// not the outcome of an action the user just took.
function setStatus(text, isError = false, source = "action") {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.dataset.source = source;
}

function showResult(selector, text, isError = false) {
  const node = $(selector);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// Signing in and out

async function signIn(kind, authorization, account) {
  const previous = session;
  session = { kind, authorization, account };
  try {
    if (kind === "tenant") await call("GET", "/sysClient/getSysClient", { query: { account } });
    else await call("GET", "/sysClient/listSysClients", { query: { page: 1, size: 1 } });
  } catch (error) {
    session = previous;
    setStatus(`Sign-in failed: ${error.message}`, true);
    return;
  }
  setStatus("");
  $("#sign-in").hidden = true;
  $("#sign-out").hidden = false;
  $("#who").textContent = kind === "tenant" ? `tenant ${account}` : "operator";
  if (kind === "tenant") {
    $("#tenant-view").hidden = false;
    startPolling();
  } else {
    $("#operator-view").hidden = false;
    await Promise.all([loadTenants(), loadPlatform()]);
  }
}

function signOut() {
  session = null;
  clearTimeout(pollTimer);
  pollTimer = null;
  history = null;
  for (const form of document.querySelectorAll("form")) form.reset();
  for (const body of document.querySelectorAll("tbody, #nodes, #history, #edges")) body.replaceChildren();
  $("#tenant-view").hidden = true;
  $("#operator-view").hidden = true;
  $("#devices-panel").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  setStatus("Signed out.");
}

// Tenant view: online users, polled

function startPolling() {
  clearTimeout(pollTimer);
  const poll = async () => {
    if (session?.kind !== "tenant") return;
    await refreshUsers();
    if (session?.kind === "tenant") pollTimer = setTimeout(poll, POLL_MS);
  };
  poll();
}

function connectionKey(user) {
  return `${user.userId}\u0000${user.appPlatform}\u0000${user.loginTime}`;
}

async function refreshUsers() {
  let page;
  let maps;
  try {
    [page, maps] = await Promise.all([
      call("GET", "/user/list", { query: { page: users.page, size: users.size } }),
      call("GET", "/user/listUserMaps"),
    ]);
  } catch (error) {
    setStatus(`Refreshing online users failed: ${error.message}`, true, "refresh");
    return;
  }
  if (session?.kind !== "tenant") return;
  const nodeOf = new Map();
  for (const [nodeId, nodeUsers] of Object.entries(maps)) {
    for (const user of nodeUsers) nodeOf.set(connectionKey(user), nodeId);
  }
  users.total = page.total;
  const pages = Math.max(1, Math.ceil(page.total / users.size));
  if (users.page > pages) {
    users.page = pages;
    return refreshUsers();
  }
  renderUsers(page.users, nodeOf, pages);
  renderNodes(maps);
  if ($("#status").dataset.source === "refresh") setStatus("");
}

function renderUsers(list, nodeOf, pages) {
  $("#online-total").textContent = `(${users.total})`;
  $("#users tbody").replaceChildren(
    ...list.map((user) =>
      el(
        "tr",
        { dataset: { userId: user.userId, platform: user.appPlatform } },
        el("td", {}, user.userId),
        el("td", {}, user.nickname),
        el("td", {}, user.appPlatform),
        el("td", { class: "node" }, nodeOf.get(connectionKey(user)) || `${user.accIp}:${user.accPort}`),
        el("td", {}, `${user.clientIp}:${user.clientPort}`),
        el("td", {}, formatTime(user.loginTime)),
        el("td", {}, formatTime(user.heartbeatTime)),
        el(
          "td",
          { class: "actions" },
          el("button", { type: "button", class: "devices", onclick: () => showDevices(user.userId, nodeOf) }, "Devices"),
          el(
            "button",
            { type: "button", class: "exit danger", onclick: (event) => forceOffline(event.target, user.userId) },
            armedExits.has(user.userId) ? "Confirm" : "Force offline",
          ),
        ),
      ),
    ),
  );
  $("#users-empty").hidden = list.length > 0;
  $("#users-page").textContent = `Page ${users.page} of ${pages}`;
  $("#users-prev").disabled = users.page <= 1;
  $("#users-next").disabled = users.page >= pages;
  $("#users-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

function renderNodes(maps) {
  const entries = Object.entries(maps).sort(([a], [b]) => a.localeCompare(b));
  $("#nodes").replaceChildren(
    ...entries.map(([nodeId, nodeUsers]) =>
      el("li", { dataset: { nodeId } }, el("strong", {}, nodeId), `: ${nodeUsers.length} connection(s)`),
    ),
  );
  if (entries.length === 0) $("#nodes").append(el("li", { class: "hint" }, "No connection."));
}

async function showDevices(userId, nodeOf) {
  let online;
  try {
    online = await call("POST", "/user/online", { body: { userId } });
  } catch (error) {
    setStatus(`Loading the devices of ${userId} failed: ${error.message}`, true);
    return;
  }
  $("#devices-panel").hidden = false;
  $("#devices-user").textContent = online.online ? userId : `${userId} (offline)`;
  $("#devices tbody").replaceChildren(
    ...online.devices.map((device) =>
      el(
        "tr",
        {},
        el("td", {}, device.appPlatform),
        el("td", {}, nodeOf.get(connectionKey(device)) || "-"),
        el("td", {}, `${device.accIp}:${device.accPort}`),
        el("td", {}, `${device.clientIp}:${device.clientPort}`),
        el("td", {}, formatTime(device.loginTime)),
        el("td", {}, formatTime(device.heartbeatTime)),
        el("td", {}, device.deviceInfo || "-"),
      ),
    ),
  );
}

// Users whose Force offline button is armed. The state lives here, not on the
// button, because the users poll re-renders the table every POLL_MS.
const armedExits = new Set();

// The first click arms the button; a second click within 3 seconds acts.
async function forceOffline(button, userId) {
  if (!armedExits.has(userId)) {
    armedExits.add(userId);
    button.textContent = "Confirm";
    setTimeout(() => {
      armedExits.delete(userId);
      const current = document.querySelector(`#users tr[data-user-id="${CSS.escape(userId)}"] button.exit`);
      if (current) current.textContent = "Force offline";
    }, 3000);
    return;
  }
  armedExits.delete(userId);
  button.disabled = true;
  try {
    const result = await call("POST", "/sysClient/exit", { body: { userId } });
    setStatus(`${userId}: ${result.revoked} token(s) revoked, ${result.closed} connection(s) closed.`);
  } catch (error) {
    setStatus(`Forcing ${userId} offline failed: ${error.message}`, true);
  }
  await refreshUsers();
}

// Tenant view: messages and token lifetimes

async function sendMessage(event) {
  event.preventDefault();
  const values = formData(event.target);
  const body = { from: values.from, message: values.message, msgType: values.msgType };
  if (values.all) body.all = true;
  else body.to = values.to;
  try {
    const sent = await call("POST", "/msg/sendMsg", { body });
    const target = values.all ? "everyone online" : values.to;
    showResult("#send-result", `Sent to ${target}: ${sent.delivered} connection(s) reached, msgId ${sent.msgId}.`);
    event.target.elements.message.value = "";
  } catch (error) {
    showResult("#send-result", `Not sent: ${error.message}`, true);
  }
}

async function loadHistory(older = false) {
  if (!history) return;
  const query = { limit: HISTORY_LIMIT };
  if (older) query.beforeSeq = history.firstSeq;
  const path = history.broadcasts ? "/msg/getBroadcast" : "/msg/getMsg";
  if (!history.broadcasts) Object.assign(query, { userId: history.userId, peerId: history.peerId });
  let page;
  try {
    page = await call("GET", path, { query });
  } catch (error) {
    setStatus(`Loading history failed: ${error.message}`, true);
    return;
  }
  const seqOf = (m) => (history.broadcasts ? m.broadcastSeq : m.seq);
  const items = page.messages.map((m) =>
    el(
      "li",
      { dataset: { msgId: m.msgId } },
      el("span", { class: "meta" }, `#${seqOf(m)} ${formatTime(m.time)} ${m.from.userId} → ${m.to || "everyone"}`),
      el("span", { class: "text" }, m.message),
    ),
  );
  if (older) $("#history").prepend(...items);
  else $("#history").replaceChildren(...items);
  if (page.messages.length) history.firstSeq = seqOf(page.messages[0]);
  $("#history-older").hidden = !page.hasMore;
  $("#history-empty").hidden = $("#history").children.length > 0;
}

async function updateTtl(event) {
  event.preventDefault();
  const values = formData(event.target);
  const body = { ttl: Number(values.ttl) };
  if (values.token) body.token = values.token;
  try {
    const result = await call("POST", "/sysClient/updateTokenVal", { body });
    const text = values.token
      ? `The token now expires at ${formatTime(result.expiresAt)}.`
      : `New tokens now live ${result.defaultTtl} seconds.`;
    showResult("#ttl-result", text);
    event.target.elements.token.value = "";
  } catch (error) {
    showResult("#ttl-result", `Not changed: ${error.message}`, true);
  }
}

// Operator view

async function loadTenants() {
  let page;
  try {
    page = await call("GET", "/sysClient/listSysClients", {
      query: { page: tenants.page, size: TENANTS_PAGE_SIZE },
    });
  } catch (error) {
    setStatus(`Loading tenants failed: ${error.message}`, true);
    return;
  }
  tenants.total = page.total;
  const pages = Math.max(1, Math.ceil(page.total / TENANTS_PAGE_SIZE));
  $("#tenant-total").textContent = `(${page.total})`;
  $("#tenants tbody").replaceChildren(
    ...page.sysClients.map((tenant) =>
      el(
        "tr",
        { dataset: { account: tenant.account } },
        el("td", {}, tenant.account),
        el("td", {}, tenant.phoneNum || "-"),
        el("td", {}, formatTime(tenant.createdAt)),
      ),
    ),
  );
  $("#tenants-page").textContent = `Page ${tenants.page} of ${pages}`;
  $("#tenants-prev").disabled = tenants.page <= 1;
  $("#tenants-next").disabled = tenants.page >= pages;
}

async function loadPlatform() {
  try {
    const state = await call("GET", "/system/state");
    $("#platform-state").textContent =
      `Status ${state.status}, version ${state.version}, ${state.edgesAlive ?? "?"} edge node(s) alive.`;
    const edges = state.details?.edges || [];
    $("#edges").replaceChildren(
      ...edges.map((edge) => el("li", {}, el("strong", {}, edge.nodeId), ` HTTP ${edge.httpAddr}, gRPC ${edge.grpcAddr}`)),
    );
  } catch (error) {
    setStatus(`Loading the platform state failed: ${error.message}`, true);
  }
}

async function createTenant(event) {
  event.preventDefault();
  const values = formData(event.target);
  const body = { account: values.account, password: values.password };
  if (values.phoneNum) body.phoneNum = values.phoneNum;
  try {
    const tenant = await call("POST", "/sysClient/createSysClient", { body });
    showResult("#create-result", `Created tenant ${tenant.account}.`);
    event.target.reset();
    await loadTenants();
  } catch (error) {
    showResult("#create-result", `Not created: ${error.message}`, true);
  }
}

// Wiring

function on(selector, type, handler) {
  $(selector).addEventListener(type, handler);
}

on("#tenant-form", "submit", (event) => {
  event.preventDefault();
  const { account, password } = formData(event.target);
  event.target.elements.password.value = "";
  signIn("tenant", basicAuth(account, password), account);
});
on("#operator-form", "submit", (event) => {
  event.preventDefault();
  const { token } = formData(event.target);
  event.target.elements.token.value = "";
  signIn("operator", bearerAuth(token), null);
});
on("#sign-out", "click", signOut);
on("#users-prev", "click", () => {
  users.page = Math.max(1, users.page - 1);
  refreshUsers();
});
on("#users-next", "click", () => {
  users.page += 1;
  refreshUsers();
});
on("#users-size", "change", (event) => {
  users.size = Number(event.target.value);
  users.page = 1;
  refreshUsers();
});
on("#send-form", "submit", sendMessage);
on("#send-form input[name=all]", "change", (event) => {
  $("#send-form input[name=to]").disabled = event.target.checked;
});
on("#history-form", "submit", (event) => {
  event.preventDefault();
  const { userId, peerId } = formData(event.target);
  history = { userId, peerId, broadcasts: false, firstSeq: 0 };
  loadHistory();
});
on("#broadcasts", "click", () => {
  history = { broadcasts: true, firstSeq: 0 };
  loadHistory();
});
on("#history-older", "click", () => loadHistory(true));
on("#ttl-form", "submit", updateTtl);
on("#tenants-prev", "click", () => {
  tenants.page = Math.max(1, tenants.page - 1);
  loadTenants();
});
on("#tenants-next", "click", () => {
  tenants.page += 1;
  loadTenants();
});
on("#create-form", "submit", createTenant);
document.body.dataset.ready = "1";
