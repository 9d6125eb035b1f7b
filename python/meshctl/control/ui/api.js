// The control plane's API as the dashboard calls it: the token the user logged in with (kept in
// sessionStorage, so it ends with the tab), sent as a bearer token on every call.

const TOKEN = "meshctl.token";
const FLASH = "meshctl.flash";

/** A 401: the token is gone or was never valid; the app returns to the login. */
export class Unauthorized extends Error {}

/** Any other answer but 2xx, with the API's detail. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function logout(message) {
  sessionStorage.removeItem(TOKEN);
  if (message) sessionStorage.setItem(FLASH, message);
}

/** The message left for the login page (once). */
export function flash() {
  const message = sessionStorage.getItem(FLASH);
  sessionStorage.removeItem(FLASH);
  return message;
}

function detailOf(body) {
  const d = body && body.detail;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  return typeof d === "string" ? d : JSON.stringify(body);
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { detail: response.statusText };
  }
  return new ApiError(response.status, detailOf(body));
}

export function url(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** fetch with the session's token; a 401 logs out and throws Unauthorized. */
export async function call(path, { params, signal, headers, withToken } = {}) {
  const bearer = withToken ?? token();
  const response = await fetch(url(path, params), {
    headers: { Accept: "application/json", ...headers, Authorization: `Bearer ${bearer}` },
    signal,
    cache: "no-store",
  });
  if (response.status === 401) {
    if (!withToken) logout("The control plane refused this session's token (401). Log in again.");
    throw new Unauthorized("token refused");
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function get(path, params, signal) {
  return (await call(path, { params, signal })).json();
}

/** Checks a token before keeping it: the mesh's status needs a token that may read the mesh. */
export async function login(candidate) {
  await call("/api/v1/mesh", { withToken: candidate });
  sessionStorage.setItem(TOKEN, candidate);
}

/** NDJSON lines from a streaming GET, one parsed object at a time, until the stream ends. */
export async function* lines(path, params, signal) {
  const response = await call(path, { params, signal, headers: { Accept: "application/x-ndjson" } });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let held = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    held += decoder.decode(value, { stream: true });
    const parts = held.split("\n");
    held = parts.pop();
    for (const line of parts) if (line.trim()) yield JSON.parse(line);
  }
  if (held.trim()) yield JSON.parse(held);
}
