// fetch() against the service: cookie session, CSRF header on writes, JSON errors.
import { serviceUrl, navigate, currentRoute } from "./base.js";
import { setState } from "./store.js";

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
let csrf = null;

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

export function setCsrf(token) { csrf = token; }
/** The session's CSRF token: from the login answer, else the readable cookie. */
export function csrfToken() { return csrf || cookie("atelier_csrf") || ""; }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {
  const here = currentRoute();
  if (!here.startsWith("login") && !here.startsWith("share")) {
    setState({ me: null }); // the session is gone: the login page must not bounce back
    navigate("login?next=" + encodeURIComponent(here + location.search), { replace: true });
  }
};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function errorOf(r) {
  let code = "", message = "", ours = false;
  try {
    const body = await r.json();
    ours = !!body.error;
    code = body.error || "";
    message = body.message || (typeof body.detail === "string" ? body.detail : "");
  } catch { /* not JSON */ }
  const e = new ApiError(r.status, code || "http_" + r.status, message || r.statusText);
  // A 404 without our {error} body: the route itself is missing (an API not installed).
  e.noRoute = r.status === 404 && !ours;
  return e;
}

/**
 * Call the API. `path` is service-relative ("api/fs/list"); `json` is sent as the body;
 * `auth: false` keeps a 401 from sending the browser to the login page.
 */
export async function api(path, { method = "GET", query, json, body, headers = {},
  raw = false, auth = true, signal } = {}) {
  const h = { Accept: "application/json", ...headers };
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  if (!SAFE.has(method)) h["X-CSRF-Token"] = csrfToken();
  const r = await fetch(serviceUrl(path, query), {
    method, headers: h, body, credentials: "same-origin", signal, cache: "no-store",
  });
  if (r.status === 401 && auth) {
    onUnauthorized();
    throw await errorOf(r);
  }
  if (!r.ok) throw await errorOf(r);
  if (raw) return r;
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

/** Like api(), but a 404 answers null (an optional API that is not installed). */
export async function optionalApi(path, opts) {
  try {
    return await api(path, opts);
  } catch (e) {
    if (e.noRoute) return null;
    throw e;
  }
}
