// The image viewer: previous/next, zoom, and the generation parameters beside the image.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api.js";
import { inFrame, serviceUrl, encodePath } from "./base.js";
import { t } from "./i18n.js";
import { bytes, date } from "./format.js";
import { toast } from "./store.js";
import { Icon, Modal, Spinner, copyText } from "./components.jsx";

const ZOOMS = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4];

function paramRows(p) {
  if (!p) return [];
  const rows = [
    ["viewer.source", p.source && p.source !== "none" ? t("source." + p.source) : null],
    ["viewer.steps", p.steps], ["viewer.sampler", [p.sampler, p.scheduler].filter(Boolean).join(" · ")],
    ["viewer.cfg", p.cfg_scale], ["viewer.seed", p.seed],
    ["viewer.size", p.width && p.height ? `${p.width}×${p.height}` : null],
    ["viewer.model", [p.model, p.model_hash ? `(${p.model_hash})` : ""].filter(Boolean).join(" ")],
    ["viewer.vae", p.vae], ["viewer.clip_skip", p.clip_skip],
    ["viewer.denoising", p.denoising_strength], ["viewer.version", p.version],
  ];
  const out = rows.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [t(k), String(v)]);
  for (const [k, v] of Object.entries({ ...(p.hires || {}), ...(p.adetailer || {}), ...(p.extra || {}) })) {
    out.push([k, String(v)]);
  }
  return out;
}

