// The chat demo: each panel is one user with its own PrimClient.

import { PrimClient } from "./prim.js";
import { api, basicAuth, el, formatTime, formData } from "./api.js";

const params = new URLSearchParams(location.search);
// Maximum wait between reconnect attempts, in seconds (`?backoffMax=` overrides it).
const BACKOFF_MAX_SECONDS = Number(params.get("backoffMax")) || 5;
const DEFAULT_URL = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/acc`;

function setStatus(text, isError = false) {
  const status = document.querySelector("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function tokenFor(userId) {
  const { account, password } = formData(document.querySelector("#tenant-form"));
  if (!account || !password) throw new Error("enter the tenant account and password, or a token");
  const token = await api(basicAuth(account, password), "POST", "/sysClient/getToken", {
    body: { userId, appPlatform: "web", nickname: userId },
  });
  return token.token;
}

class ChatPanel {
  constructor(root) {
    this.root = root;
    this.client = null;
    this.list = root.querySelector(".messages");
    this.state = root.querySelector(".state");
    this.connectForm = root.querySelector(".connect");
    this.composeForm = root.querySelector(".compose");
    this.connectForm.elements.urls.value = DEFAULT_URL;
    this.connectForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.connect();
    });
    root.querySelector(".disconnect").addEventListener("click", () => this.disconnect());
    this.composeForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
  }

  setState(text, isError = false) {
    this.state.textContent = text;
    this.state.classList.toggle("error", isError);
    this.root.dataset.state = this.client?.state || "idle";
  }

  setConnected(connected) {
    this.connectForm.querySelector("button[type=submit]").disabled = connected;
    this.root.querySelector(".disconnect").disabled = !connected;
    this.composeForm.querySelector("button").disabled = !connected;
  }

  async connect() {
    const values = formData(this.connectForm);
    const urls = values.urls.split(",").map((url) => url.trim()).filter(Boolean);
    this.setConnected(true);
    this.setState("connecting");
    try {
      const token = values.token || (await tokenFor(values.userId));
      this.client = new PrimClient(urls, token, { backoffMaxSeconds: BACKOFF_MAX_SECONDS, queue: false });
      this.client.addEventListener("message", (event) => this.show(event.detail, false));
      this.client.addEventListener("state", () => this.describeState());
      this.client.addEventListener("stopped", (event) => this.stopped(event.detail.error));
      await this.client.connect();
      this.root.dataset.userId = this.client.user.userId;
    } catch (error) {
      this.setConnected(false);
      this.setState(`not connected: ${error.message}`, true);
      this.client = null;
    }
  }

  describeState() {
    const client = this.client;
    if (!client) return;
    if (client.state === "connected") {
      this.setState(`connected to ${client.url} as ${client.user.userId}`);
    } else if (client.state !== "closed") {
      this.setState(client.state === "connecting" && client.reconnects ? "reconnecting" : client.state);
    }
  }

  stopped(error) {
    this.setConnected(false);
    if (error?.name === "Kicked") this.setState(`kicked: ${error.reason}`, true);
    else if (error) this.setState(`stopped: ${error.message}`, true);
    else this.setState("disconnected");
    this.root.dataset.state = "closed";
  }

  async disconnect() {
    await this.client?.close();
  }

  /** Add a message to the list, or update the one already shown with its msgId. */
  show(message, own, item = null) {
    if (this.list.querySelector(`li[data-msg-id="${CSS.escape(message.msgId)}"]`)) {
      item?.remove();
      return;
    }
    const meta = `${message.seq ? `#${message.seq} ` : ""}${formatTime(message.time)} ${own ? "me" : message.from.userId}`;
    const node = el(
      "li",
      { class: own ? "own" : "", dataset: { msgId: message.msgId, seq: message.seq } },
      el("span", { class: "meta" }, meta),
      el("span", { class: "text" }, message.message),
    );
    if (item) item.replaceWith(node);
    else this.list.append(node);
    node.scrollIntoView({ block: "nearest" });
  }

  async send() {
    const { to, message } = formData(this.composeForm);
    this.composeForm.elements.message.value = "";
    const pending = el("li", { class: "own pending" }, el("span", { class: "meta" }, "sending"), el("span", { class: "text" }, message));
    this.list.append(pending);
    try {
      const reply = await this.client.send(to, message);
      this.show({ ...reply, message, to, from: this.client.user }, true, pending);
    } catch (error) {
      pending.classList.add("error");
      pending.querySelector(".meta").textContent = `not sent: ${error.message}`;
      setStatus(`Message to ${to} not sent: ${error.message}`, true);
    }
  }
}

for (const root of document.querySelectorAll(".panel")) new ChatPanel(root);
document.body.dataset.ready = "1";
