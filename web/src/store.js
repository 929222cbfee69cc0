// A tiny global store: the signed-in user, toasts. Components subscribe with useStore().
import { useEffect, useState } from "preact/hooks";

const state = { me: null, features: {}, toasts: [], asking: null };
const subs = new Set();

export function getState() { return state; }
export function setState(patch) {
  Object.assign(state, patch);
  subs.forEach((fn) => fn());
}

export function useStore() {
  const [, force] = useState(0);
  useEffect(() => {
    const fn = () => force((n) => n + 1);
    subs.add(fn);
    return () => subs.delete(fn);
  }, []);
  return state;
}

let toastId = 0;
/** A short message at the bottom; kind "error" stays until closed. */
export function toast(message, kind = "info") {
  const id = ++toastId;
  setState({ toasts: [...state.toasts, { id, message, kind }] });
  if (kind !== "error") setTimeout(() => dismiss(id), 4000);
}
export function dismiss(id) {
  setState({ toasts: state.toasts.filter((x) => x.id !== id) });
}

export function errorToast(e) { toast(e && e.message ? e.message : String(e), "error"); }