export function Viewer({ items, index, onIndex, onClose }) {
  const item = items[index];
  const [info, setInfo] = useState(null);
  const [error, setError] = useState("");
  const [zoom, setZoom] = useState("fit");
  const [loaded, setLoaded] = useState(false);
  const stage = useRef(null);

  useEffect(() => {
    let alive = true;
    setInfo(null);
    setError("");
    setZoom("fit");
    setLoaded(false);
    api("api/fs/info", { query: { path: item.path } })
      .then((x) => alive && setInfo(x))
      .catch((e) => alive && setError(e.message));
    return () => { alive = false; };
  }, [item.path]);

  const go = (d) => {
    const j = index + d;
    if (j >= 0 && j < items.length) onIndex(j);
  };
  const zoomBy = (d) => {
    const cur = zoom === "fit" ? 1 : zoom;
    const i = ZOOMS.findIndex((z) => z >= cur - 1e-9);
    const j = Math.max(0, Math.min(ZOOMS.length - 1, (i < 0 ? ZOOMS.length - 1 : i) + d));
    setZoom(ZOOMS[j]);
  };

  useEffect(() => {
    const key = (e) => {
      if (e.target.closest && e.target.closest("input, textarea, select")) return;
      if (e.key === "ArrowRight") { e.preventDefault(); go(1); }
      else if (e.key === "ArrowLeft") { e.preventDefault(); go(-1); }
      else if (e.key === "+" || e.key === "=") zoomBy(1);
      else if (e.key === "-") zoomBy(-1);
      else if (e.key === "0") setZoom("fit");
    };
    window.addEventListener("keydown", key);
    return () => window.removeEventListener("keydown", key);
  });

  const meta = info && info.meta;
  const p = meta && meta.params;
  // A1111 text as it was written; for the other generators, their fields written out
  // as A1111 infotext (what txt2img can paste)
  const raw = p ? p.infotext || p.raw || "" : "";
  const copy = async (text, what) => {
    const ok = await copyText(text);
    toast(ok ? t("viewer.copied", { what }) : t("viewer.copy_failed"), ok ? "info" : "error");
  };
  const send = () => {
    window.parent.postMessage({ source: "atelier", type: "send-to-txt2img", parameters: raw }, "*");
    toast(t("viewer.sent"));
  };
  const src = serviceUrl("api/fs/download", { path: item.path, inline: "true" });
  const folder = item.path.includes("/") ? item.path.slice(0, item.path.lastIndexOf("/")) : "";
  const scale = zoom === "fit" ? null : zoom;

  return (
    <Modal title={item.name} onClose={onClose} wide testid="viewer">
      <div class="viewer">
        <div class={"stage" + (scale ? " zoomed" : "")} ref={stage}>
          {!loaded ? <div class="stage-wait"><Spinner /></div> : null}
          <img src={src} alt={item.name} key={item.path} data-testid="viewer-image"
            class={scale ? "" : "fit"} onLoad={() => setLoaded(true)}
            style={scale && info && meta && meta.width ? { width: meta.width * scale + "px" } : undefined}
            onClick={() => setZoom(zoom === "fit" ? 1 : "fit")} />
          <div class="stage-tools">
            <button type="button" class="icon-btn" onClick={() => go(-1)} disabled={index === 0}
              aria-label={t("viewer.prev")} title={t("viewer.prev")} data-testid="viewer-prev"><Icon name="left" /></button>
            <span class="stage-count">{index + 1} / {items.length}</span>
            <button type="button" class="icon-btn" onClick={() => go(1)} disabled={index >= items.length - 1}
              aria-label={t("viewer.next")} title={t("viewer.next")} data-testid="viewer-next"><Icon name="right" /></button>
            <span class="sep" />
            <button type="button" class="icon-btn" onClick={() => zoomBy(-1)} aria-label={t("viewer.zoom_out")} title={t("viewer.zoom_out")}>−</button>
            <button type="button" class="btn small" onClick={() => setZoom(zoom === "fit" ? 1 : "fit")} data-testid="viewer-zoom">
              {zoom === "fit" ? t("viewer.fit") : Math.round(zoom * 100) + "%"}
            </button>
            <button type="button" class="icon-btn" onClick={() => zoomBy(1)} aria-label={t("viewer.zoom_in")} title={t("viewer.zoom_in")}>+</button>
          </div>
        </div>
        <aside class="params" data-testid="viewer-params">
          {error ? <p class="error">{error}</p> : null}
          {!info && !error ? <Spinner /> : null}
          {info ? (
            <>
              <p class="muted small">
                {meta && meta.width ? `${meta.width}×${meta.height} · ` : ""}{bytes(info.size)} · {date(info.mtime)}
              </p>
              <div class="param-actions">
                <button type="button" class="btn small" disabled={!p || !p.prompt} onClick={() => copy(p.prompt, t("viewer.prompt"))}
                  data-testid="copy-prompt"><Icon name="copy" size={14} />{t("viewer.copy_prompt")}</button>
                <button type="button" class="btn small" disabled={!raw} onClick={() => copy(raw, t("viewer.all"))}
                  data-testid="copy-all"><Icon name="copy" size={14} />{t("viewer.copy_all")}</button>
                {inFrame ? (
                  <button type="button" class="btn small primary" disabled={!raw} onClick={send} data-testid="send-txt2img">
                    <Icon name="send" size={14} />{t("viewer.send")}</button>
                ) : null}
                <a class="btn small" href={serviceUrl("api/fs/download", { path: item.path })} download>
                  <Icon name="download" size={14} />{t("files.download")}</a>
                <a class="btn small" href={"files/" + encodePath(folder)} data-nav onClick={onClose}>
                  <Icon name="folder" size={14} />{t("viewer.open_folder")}</a>
              </div>
              {p && p.source !== "none" ? (
                <>
                  <h3>{t("viewer.prompt")}</h3>
                  <p class="prompt" data-testid="viewer-prompt">{p.prompt || "–"}</p>
                  {p.negative_prompt ? (<><h3>{t("viewer.negative")}</h3><p class="prompt neg">{p.negative_prompt}</p></>) : null}
                  {p.loras && p.loras.length ? (
                    <>
                      <h3>LoRA</h3>
                      <ul class="chips">{p.loras.map((l) => <li key={l.name}>{l.name}{l.weight !== null && l.weight !== undefined ? ` : ${l.weight}` : ""}</li>)}</ul>
                    </>
                  ) : null}
                  {p.embeddings && p.embeddings.length ? (
                    <>
                      <h3>{t("viewer.embeddings")}</h3>
                      <ul class="chips">{p.embeddings.map((e) => <li key={e}>{e}</li>)}</ul>
                    </>
                  ) : null}
                  <dl class="kv">
                    {paramRows(p).map(([k, v]) => (<><dt key={"k" + k}>{k}</dt><dd key={"v" + k}>{v}</dd></>))}
                  </dl>
                </>
              ) : <p class="muted" data-testid="viewer-noparams">{t("viewer.no_params")}</p>}
            </>
          ) : null}
        </aside>
      </div>
    </Modal>
  );
}
