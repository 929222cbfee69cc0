// A share link's public page: unlock with the password if it has one, then browse and download.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api.js";
import { serviceUrl } from "../base.js";
import { t } from "../i18n.js";
import { bytes, date } from "../format.js";
import { Empty, Icon, Spinner } from "../components.jsx";

export function Share({ route }) {
  const token = route.split("/")[1] || "";
  const [key, setKey] = useState("");
  const [root, setRoot] = useState(null);
  const [state, setState] = useState("loading"); // loading | locked | ready | gone
  const [error, setError] = useState("");
  const [password, setPassword] = useState("");
  const [folder, setFolder] = useState("");
  const [list, setList] = useState(null);
  const headers = key ? { "X-Share-Key": key } : {};
  const base = "s/" + encodeURIComponent(token);

  const open = async (k = key) => {
    try {
      const r = await api(base, { auth: false, headers: k ? { "X-Share-Key": k } : {} });
      setRoot(r);
      setState("ready");
    } catch (e) {
      if (e.status === 401) setState("locked");
      else { setState("gone"); setError(e.status === 410 ? t("sharepage.expired") : t("sharepage.missing")); }
    }
  };
  useEffect(() => { open(); }, [token]);

  useEffect(() => {
    if (state !== "ready" || !root || root.type !== "dir") return;
    setList(null);
    api(base + "/list", { auth: false, headers, query: { path: folder } })
      .then((r) => setList(r.entries)).catch((e) => setError(e.message));
  }, [state, folder]);

  const unlock = async (e) => {
    e.preventDefault();
    setError("");
    try {
      const r = await api(base + "/unlock", { method: "POST", json: { password }, auth: false });
      setKey(r.key);
      await open(r.key);
    } catch (err) {
      setError(err.status === 401 || err.status === 403 ? t("sharepage.wrong") : err.message);
    }
  };

  const fileUrl = (path, inline) => serviceUrl(base + "/file", { path, key, inline: inline ? "true" : undefined });
  const thumbUrl = (path) => serviceUrl(base + "/thumb", { path, key });

  if (state === "loading") return <div class="center"><Spinner /></div>;
  if (state === "gone") return <Empty icon="share" title={error} />;
  if (state === "locked") {
    return (
      <div class="login-wrap">
        <form class="card login" onSubmit={unlock} data-testid="share-unlock">
          <h1>{t("sharepage.locked")}</h1>
          <p class="muted">{t("sharepage.locked_hint")}</p>
          <label class="field">
            <span>{t("share.password")}</span>
            <input type="password" value={password} required autofocus onInput={(e) => setPassword(e.currentTarget.value)} />
          </label>
          {error ? <p class="error" role="alert">{error}</p> : null}
          <button type="submit" class="btn primary wide">{t("sharepage.unlock")}</button>
        </form>
      </div>
    );
  }
  if (root.type !== "dir") {
    return (
      <div class="share-file card" data-testid="share-page">
        <h1>{root.name}</h1>
        <p class="muted">{bytes(root.size)} · {date(root.mtime)}{root.expires ? " · " + t("share.until", { d: date(root.expires) }) : ""}</p>
        {root.kind === "image" ? <img class="share-preview" src={fileUrl("", true)} alt={root.name} /> : null}
        <p><a class="btn primary" href={fileUrl("", false)} download data-testid="share-download"><Icon name="download" />{t("files.download")}</a></p>
      </div>
    );
  }
  const parts = folder ? folder.split("/") : [];
  return (
    <div class="files share-dir" data-testid="share-page">
      <div class="toolbar">
        <nav class="crumbs">
          <button type="button" class="link" onClick={() => setFolder("")}>{root.name}</button>
          {parts.map((p, i) => (
            <span key={i}><span class="crumb-sep">/</span>
              <button type="button" class="link" onClick={() => setFolder(parts.slice(0, i + 1).join("/"))}>{p}</button></span>
          ))}
        </nav>
      </div>
      {!list ? <div class="center"><Spinner /></div> : !list.length ? <Empty title={t("files.empty")} /> : (
        <div class="listing list">
          {list.map((e) => (
            <div key={e.path} class="item row" data-testid="item">
              {e.kind === "image" ? <img class="thumb" loading="lazy" alt="" width="28" height="28" src={thumbUrl(e.path)} /> :
                <span class="thumb icon-thumb"><Icon name={e.type === "dir" ? "folder" : "file"} size={20} /></span>}
              <span class="name">{e.type === "dir" ? <button type="button" class="link" onClick={() => setFolder(e.path)}>{e.name}</button> :
                <a href={fileUrl(e.path, false)} download>{e.name}</a>}</span>
              <span class="num size">{e.type === "dir" ? "" : bytes(e.size)}</span>
              <span class="mtime">{date(e.mtime)}</span>
            </div>
          ))}
        </div>
      )}
    </div>
  );
}
