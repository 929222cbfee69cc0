import { useEffect, useState } from "preact/hooks";
import { api } from "../api.js";
import { UI } from "../base.js";
import { t } from "../i18n.js";
import { date } from "../format.js";
import { errorToast, toast } from "../store.js";
import { Icon, Modal, copyText } from "../components.jsx";

const EXPIRY = [["3600", "share.1h"], ["86400", "share.1d"], ["604800", "share.7d"], ["2592000", "share.30d"], ["", "share.never"]];

export function shareLink(token) { return new URL("share/" + token, UI).href; }

export function ShareDialog({ entry, onClose }) {
  const [expires, setExpires] = useState("604800");
  const [password, setPassword] = useState("");
  const [created, setCreated] = useState(null);
  const [existing, setExisting] = useState([]);
  const [busy, setBusy] = useState(false);
  const loadExisting = () => api("api/shares").then((l) => setExisting(l.filter((s) => s.path === entry.path))).catch(() => {});
  useEffect(() => { loadExisting(); }, [entry.path]);

  const create = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      const body = { path: entry.path };
      if (expires) body.expires_in = Number(expires);
      if (password) body.password = password;
      const s = await api("api/shares", { method: "POST", json: body });
      setCreated(s);
      loadExisting();
    } catch (err) { errorToast(err); } finally { setBusy(false); }
  };
  const revoke = async (s) => {
    try { await api("api/shares/" + s.id, { method: "DELETE" }); loadExisting(); toast(t("share.revoked")); } catch (err) { errorToast(err); }
  };
  const link = created ? shareLink(created.token) : "";
  return (
    <Modal title={t("share.title", { name: entry.name })} onClose={onClose} testid="share-dialog">
      {created ? (
        <div class="form">
          <p>{t("share.created")}</p>
          <div class="copyline">
            <input readonly value={link} data-testid="share-link" onFocus={(e) => e.currentTarget.select()} />
            <button type="button" class="btn primary" onClick={async () => toast((await copyText(link)) ? t("share.copied") : t("viewer.copy_failed"))}>
              <Icon name="copy" size={14} />{t("common.copy")}</button>
          </div>
          <p class="muted small">{created.expires ? t("share.until", { d: date(created.expires) }) : t("share.no_expiry")}{created.has_password ? " · " + t("share.protected") : ""}</p>
        </div>
      ) : (
        <form class="form" onSubmit={create}>
          <label class="field">
            <span>{t("share.expires")}</span>
            <select value={expires} onChange={(e) => setExpires(e.currentTarget.value)} data-testid="share-expiry">
              {EXPIRY.map(([v, k]) => <option key={k} value={v}>{t(k)}</option>)}
            </select>
          </label>
          <label class="field">
            <span>{t("share.password")}</span>
            <input type="password" value={password} minLength={4} autocomplete="new-password" placeholder={t("share.password_hint")}
              onInput={(e) => setPassword(e.currentTarget.value)} data-testid="share-password" />
          </label>
          <div class="actions">
            <button type="button" class="btn" onClick={onClose}>{t("common.cancel")}</button>
            <button type="submit" class="btn primary" disabled={busy} data-testid="share-create">{t("share.create")}</button>
          </div>
        </form>
      )}
      {existing.length ? (
        <div class="existing">
          <h3>{t("share.existing")}</h3>
          <ul class="plain">
            {existing.map((s) => (
              <li key={s.id}>
                <span>{t("share.made", { d: date(s.created) })}{s.expires ? " · " + t("share.until", { d: date(s.expires) }) : ""}{s.has_password ? " · " + t("share.protected") : ""} · {t("share.downloads", { n: s.downloads })}</span>
                <button type="button" class="btn small danger" onClick={() => revoke(s)}>{t("share.revoke")}</button>
              </li>
            ))}
          </ul>
        </div>
      ) : null}
    </Modal>
  );
}
