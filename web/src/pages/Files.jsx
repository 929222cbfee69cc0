// Files: browse, select, upload (files and folders, resumable), organise, share, trash.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "../api.js";
import { encodePath, navigate, serviceUrl } from "../base.js";
import { t, tn } from "../i18n.js";
import { bytes, date } from "../format.js";
import { errorToast, toast } from "../store.js";
import { Empty, Icon, Spinner, ask } from "../components.jsx";
import { Viewer } from "../viewer.jsx";
import { UploadPanel, Unfinished } from "./Uploads.jsx";
import { ShareDialog } from "./ShareDialog.jsx";
import * as up from "../upload.js";

const PAGE = 200;
const ZIP_URL_MAX = 6000; // longer selections go by POST

function join(a, b) { return a ? (b ? a + "/" + b : a) : b; }
function parentOf(p) { const i = p.lastIndexOf("/"); return i < 0 ? "" : p.slice(0, i); }
function pref(key, dflt) { try { return localStorage.getItem(key) || dflt; } catch { return dflt; } }
function setPref(key, v) { try { localStorage.setItem(key, v); } catch { /* storage off */ } }

export function Files({ route, me }) {
  // "files" opens your home; "files/" the top of what you may see; "files/a/b" that folder.
  const rest = route.startsWith("files/") ? route.slice(6).replace(/\/+$/, "") : null;
  const path = rest === null ? (me.role === "admin" ? "" : me.home) : rest;
  const [trash, setTrash] = useState(false);
  return trash
    ? <Trash onBack={() => setTrash(false)} />
    : <Browser key={path} path={path} me={me} onTrash={() => setTrash(true)} />;
}

/** State whose latest value handlers can read at once (keys may come faster than renders). */
function useLive(initial) {
  const [value, setValue] = useState(initial);
  const ref = useRef(initial);
  const set = (v) => { ref.current = v; setValue(v); };
  return [value, set, ref];
}

function Breadcrumbs({ path }) {
  const parts = path ? path.split("/") : [];
  return (
    <nav class="crumbs" aria-label={t("files.location")}>
      <a href="files/" data-nav class={parts.length ? "" : "current"}>{t("files.root")}</a>
      {parts.map((p, i) => {
        const to = parts.slice(0, i + 1).join("/");
        const last = i === parts.length - 1;
        return (
          <span key={to}>
            <span class="crumb-sep" aria-hidden="true">/</span>
            <a href={"files/" + encodePath(to)} data-nav class={last ? "current" : ""}
              aria-current={last ? "page" : undefined}>{p}</a>
          </span>
        );
      })}
    </nav>
  );
}

function Thumb({ entry, size }) {
  const [failed, setFailed] = useState(false);
  if (entry.kind === "image" && !failed) {
    return (
      <img class="thumb" loading="lazy" decoding="async" alt="" width={size} height={size}
        src={serviceUrl("api/fs/thumb", { path: entry.path, size: 256 })} onError={() => setFailed(true)} />
    );
  }
  const icon = entry.type === "dir" ? "folder" : entry.kind === "model" ? "model" : entry.kind === "image" ? "image" : "file";
  return <span class={"thumb icon-thumb " + (entry.type === "dir" ? "dir" : "")}><Icon name={icon} size={size > 40 ? 44 : 20} /></span>;
}

