import { useLayoutEffect, useRef, useState } from "preact/hooks";
import { t } from "./i18n.js";
import { dismiss, useStore, setState, getState } from "./store.js";

/** Inline icons (no icon font, nothing fetched). */
const PATHS = {
  folder: "M3 6a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z",
  file: "M6 2h8l6 6v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2zm7 1.5V9h5.5",
  image: "M4 4h16v16H4zM4 16l5-5 4 4 3-3 4 4M15 8.5a1.5 1.5 0 1 1 0 .01",
  model: "M12 2 3 7v10l9 5 9-5V7zM3 7l9 5 9-5M12 12v10",
  upload: "M12 16V4m0 0-5 5m5-5 5 5M4 20h16",
  download: "M12 4v12m0 0-5-5m5 5 5-5M4 20h16",
  plus: "M12 5v14M5 12h14",
  trash: "M4 7h16M9 7V4h6v3m-8 0 1 13h8l1-13",
  grid: "M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z",
  list: "M4 6h16M4 12h16M4 18h16",
  share: "M18 8a3 3 0 1 0-3-3l-6 3.5a3 3 0 1 0 0 7l6 3.5a3 3 0 1 0 1-2l-6-3.5v-1l6-3.5A3 3 0 0 0 18 8z",
  edit: "M4 20h4L19 9l-4-4L4 16zM13 7l4 4",
  move: "M5 12h14m0 0-4-4m4 4-4 4M5 5v14",
  sun: "M12 8a4 4 0 1 1 0 8 4 4 0 0 1 0-8zM12 2v2m0 16v2M4.9 4.9l1.4 1.4m11.4 11.4 1.4 1.4M2 12h2m16 0h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4",
  moon: "M20 14.5A8 8 0 0 1 9.5 4a8 8 0 1 0 10.5 10.5z",
  close: "M6 6l12 12M18 6 6 18",
  left: "M15 5l-7 7 7 7",
  right: "M9 5l7 7-7 7",
  restore: "M4 12a8 8 0 1 0 2.3-5.6M4 4v4h4",
  copy: "M8 8h12v12H8zM4 16V4h12",
  search: "M10.5 4a6.5 6.5 0 1 1 0 13 6.5 6.5 0 0 1 0-13zM20 20l-4.8-4.8",
  refresh: "M20 12a8 8 0 1 1-2.3-5.6M20 4v4h-4",
  pause: "M8 5v14M16 5v14",
  play: "M7 5v14l12-7z",
  pin: "M9 3h6l-1 6 4 4H6l4-4zM12 13v8",
  logout: "M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10",
  zoomin: "M10.5 4a6.5 6.5 0 1 1 0 13 6.5 6.5 0 0 1 0-13zM20 20l-4.8-4.8M10.5 8v5M8 10.5h5",
  gpu: "M4 7h16v10H4zM7 4v3m4-3v3m4-3v3M7 17v3m4-3v3m4-3v3M8 10h8v4H8z",
  user: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21a8 8 0 0 1 16 0",
  send: "M4 12 20 4l-6 16-3-7z",
};

export function Icon({ name, size = 18, title }) {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" aria-hidden={title ? undefined : "true"}
      role={title ? "img" : undefined} fill="none" stroke="currentColor" stroke-width="1.8"
      stroke-linecap="round" stroke-linejoin="round">
      {title ? <title>{title}</title> : null}
      <path d={PATHS[name] || PATHS.file} />
    </svg>
  );
}

export function Bar({ value, label, kind = "", testid }) {
  const v = Math.max(0, Math.min(100, value || 0));
  return (
    <div class={"bar " + kind} role="progressbar" aria-valuemin="0" aria-valuemax="100"
      aria-valuenow={Math.round(v)} aria-label={label} data-testid={testid}>
      <div class="bar-fill" style={{ width: v + "%" }} />
    </div>
  );
}

export function Spinner() {
  return <span class="spinner" role="status" aria-label={t("common.loading")} />;
}

