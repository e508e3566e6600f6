// prim browser client: an end user's session on the WebSocket /acc.
//
// A dependency-free ES module, served by every edge node at /static/prim.js.
// It behaves like the Python prim.client.UserClient:
//
// - login with a token, then a `heartbeat` frame on a timer (30 s by default);
// - `send()` with a `clientMsgId` (random when not given), sent again with the
//   same id after a reconnect, so a resend never stores a message twice;
// - after every login, `sync` from the last contiguous seq, paging until
//   `hasMore` is false;
// - duplicates dropped by `msgId`, and a `sync` first when a pushed message
//   skips a seq, so that messages come out in seq order;
// - with `lastBroadcastSeq` set, `syncBroadcast` after every login and when
//   a pushed broadcast skips a `broadcastSeq`, so missed broadcasts arrive;
// - a `reconnect` push or close code 1012 (an edge node shutting down):
//   connect again at once, to the next URL of the list;
// - a `kick` push (`replaced`, `revoked`, `expired`): stop and report it,
//   unless the reason is in `reconnectOnKick`;
// - a login rejected with 1003 or 1013: stop and report the error;
// - any other close: connect again after an exponential backoff with full
//   jitter, trying the URLs in turn.
//
// See docs/js-client.md for usage.

const CLOSE_RESTART = 1012;
const CLOSE_KICK = 4001;
const LOGIN_REJECTED = [1003, 1013];
const KICK_REASONS = ["replaced", "revoked", "expired"];
const SEEN_IDS_MAX = 10000;

/** An error reply: the contract's `code` and message. */
export class ApiError extends Error {
  constructor(code, msg, data = null) {
    super(`${code}: ${msg}`);
    this.name = "ApiError";
    this.code = code;
    this.msg = msg;
    this.data = data;
  }
}

/** The edge closed the connection with a `kick` push, for the given `reason`. */
export class Kicked extends Error {
  constructor(reason) {
    super(`kicked: ${reason}`);
    this.name = "Kicked";
    this.reason = reason;
  }
}

/** The client was closed, so the call cannot complete. */
export class ClientClosed extends Error {
  constructor(message = "client closed") {
    super(message);
    this.name = "ClientClosed";
  }
}

/** The WebSocket closed before a reply arrived. */
export class ConnectionLost extends Error {
  constructor(code) {
    super(`connection closed (${code})`);
    this.name = "ConnectionLost";
    this.code = code;
  }
}

export class TimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = "TimeoutError";
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** One WebSocket: requests get their replies by frame seq, pushes are queued. */
class Connection {
  constructor(ws) {
    this.ws = ws;
    this.waiting = new Map();
    this.pushes = [];
    this.pushWaiter = null;
    this.closeCode = null;
    this.closed = false;
    this.nextFrameSeq = 1;
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onclose = (event) => this._onClose(event.code);
  }

