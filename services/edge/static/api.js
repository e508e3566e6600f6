// REST calls and DOM helpers shared by the console and the demo page.
//
// Credentials live in the module's memory only: nothing is written to
// storage, cookies or the URL.

export class ApiError extends Error {
  constructor(code, msg, status) {
    super(`${msg} (code ${code}, HTTP ${status})`);
    this.name = "ApiError";
    this.code = code;
    this.msg = msg;
    this.status = status;
  }
}

function base64Utf8(text) {
  const bytes = new TextEncoder().encode(text);
  return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
}

/** Build the Authorization header of a tenant (HTTP Basic). */
export function basicAuth(account, password) {
  return "Basic " + base64Utf8(`${account}:${password}`);
}

/** Build the Authorization header of the operator (bearer token). */
export function bearerAuth(token) {
  return "Bearer " + token;
}

/**
 * Call a REST route of this edge node and resolve with the reply's `data`.
 * Rejects with ApiError for an error reply. `credentials: "omit"` keeps the
 * browser from showing its own login dialog on a 401.
 */
export async function api(authorization, method, path, { query, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  if (authorization) headers.Authorization = authorization;
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let reply;
  try {
    reply = await response.json();
  } catch {
    throw new ApiError(1004, `non-JSON reply to ${method} ${path}`, response.status);
  }
  if (!response.ok || reply.code !== 200) {
    throw new ApiError(reply.code ?? 1004, reply.msg || "request failed", response.status);
  }
  return reply.data;
}

/** Create an element with attributes and children; strings become text nodes, never HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Format milliseconds since the Unix epoch as local date and time; 0 as a dash. */
export function formatTime(ms) {
  return ms ? new Date(ms).toLocaleString() : "-";
}

export function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}