function Browser({ path, me, onTrash }) {
  const [entries, setEntries] = useState([]);
  const [next, setNext] = useState(null);
  const [total, setTotal] = useState(0);
  const [writable, setWritable] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState(null);
  const [view, setView] = useState(pref("atelier.view", "list"));
  const [sort, setSort] = useState(pref("atelier.sort", "name"));
  const [order, setOrder] = useState(pref("atelier.order", "asc"));
  const [sel, setSel, selRef] = useLive(new Set());
  const [focus, setFocus, focusRef] = useLive(0);
  const [, setAnchor, anchorRef] = useLive(0);
  const [viewer, setViewer] = useState(null);
  const [sharing, setSharing] = useState(null);
  const [dragging, setDragging] = useState(false);
  const listRef = useRef(null);
  const sentinel = useRef(null);
  const fileInput = useRef(null);
  const dirInput = useRef(null);
  const loadingMore = useRef(false);

  const load = async (cursor = null) => {
    if (cursor) loadingMore.current = true; else setLoading(true);
    try {
      const r = await api("api/fs/list", { query: { path, sort, order, limit: PAGE, cursor } });
      setEntries((old) => (cursor ? [...old, ...r.entries] : r.entries));
      setNext(r.next);
      setTotal(r.total);
      setWritable(r.writable);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      loadingMore.current = false;
      setLoading(false);
    }
  };

  const reload = () => { setSel(new Set()); return load(null); };
  useEffect(() => { load(null); }, [path, sort, order]);

  // A finished upload into this folder shows up at once.
  useEffect(() => up.subscribe((ev) => {
    if (ev && ev.done && (ev.done.folder === path || parentOf(ev.done.folder) === path)) load(null);
  }), [path, sort, order]);

  useEffect(() => {
    const el = sentinel.current;
    if (!el || !next) return undefined;
    const io = new IntersectionObserver((es) => {
      if (es.some((e) => e.isIntersecting) && next && !loadingMore.current) load(next);
    }, { rootMargin: "400px" });
    io.observe(el);
    return () => io.disconnect();
  }, [next, entries.length]);

  const selected = useMemo(() => entries.filter((e) => sel.has(e.path)), [entries, sel]);
  const selectedNow = () => entries.filter((e) => selRef.current.has(e.path));
  const images = useMemo(() => entries.filter((e) => e.kind === "image"), [entries]);

  const open = (e) => {
    if (!e) return;
    if (e.type === "dir") navigate("files/" + e.path);
    else if (e.kind === "image") setViewer(images.findIndex((x) => x.path === e.path));
    else download([e]);
  };

  const selectOnly = (i) => { setSel(new Set(entries[i] ? [entries[i].path] : [])); setAnchor(i); setFocus(i); };
  const selectRange = (a, b) => {
    const [lo, hi] = a < b ? [a, b] : [b, a];
    setSel(new Set(entries.slice(lo, hi + 1).map((e) => e.path)));
    setFocus(b);
  };
  const toggle = (i) => {
    const s = new Set(selRef.current);
    const p = entries[i].path;
    if (s.has(p)) s.delete(p); else s.add(p);
    setSel(s);
    setAnchor(i);
    setFocus(i);
  };

  const click = (ev, i) => {
    listRef.current && listRef.current.focus({ preventScroll: true });
    if (ev.shiftKey) selectRange(anchorRef.current, i);
    else if (ev.ctrlKey || ev.metaKey) toggle(i);
    else selectOnly(i);
  };

  const cols = () => {
    if (view !== "grid" || !listRef.current) return 1;
    const first = listRef.current.querySelector(".item");
    if (!first) return 1;
    return Math.max(1, Math.round(listRef.current.clientWidth / (first.offsetWidth + 12)));
  };

  const keydown = (ev) => {
    if (!entries.length) return;
    const focus = focusRef.current, anchor = anchorRef.current;
    const n = entries.length;
    let to = null;
    const k = ev.key;
    if (k === "ArrowDown") to = focus + cols();
    else if (k === "ArrowUp") to = focus - cols();
    else if (k === "ArrowRight" && view === "grid") to = focus + 1;
    else if (k === "ArrowLeft" && view === "grid") to = focus - 1;
    else if (k === "Home") to = 0;
    else if (k === "End") to = n - 1;
    else if (k === "PageDown") to = focus + 10;
    else if (k === "PageUp") to = focus - 10;
    if (to !== null) {
      ev.preventDefault();
      to = Math.max(0, Math.min(n - 1, to));
      if (ev.shiftKey) selectRange(anchor, to);
      else if (ev.ctrlKey || ev.metaKey) setFocus(to);
      else selectOnly(to);
      const el = listRef.current && listRef.current.querySelectorAll(".item")[to];
      if (el) el.scrollIntoView({ block: "nearest" });
      return;
    }
    if (k === " ") { ev.preventDefault(); toggle(focus); }
    else if ((k === "a" || k === "A") && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      setSel(new Set(entries.map((e) => e.path)));
    } else if (k === "Enter") { ev.preventDefault(); open(entries[focus]); }
    else if (k === "Escape") setSel(new Set());
    else if (k === "Delete") { ev.preventDefault(); remove(); }
    else if (k === "F2") { ev.preventDefault(); rename(); }
    else if (k === "Backspace" || (k === "ArrowUp" && ev.altKey)) {
      ev.preventDefault();
      if (path) navigate("files/" + parentOf(path));
    }
  };

  const targets = () => {
    const now = selectedNow();
    const f = entries[focusRef.current];
    return now.length ? now : f ? [f] : [];
  };

  const download = (list) => {
    if (!list.length) return;
    if (list.length === 1 && list[0].type !== "dir") {
      clickLink(serviceUrl("api/fs/download", { path: list[0].path }));
      return;
    }
    const url = serviceUrl("api/fs/zip", { path: list.map((e) => e.path) });
    if (url.length < ZIP_URL_MAX) {
      clickLink(url);
      return;
    }
    api("api/fs/zip", { method: "POST", json: { paths: list.map((e) => e.path) }, raw: true })
      .then((r) => r.blob())
      .then((b) => { const u = URL.createObjectURL(b); clickLink(u, "atelier.zip"); setTimeout(() => URL.revokeObjectURL(u), 60000); })
      .catch(errorToast);
  };

  const newFolder = async () => {
    const name = await ask({ title: t("files.new_folder"), label: t("files.folder_name"), ok: t("common.create") });
    if (!name) return;
    try {
      await api("api/fs/mkdir", { method: "POST", json: { path: join(path, name.trim()) } });
      await reload();
    } catch (e) { errorToast(e); }
  };

  const rename = async () => {
    const [e] = targets();
    if (!e) return;
    const name = await ask({ title: t("files.rename"), label: t("files.new_name"), value: e.name, ok: t("files.rename"), selectStem: e.type !== "dir" });
    if (!name || name === e.name) return;
    try {
      await api("api/fs/move", { method: "POST", json: { src: e.path, dst: join(parentOf(e.path), name.trim()), conflict: "fail" } });
      await reload();
      toast(t("files.renamed", { name }));
    } catch (err) { errorToast(err); }
  };

  const move = async () => {
    const list = targets();
    if (!list.length) return;
    const dest = await ask({ title: tn("files.move_n", list.length), label: t("files.move_to"), value: path, ok: t("files.move") });
    if (dest === null || dest === undefined) return;
    const folder = dest.trim().replace(/^\/+|\/+$/g, "");
    if (folder === path) return;
    let moved = 0;
    for (const e of list) {
      try {
        await api("api/fs/move", { method: "POST", json: { src: e.path, dst: join(folder, e.name), conflict: "fail" } });
        moved++;
      } catch (err) { errorToast(err); break; }
    }
    await reload();
    if (moved) toast(tn("files.moved", moved, { folder: folder || t("files.root") }));
  };

  const remove = async () => {
    const list = targets();
    if (!list.length) return;
    const ok = await ask({ title: t("files.delete"), message: list.length === 1 ? t("files.delete_one", { name: list[0].name }) : tn("files.delete_n", list.length), ok: t("files.delete"), danger: true });
    if (!ok) return;
    let n = 0;
    for (const e of list) {
      try { await api("api/fs/delete", { method: "POST", json: { path: e.path } }); n++; } catch (err) { errorToast(err); break; }
    }
    await reload();
    if (n) toast(tn("files.trashed", n));
  };

  const addFiles = (list) => {
    up.enqueue(list.map(({ file, rel }) => ({ file, folder: join(path, rel) })));
  };

  const drop = async (ev) => {
    ev.preventDefault();
    setDragging(false);
    if (!writable) { toast(t("files.readonly"), "error"); return; }
    try { addFiles(await up.filesFromDrop(ev.dataTransfer)); } catch (e) { errorToast(e); }
  };

  const onDragOver = (ev) => {
    if (ev.dataTransfer && [...ev.dataTransfer.types].includes("Files")) {
      ev.preventDefault();
      ev.dataTransfer.dropEffect = writable ? "copy" : "none";
      setDragging(true);
    }
  };

  const one = selected.length === 1 ? selected[0] : null;

  return (
    <div class="files" onDragOver={onDragOver} onDragLeave={(e) => { if (!e.currentTarget.contains(e.relatedTarget)) setDragging(false); }} onDrop={drop}>
      <div class="toolbar">
        <Breadcrumbs path={path} />
        <span class="grow" />
        <div class="seg" role="group" aria-label={t("files.view")}>
          <button type="button" class={view === "list" ? "on" : ""} aria-pressed={view === "list"} title={t("files.list_view")}
            aria-label={t("files.list_view")} onClick={() => { setView("list"); setPref("atelier.view", "list"); }} data-testid="view-list"><Icon name="list" /></button>
          <button type="button" class={view === "grid" ? "on" : ""} aria-pressed={view === "grid"} title={t("files.grid_view")}
            aria-label={t("files.grid_view")} onClick={() => { setView("grid"); setPref("atelier.view", "grid"); }} data-testid="view-grid"><Icon name="grid" /></button>
        </div>
        <label class="inline">
          <span class="sr-only">{t("files.sort")}</span>
          <select value={sort + ":" + order} data-testid="sort" onChange={(e) => {
            const [s, o] = e.currentTarget.value.split(":");
            setSort(s); setOrder(o); setPref("atelier.sort", s); setPref("atelier.order", o);
          }}>
            <option value="name:asc">{t("files.sort_name")} ↑</option>
            <option value="name:desc">{t("files.sort_name")} ↓</option>
            <option value="mtime:desc">{t("files.sort_newest")}</option>
            <option value="mtime:asc">{t("files.sort_oldest")}</option>
            <option value="size:desc">{t("files.sort_largest")}</option>
            <option value="size:asc">{t("files.sort_smallest")}</option>
          </select>
        </label>
        <button type="button" class="btn" onClick={onTrash} data-testid="open-trash"><Icon name="trash" />{t("files.trash")}</button>
      </div>

      <div class="toolbar actions-bar">
        {writable ? (
          <>
            <button type="button" class="btn primary" onClick={() => fileInput.current.click()} data-testid="upload-files">
              <Icon name="upload" />{t("files.upload")}</button>
            <button type="button" class="btn" onClick={() => dirInput.current.click()} data-testid="upload-folder">
              <Icon name="folder" />{t("files.upload_folder")}</button>
            <button type="button" class="btn" onClick={newFolder} data-testid="new-folder"><Icon name="plus" />{t("files.new_folder")}</button>
          </>
        ) : <span class="muted small">{t("files.readonly")}</span>}
        <input ref={fileInput} type="file" multiple class="hidden-input" data-testid="file-input"
          onChange={(e) => { addFiles(up.filesFromInput(e.currentTarget)); e.currentTarget.value = ""; }} />
        <input ref={dirInput} type="file" multiple webkitdirectory={true} class="hidden-input" data-testid="dir-input"
          onChange={(e) => { addFiles(up.filesFromInput(e.currentTarget)); e.currentTarget.value = ""; }} />
        <span class="grow" />
        {selected.length ? (
          <div class="selection" data-testid="selection">
            <span class="count">{t("files.selected", { n: selected.length })}</span>
            <button type="button" class="btn" onClick={() => download(selected)} data-testid="download-sel">
              <Icon name="download" />{selected.length === 1 && one.type !== "dir" ? t("files.download") : t("files.download_zip")}</button>
            {one ? <button type="button" class="btn" onClick={() => setSharing(one)} data-testid="share-sel"><Icon name="share" />{t("files.share")}</button> : null}
            {writable && one ? <button type="button" class="btn" onClick={rename} data-testid="rename-sel"><Icon name="edit" />{t("files.rename")}</button> : null}
            {writable ? <button type="button" class="btn" onClick={move} data-testid="move-sel"><Icon name="move" />{t("files.move")}</button> : null}
            {writable ? <button type="button" class="btn danger" onClick={remove} data-testid="delete-sel"><Icon name="trash" />{t("files.delete")}</button> : null}
          </div>
        ) : <span class="muted small">{loading ? "" : tn("files.count", total)}</span>}
      </div>

      <Unfinished folder={path} />

      {error ? (
        <Empty icon="folder" title={error.status === 404 ? t("files.not_found") : error.message}>
          <a class="btn" href="files/" data-nav>{t("files.go_root")}</a>
        </Empty>
      ) : loading && !entries.length ? <div class="center"><Spinner /></div> : !entries.length ? (
        <Empty icon="folder" title={t("files.empty")}>{writable ? <p>{t("files.empty_hint")}</p> : null}</Empty>
      ) : (
        <div ref={listRef} class={"listing " + view} role="listbox" aria-multiselectable="true" tabIndex={0}
          aria-label={t("files.items")} onKeyDown={keydown} data-testid="listing"
          aria-activedescendant={entries[focus] ? "item-" + focus : undefined}>
          {view === "list" ? (
            <div class="row head" aria-hidden="true">
              <span /><span>{t("files.name")}</span><span class="num">{t("files.size")}</span><span>{t("files.modified")}</span>
            </div>
          ) : null}
          {entries.map((e, i) => (
            <div key={e.path} id={"item-" + i} role="option" aria-selected={sel.has(e.path)}
              class={"item row" + (sel.has(e.path) ? " selected" : "") + (i === focus ? " focused" : "")}
              data-path={e.path} data-testid="item" onClick={(ev) => click(ev, i)} onDblClick={() => open(e)}>
              <Thumb entry={e} size={view === "grid" ? 120 : 28} />
              <span class="name" title={e.name}>
                {e.type === "dir" ? <a href={"files/" + encodePath(e.path)} data-nav tabIndex={-1}
                  onClick={(ev) => { if (!ev.ctrlKey && !ev.shiftKey && !ev.metaKey) ev.stopPropagation(); else ev.preventDefault(); }}>{e.name}</a> : e.name}
              </span>
              <span class="num size">{e.type === "dir" ? "" : bytes(e.size)}</span>
              <span class="mtime">{date(e.mtime)}</span>
            </div>
          ))}
          <div ref={sentinel} class="sentinel">{next ? <Spinner /> : null}</div>
        </div>
      )}
      {dragging ? <div class="dropzone" aria-hidden="true"><Icon name="upload" size={48} /><p>{t("files.drop_here")}</p></div> : null}
      <UploadPanel />
      {viewer !== null && images[viewer] ? <Viewer items={images} index={viewer} onIndex={setViewer} onClose={() => setViewer(null)} /> : null}
      {sharing ? <ShareDialog entry={sharing} onClose={() => setSharing(null)} /> : null}
    </div>
  );
}