export function Empty({ icon = "folder", title, children }) {
  return (
    <div class="empty">
      <Icon name={icon} size={40} />
      <p class="empty-title">{title}</p>
      {children ? <div class="empty-body">{children}</div> : null}
    </div>
  );
}

/** A modal on the native <dialog>: focus stays inside, Escape closes. */
export function Modal({ title, onClose, children, wide = false, footer, testid }) {
  const ref = useRef(null);
  useLayoutEffect(() => { // before paint: visible means modal, focus already inside
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => { if (d && d.open) d.close(); };
  }, []);
  return (
    <dialog ref={ref} class={"modal" + (wide ? " wide" : "")} data-testid={testid}
      onCancel={(e) => { e.preventDefault(); onClose(); }}
      onClick={(e) => { if (e.target === ref.current) onClose(); }}>
      <div class="modal-inner">
        <header class="modal-head">
          <h2>{title}</h2>
          <button type="button" class="icon-btn" onClick={onClose} aria-label={t("common.close")}>
            <Icon name="close" />
          </button>
        </header>
        <div class="modal-body">{children}</div>
        {footer ? <footer class="modal-foot">{footer}</footer> : null}
      </div>
    </dialog>
  );
}

/** ask({title, label, value, ok, kind}) -> Promise<string|true|null>; one at a time. */
export function ask(opts) {
  return new Promise((resolve) => setState({ asking: { ...opts, resolve } }));
}

let askSeq = 0;

export function AskHost() {
  const { asking } = useStore();
  if (!asking) return null;
  if (!asking.seq) asking.seq = ++askSeq;
  return <AskDialog key={asking.seq} asking={asking} />;
}

function AskDialog({ asking }) {
  const [value, setValue] = useState(asking.value || "");
  const inputRef = useRef(null);
  // Runs after the Modal's own layout effect (children first): the dialog is open, so
  // focus and the selection (the name without its extension) are set before any key.
  useLayoutEffect(() => {
    const el = inputRef.current;
    if (!el) return;
    el.focus();
    const dot = (asking.value || "").lastIndexOf(".");
    if (asking.selectStem && dot > 0 && el.setSelectionRange) el.setSelectionRange(0, dot);
    else if (el.select) el.select();
  }, []);
  const done = (v) => { setState({ asking: null }); asking.resolve(v); };
  const confirmOnly = asking.label === undefined;
  return (
    <Modal title={asking.title} onClose={() => done(null)} testid="ask">
      <form class="form" onSubmit={(e) => { e.preventDefault(); done(confirmOnly ? true : value); }}>
        {asking.message ? <p>{asking.message}</p> : null}
        {confirmOnly ? null : (
          <label class="field">
            <span>{asking.label}</span>
            <input ref={inputRef} value={value} onInput={(e) => setValue(e.currentTarget.value)}
              required={!asking.optional} type={asking.type || "text"}
              step={asking.type === "number" ? "any" : undefined} min={asking.type === "number" ? "0" : undefined} />
          </label>
        )}
        <div class="actions">
          <button type="button" class="btn" onClick={() => done(null)}>{t("common.cancel")}</button>
          <button type="submit" class={"btn " + (asking.danger ? "danger" : "primary")}
            data-testid="ask-ok" ref={confirmOnly ? inputRef : undefined}>
            {asking.ok || t("common.ok")}
          </button>
        </div>
      </form>
    </Modal>
  );
}

export function Toasts() {
  const { toasts } = useStore();
  return (
    <div class="toasts" aria-live="polite">
      {toasts.map((x) => (
        <div key={x.id} class={"toast " + x.kind} role={x.kind === "error" ? "alert" : "status"}>
          <span>{x.message}</span>
          <button type="button" class="icon-btn" onClick={() => dismiss(x.id)} aria-label={t("common.close")}>
            <Icon name="close" size={14} />
          </button>
        </div>
      ))}
    </div>
  );
}

/** Copy text; the async Clipboard API needs a secure context, else a hidden textarea. */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch { /* fall back */ }
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.className = "offscreen";
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  ta.remove();
  return ok;
}

export { getState };