  static open(url, timeoutMs) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (error) {
        reject(error);
        return;
      }
      const timer = setTimeout(() => {
        ws.close();
        reject(new TimeoutError(`no connection to ${url} within ${timeoutMs} ms`));
      }, timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(new Connection(ws));
      };
      ws.onclose = (event) => {
        clearTimeout(timer);
        reject(new ConnectionLost(event.code));
      };
    });
  }

  _onFrame(raw) {
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      console.warn("prim: invalid frame from the server: not JSON");
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    const pending = frame.seq ? this.waiting.get(frame.seq) : undefined;
    if (pending) {
      this.waiting.delete(frame.seq);
      pending.resolve(frame);
    } else {
      this.pushes.push(frame);
      this._wake();
    }
  }

  _onClose(code) {
    this.closed = true;
    this.closeCode = code;
    for (const pending of this.waiting.values()) pending.reject(new ConnectionLost(code));
    this.waiting.clear();
    this._wake();
  }

  _wake() {
    const waiter = this.pushWaiter;
    this.pushWaiter = null;
    waiter?.();
  }

  /** Send a request and resolve with its reply's data; reject with ApiError on an error code. */
  request(cmd, data = {}, timeoutMs = 10000) {
    if (this.closed) return Promise.reject(new ConnectionLost(this.closeCode));
    const frameSeq = String(this.nextFrameSeq++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(frameSeq);
        reject(new TimeoutError(`no reply to ${cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(frameSeq, {
        resolve: (frame) => {
          clearTimeout(timer);
          const response = frame.response || {};
          if (response.code !== 200) reject(new ApiError(response.code, response.codeMsg, response.data));
          else resolve(response.data);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.ws.send(JSON.stringify({ seq: frameSeq, cmd, data }));
    });
  }

  /** Resolve with the next push, or null once the connection closed and none is left. */
  async nextPush() {
    while (this.pushes.length === 0 && !this.closed) {
      await new Promise((resolve) => (this.pushWaiter = resolve));
    }
    return this.pushes.length ? this.pushes.shift() : null;
  }

  close(code = 1000) {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(code);
    }
  }
}

/**
 * An end user's client. Events (CustomEvent, data in `detail`):
 * `message` (a message), `state` ("connecting", "connected", "disconnected",
 * "closed"), `kick` ({reason}), and `stopped` ({error}) when the client stops.
 * Messages can also be read with `for await (const m of client)` or `receive()`;
 * each is delivered both ways unless the option `queue` is false.
 */
export class PrimClient extends EventTarget {
  constructor(urls, token, options = {}) {
    super();
    this.urls = Array.isArray(urls) ? [...urls] : [urls];
    if (this.urls.length === 0) throw new Error("urls is empty: give at least one ws:// URL of /acc");
    this.token = token;
    this.heartbeatSeconds = options.heartbeatSeconds ?? 30;
    const onKick = options.reconnectOnKick ?? false;
    this.reconnectOnKick = new Set(onKick === true ? KICK_REASONS : onKick || []);
    this.backoffInitialSeconds = options.backoffInitialSeconds ?? 0.5;
    this.backoffMaxSeconds = options.backoffMaxSeconds ?? 30;
    this.requestTimeoutSeconds = options.requestTimeoutSeconds ?? 10;
    this.sendTimeoutSeconds = options.sendTimeoutSeconds ?? 60;
    this.syncLimit = options.syncLimit ?? 100;
    this.loginFields = { ...(options.loginFields || {}) };
    // false when only the `message` event is used, so that messages are not kept for receive().
    this.queue = options.queue ?? true;

    this.state = "idle";
    this.url = null;
    this.user = null;
    this.kickReason = null;
    this.error = null;
    this.reconnects = 0;

    // Highest seq up to which every message of the timeline was received,
    // and the seqs received beyond it.
    this._lastSeq = options.lastSeq ?? 0;
    this._seqsAhead = new Set();
    // Highest broadcastSeq received; null when missed broadcasts are not fetched.
    this._lastBroadcastSeq = options.lastBroadcastSeq ?? null;
    this._seenIds = new Set();
    this._ownClientIds = new Set();
    this._inbox = [];
    this._inboxWaiters = [];
    this._conn = null;
    this._connectedWaiters = [];
    this._stopped = false;
    this._closing = false;
    this._abort = new AbortController();
    this._running = null;
  }

  get lastSeq() {
    return this._lastSeq;
  }

  get lastBroadcastSeq() {
    return this._lastBroadcastSeq;
  }

  get connected() {
    return this.state === "connected" && this._conn !== null && !this._conn.closed;
  }

  /** Start the client; resolve at the first login, reject with a rejected login's ApiError. */
  connect(timeoutSeconds = 30) {
    if (this._running) return Promise.reject(new Error("connect() was already called on this client"));
    const first = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close();
        reject(new TimeoutError(`no login on any of ${this.urls.join(", ")} within ${timeoutSeconds} s`));
      }, timeoutSeconds * 1000);
      this._connectedWaiters.push({
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    });
    this._running = this._run();
    return first;
  }

  /** Log out with `exit` and stop; iteration then ends. */
  async close() {
    if (this._closing) return;
    this._closing = true;
    this._abort.abort();
    const conn = this._conn;
    if (conn && !conn.closed) {
      try {
        await conn.request("exit", {}, 2000);
      } catch {
        // Closing anyway.
      }
      conn.close();
    }
    this._stop(null);
  }

  _stop(error) {
    if (this._stopped) return;
    this._stopped = true;
    this.error = error;
    this._setState("closed");
    for (const waiter of this._connectedWaiters.splice(0)) waiter.reject(error || new ClientClosed());
    for (const waiter of this._inboxWaiters.splice(0)) waiter();
    this.dispatchEvent(new CustomEvent("stopped", { detail: { error } }));
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  // Receiving

  /** Resolve with the next message; reject with the stopping error, or ClientClosed. */
  async receive(timeoutSeconds = null) {
    const deadline = timeoutSeconds === null ? null : Date.now() + timeoutSeconds * 1000;
    while (this._inbox.length === 0) {
      if (this._stopped) throw this.error || new ClientClosed();
      const wait = new Promise((resolve) => this._inboxWaiters.push(resolve));
      if (deadline === null) {
        await wait;
      } else {
        const left = deadline - Date.now();
        if (left <= 0) throw new TimeoutError("no message");
        await Promise.race([wait, sleep(left)]);
      }
    }
    return this._inbox.shift();
  }

  async *[Symbol.asyncIterator]() {
    while (true) {
      try {
        yield await this.receive();
      } catch (error) {
        if (error instanceof ClientClosed) return;
        throw error;
      }
    }
  }

  // Sending

  /** Send a message and resolve with {msgId, seq, time} once it is stored. */
  async send(to, message, options = {}) {
    const clientMsgId = options.clientMsgId || randomId();
    const data = { to, message, clientMsgId };
    for (const key of ["msgType", "msgContType", "persist"]) {
      if (options[key] !== undefined && options[key] !== null) data[key] = options[key];
    }
    const deadline = Date.now() + this.sendTimeoutSeconds * 1000;
    this._ownClientIds.add(clientMsgId);
    try {
      while (true) {
        const conn = await this._waitConnected(deadline);
        const left = Math.max(deadline - Date.now(), 10);
        try {
          const reply = await conn.request("msg", data, Math.min(left, this.requestTimeoutSeconds * 1000));
          this._markSeen(reply.msgId);
          this._noteSeq(reply.seq);
          return reply;
        } catch (error) {
          if (!(error instanceof ConnectionLost || error instanceof TimeoutError)) throw error;
          if (Date.now() >= deadline) {
            throw new TimeoutError(`message to ${to} not sent within ${this.sendTimeoutSeconds} s`);
          }
          // Sent again with the same clientMsgId once connected.
        }
      }
    } finally {
      this._ownClientIds.delete(clientMsgId);
    }
  }

  /** Send one request on the current connection and resolve with its reply's data. */
  request(cmd, data = {}) {
    if (!this.connected) return Promise.reject(new ConnectionLost(null));
    return this._conn.request(cmd, data, this.requestTimeoutSeconds * 1000);
  }

  async _waitConnected(deadline) {
    while (true) {
      if (this._stopped) throw this.error || new ClientClosed();
      if (this.connected) return this._conn;
      const left = deadline - Date.now();
      if (left <= 0) throw new TimeoutError("not connected");
      await Promise.race([
        new Promise((resolve) => this._connectedWaiters.push({ resolve, reject: resolve })),
        sleep(left),
      ]);
    }
  }

  // The connection loop

  async _run() {
    let attempt = 0;
    let index = 0;
    try {
      while (!this._closing) {
        const url = this.urls[index % this.urls.length];
        this._setState("connecting");
        let conn = null;
        try {
          conn = await this._open(url);
        } catch (error) {
          if (error instanceof ApiError && LOGIN_REJECTED.includes(error.code)) {
            this._stop(error);
            return;
          }
          console.info(`prim: connection to ${url} failed: ${error.message}`);
        }
        if (conn !== null && this._closing) {
          conn.close();
          return;
        }
        if (conn !== null) {
          attempt = 0;
          const outcome = await this._serve(conn, url);
          if (outcome === "stop") return;
          this.reconnects += 1;
          if (outcome === "now") {
            index += 1;
            continue;
          }
        }
        const delay = this._backoff(attempt);
        attempt += 1;
        index += 1;
        await sleep(delay * 1000, this._abort.signal);
      }
    } catch (error) {
      console.error("prim: user client failed", error);
      this._stop(error);
    }
  }

  /** Pick a delay with full jitter: uniform between 0 and the exponential ceiling, in seconds. */
  _backoff(attempt) {
    const ceiling = Math.min(this.backoffMaxSeconds, this.backoffInitialSeconds * 2 ** Math.min(attempt, 30));
    return Math.random() * ceiling;
  }

  async _open(url) {
    const timeoutMs = this.requestTimeoutSeconds * 1000;
    const conn = await Connection.open(url, timeoutMs);
    try {
      this.user = await conn.request("login", { token: this.token, ...this.loginFields }, timeoutMs);
    } catch (error) {
      conn.close();
      throw error;
    }
    return conn;
  }

  async _serve(conn, url) {
    this._conn = conn;
    this.url = url;
    this.kickReason = null;
    let reconnectRequested = false;
    this._setState("connected");
    for (const waiter of this._connectedWaiters.splice(0)) waiter.resolve();
    const heartbeat = setInterval(() => this._heartbeat(conn), this.heartbeatSeconds * 1000);
    try {
      await this._sync(conn);
      await this._syncBroadcasts(conn);
      while (true) {
        const push = await conn.nextPush();
        if (push === null) break;
        const data = push.response?.data;
        if (push.cmd === "msg" && data && typeof data === "object") {
          await this._onPushedMessage(conn, data);
        } else if (push.cmd === "kick") {
          this.kickReason = data?.reason || "unknown";
        } else if (push.cmd === "reconnect") {
          // The edge node is shutting down: leave now instead of waiting for its close.
          reconnectRequested = true;
          conn.close();
        }
      }
    } catch (error) {
      if (!(error instanceof ConnectionLost)) console.warn(`prim: sync failed, reconnecting: ${error.message}`);
    } finally {
      clearInterval(heartbeat);
      this._conn = null;
      conn.close();
    }

    if (this._closing) return "stop";
    this._setState("disconnected");
    const code = conn.closeCode;
    if (this.kickReason !== null || code === CLOSE_KICK) {
      const reason = this.kickReason || "unknown";
      this.dispatchEvent(new CustomEvent("kick", { detail: { reason } }));
      if (this.reconnectOnKick.has(reason)) return "later";
      this._stop(new Kicked(reason));
      return "stop";
    }
    if (reconnectRequested || code === CLOSE_RESTART) return "now";
    return "later";
  }

  async _heartbeat(conn) {
    try {
      await conn.request("heartbeat", {}, this.requestTimeoutSeconds * 1000);
    } catch (error) {
      if (error instanceof TimeoutError) {
        console.warn("prim: heartbeat timed out; closing the connection");
        conn.close();
      }
    }
  }

  // Messages

  async _sync(conn) {
    await this._fetchPages(conn, "sync", this._lastSeq, this.syncLimit, (message) => message.seq);
  }

  async _syncBroadcasts(conn) {
    if (this._lastBroadcastSeq === null) return;
    const limit = Math.min(this.syncLimit, 200);
    await this._fetchPages(conn, "syncBroadcast", this._lastBroadcastSeq, limit, (message) => message.broadcastSeq || 0);
  }

  // Deliver the pages of `cmd` from `after` on, moving on from each page's last position.
  async _fetchPages(conn, cmd, after, limit, position) {
    while (true) {
      const page = await conn.request(cmd, { afterSeq: after, limit }, this.requestTimeoutSeconds * 1000);
      for (const message of page.messages) this._deliver(message);
      if (!page.hasMore || page.messages.length === 0) return;
      after = position(page.messages[page.messages.length - 1]);
    }
  }

  async _onPushedMessage(conn, message) {
    const broadcastSeq = message.broadcastSeq || 0;
    if (this._lastBroadcastSeq !== null && broadcastSeq > this._lastBroadcastSeq + 1) {
      // Broadcasts before this one were missed, so fetch them first.
      await this._syncBroadcasts(conn);
    }
    if (message.seq > this._lastSeq + 1 && !this._seqsAhead.has(message.seq)) {
      // A gap: messages before this one were missed, so fetch them first.
      await this._sync(conn);
    }
    this._deliver(message);
  }

  _deliver(message) {
    const broadcastSeq = message.broadcastSeq || 0;
    if (this._lastBroadcastSeq !== null && broadcastSeq > this._lastBroadcastSeq) {
      this._lastBroadcastSeq = broadcastSeq;
    }
    if (this._seenIds.has(message.msgId)) return;
    if (message.seq && (message.seq <= this._lastSeq || this._seqsAhead.has(message.seq))) return;
    this._markSeen(message.msgId);
    this._noteSeq(message.seq);
    const own = message.clientMsgId && this._ownClientIds.has(message.clientMsgId);
    if (own && message.from?.userId === this.user?.userId) return; // send() returns it
    if (this.queue) {
      this._inbox.push(message);
      for (const waiter of this._inboxWaiters.splice(0)) waiter();
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  _markSeen(msgId) {
    this._seenIds.add(msgId);
    if (this._seenIds.size > SEEN_IDS_MAX) {
      this._seenIds.delete(this._seenIds.values().next().value);
    }
  }

  _noteSeq(seq) {
    if (!seq || seq <= this._lastSeq) return;
    this._seqsAhead.add(seq);
    while (this._seqsAhead.has(this._lastSeq + 1)) {
      this._lastSeq += 1;
      this._seqsAhead.delete(this._lastSeq);
    }
  }
}