function clickLink(href, name) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name || "";
  a.className = "hidden-input";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function Trash({ onBack }) {
  const [items, setItems] = useState(null);
  const [error, setError] = useState("");
  const load = () => api("api/fs/trash").then(setItems).catch((e) => setError(e.message));
  useEffect(() => { load(); }, []);
  const restore = async (it) => {
    try {
      await api(`api/fs/trash/${encodeURIComponent(it.id)}/restore`, { method: "POST", json: { conflict: "fail" } });
      toast(t("trash.restored", { name: it.name }));
    } catch (e) {
      if (e.status === 409) {
        const ok = await ask({ title: t("trash.restore"), message: t("trash.exists", { name: it.name }), ok: t("trash.keep_both") });
        if (ok) {
          try { await api(`api/fs/trash/${encodeURIComponent(it.id)}/restore`, { method: "POST", json: { conflict: "rename" } }); } catch (e2) { errorToast(e2); }
        }
      } else errorToast(e);
    }
    load();
  };
  const purge = async (it) => {
    const ok = await ask({ title: t("trash.purge"), message: t("trash.purge_one", { name: it.name }), ok: t("trash.purge"), danger: true });
    if (!ok) return;
    try { await api(`api/fs/trash/${encodeURIComponent(it.id)}`, { method: "DELETE" }); } catch (e) { errorToast(e); }
    load();
  };
  const empty = async () => {
    const ok = await ask({ title: t("trash.empty"), message: t("trash.empty_confirm"), ok: t("trash.empty"), danger: true });
    if (!ok) return;
    try { await api("api/fs/trash", { method: "DELETE" }); } catch (e) { errorToast(e); }
    load();
  };
  return (
    <div class="files trash" data-testid="trash">
      <div class="toolbar">
        <button type="button" class="btn" onClick={onBack} data-testid="trash-back"><Icon name="left" />{t("trash.back")}</button>
        <h1 class="title">{t("files.trash")}</h1>
        <span class="grow" />
        {items && items.length ? <button type="button" class="btn danger" onClick={empty}><Icon name="trash" />{t("trash.empty")}</button> : null}
      </div>
      {error ? <p class="error">{error}</p> : null}
      {!items ? <div class="center"><Spinner /></div> : !items.length ? (
        <Empty icon="trash" title={t("trash.nothing")} />
      ) : (
        <table class="table">
          <thead><tr><th>{t("files.name")}</th><th>{t("trash.from")}</th><th class="num">{t("files.size")}</th><th>{t("trash.deleted")}</th><th /></tr></thead>
          <tbody>
            {items.map((it) => (
              <tr key={it.id} data-testid="trash-item">
                <td><Icon name={it.is_dir ? "folder" : "file"} size={16} /> {it.name}</td>
                <td class="muted ellipsis" title={it.orig_path}>{parentOf(it.orig_path) || "/"}</td>
                <td class="num">{bytes(it.size)}</td>
                <td>{date(it.trashed_at)}</td>
                <td class="row-actions">
                  <button type="button" class="btn small" onClick={() => restore(it)} data-testid="restore"><Icon name="restore" size={14} />{t("trash.restore")}</button>
                  <button type="button" class="btn small danger" onClick={() => purge(it)}>{t("trash.purge")}</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
