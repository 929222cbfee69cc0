import { useEffect, useRef, useState } from "preact/hooks";
import { t, tn } from "../i18n.js";
import { bytes, duration, percent, rate } from "../format.js";
import { errorToast } from "../store.js";
import { Bar, Icon } from "../components.jsx";
import * as up from "../upload.js";

function useUploads() {
  const [, force] = useState(0);
  useEffect(() => up.subscribe(() => force((n) => n + 1)), []);
  return up.uploads();
}

export function UploadPanel() {
  const items = useUploads();
  const [open, setOpen] = useState(true);
  if (!items.length) return null;
  const running = items.filter((x) => x.state === "uploading" || x.state === "queued");
  const done = items.filter((x) => x.state === "done").length;
  const problems = items.filter((x) => ["error", "conflict", "paused"].includes(x.state)).length;
  const sent = items.reduce((a, x) => a + x.sent, 0);
  const size = items.reduce((a, x) => a + x.size, 0);
  return (
    <section class="uploads" aria-label={t("up.title")} data-testid="uploads">
      <header>
        <button type="button" class="link" onClick={() => setOpen(!open)} aria-expanded={open}>
          {running.length ? t("up.running", { n: running.length, p: percent(sent, size) })
            : [done ? tn("up.finished", done) : "", problems ? t("up.attention", { n: problems }) : ""].filter(Boolean).join(" · ")}
        </button>
        <span class="grow" />
        <button type="button" class="btn small" onClick={() => up.clearFinished()}>{t("up.clear")}</button>
      </header>
      {open ? (
        <ul>
          {items.map((x) => {
            const pc = percent(x.sent, x.size);
            return (
              <li key={x.id} class={"up " + x.state} data-testid="upload-item" data-name={x.name} data-state={x.state} data-progress={x.state === "done" ? 100 : pc}>
                <div class="up-line">
                  <span class="up-name" title={x.folder ? x.folder + "/" + x.name : x.name}>{x.name}</span>
                  <span class="up-pc" data-testid="upload-percent">{x.state === "done" ? "100 %" : pc + " %"}</span>
                </div>
                <Bar value={x.state === "done" ? 100 : pc} label={x.name} kind={x.state === "error" || x.state === "conflict" ? "bad" : x.state === "done" ? "good" : ""} />
                <div class="up-line small muted">
                  <span>
                    {x.state === "uploading" ? `${bytes(x.sent)} / ${bytes(x.size)} · ${rate(x.speed)} · ${t("up.eta", { t: duration(x.eta) })}` : null}
                    {x.state === "queued" ? t("up.queued") : null}
                    {x.state === "paused" ? t("up.paused", { sent: bytes(x.sent) }) : null}
                    {x.state === "done" ? bytes(x.size) : null}
                    {x.state === "error" || x.state === "conflict" ? <span class="error-text">{x.error}</span> : null}
                    {x.resumedFrom ? <span class="resumed" data-testid="resumed"> · {t("up.resumed", { sent: bytes(x.resumedFrom) })}</span> : null}
                  </span>
                  <span class="up-actions">
                    {x.state === "uploading" ? <button type="button" class="icon-btn" onClick={() => up.pause(x)} aria-label={t("up.pause")} title={t("up.pause")}><Icon name="pause" size={14} /></button> : null}
                    {x.state === "paused" || x.state === "error" ? <button type="button" class="icon-btn" onClick={() => up.resume(x)} aria-label={t("up.resume")} title={t("up.resume")}><Icon name="play" size={14} /></button> : null}
                    {x.state !== "done" ? <button type="button" class="icon-btn" onClick={() => up.cancel(x)} aria-label={t("up.cancel")} title={t("up.cancel")}><Icon name="close" size={14} /></button> : null}
                  </span>
                </div>
                {x.state === "conflict" ? (
                  <div class="up-line up-choice">
                    <span class="grow" />
                    <button type="button" class="btn small" onClick={() => up.resume(x, "overwrite")} data-testid="up-replace">{t("up.replace")}</button>
                    <button type="button" class="btn small primary" onClick={() => up.resume(x, "rename")} data-testid="up-keep-both">{t("up.keep_both")}</button>
                  </div>
                ) : null}
              </li>
            );
          })}
        </ul>
      ) : null}
    </section>
  );
}

/** Uploads the server holds unfinished in this folder: pick the file again to resume. */
export function Unfinished({ folder }) {
  const [list, setList] = useState([]);
  const running = useUploads();
  const input = useRef(null);
  const [target, setTarget] = useState(null);
  useEffect(() => {
    let alive = true;
    up.unfinished(true).then((l) => alive && setList(l));
    return () => { alive = false; };
  }, [folder]);
  const busy = new Set(running.filter((x) => x.state !== "done").map((x) => x.folder + "/" + x.name));
  const here = list.filter((u) => (u.folder === folder || u.folder.startsWith(folder ? folder + "/" : "")) && !busy.has(u.folder + "/" + u.name));
  if (!here.length) return null;
  const pick = (u) => { setTarget(u); input.current.click(); };
  const picked = (e) => {
    const files = [...e.currentTarget.files];
    e.currentTarget.value = "";
    if (!target || !files.length) return;
    up.enqueue(files.map((file) => ({ file, folder: target.folder })));
    setList(list.filter((u) => u.id !== target.id));
  };
  const drop = async (u) => {
    try { await up.discard(u.id); setList(list.filter((x) => x.id !== u.id)); } catch (e) { errorToast(e); }
  };
  return (
    <div class="notice" data-testid="unfinished">
      <p><strong>{t("up.unfinished")}</strong> {t("up.unfinished_hint")}</p>
      <ul>
        {here.map((u) => (
          <li key={u.id} data-testid="unfinished-item">
            <span class="up-name">{u.folder ? u.folder + "/" : ""}{u.name}</span>
            <span class="muted small">{bytes(u.offset)} / {bytes(u.length)} ({percent(u.offset, u.length)} %)</span>
            <button type="button" class="btn small primary" onClick={() => pick(u)} data-testid="resume-pick">{t("up.pick_again")}</button>
            <button type="button" class="btn small" onClick={() => drop(u)}>{t("up.discard")}</button>
          </li>
        ))}
      </ul>
      <input ref={input} type="file" class="hidden-input" onChange={picked} data-testid="resume-input" />
    </div>
  );
}
