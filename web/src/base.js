// Where the pages live. The server sends a relative <base href> for the page's depth
// below ui/, so document.baseURI is the ui/ folder whatever the proxy prefix. It is frozen
// to an absolute URL here, before any history.pushState changes the document URL.
const baseEl = document.querySelector("base");
export const UI = new URL(".", document.baseURI);
if (baseEl) baseEl.setAttribute("href", UI.href);
/** The service root (the folder holding ui/ and api/): "/" or a proxy's "/atelier/". */
export const ROOT = new URL("../", UI);

/** Absolute URL of a service-relative path; API answers may hold "/api/..." forms. */
export function serviceUrl(path, query) {
  const u = new URL(String(path).replace(/^\/+/, ""), ROOT);
  if (query) {
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => u.searchParams.append(k, x));
      else u.searchParams.set(k, String(v));
    }
  }
  return u.href;
}

/** Encode a NAS path for a page URL, keeping its slashes. */
export function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** The page route: the part of the URL after ui/, e.g. "files/users/ann". */
export function currentRoute() {
  const p = location.pathname;
  const rest = p.startsWith(UI.pathname) ? p.slice(UI.pathname.length) : "";
  return rest.split("/").map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  }).join("/");
}

const listeners = new Set();
export function onRoute(fn) { listeners.add(fn); return () => listeners.delete(fn); }

/** Go to a page ("files/users/ann", "login?next=..."); replace keeps history short. */
export function navigate(route, { replace = false } = {}) {
  const [path, query] = route.split("?");
  const url = new URL(encodePath(path) + (query ? "?" + query : ""), UI);
  if (url.href !== location.href) {
    history[replace ? "replaceState" : "pushState"](null, "", url.href);
  }
  listeners.forEach((fn) => fn());
}

window.addEventListener("popstate", () => listeners.forEach((fn) => fn()));

export const inFrame = (() => {
  try { return window.parent !== window; } catch { return true; }
})();
