// Admin: users (create, role, quota, password, delete), sessions and tokens, usage per
// user per day as a chart with a CSV export built here from the JSON.
import { useEffect, useState } from "preact/hooks";
import { api, optionalApi } from "../api.js";
import { t } from "../i18n.js";
import { bytes, date, day } from "../format.js";
import { errorToast, toast, useStore } from "../store.js";
import { Icon, Modal, Spinner, ask, copyText } from "../components.jsx";
import { StackedBars } from "../chart.jsx";

const GB = 1024 ** 3;

export function Admin({ me }) {
  const [tab, setTab] = useState("users");
  const tabs = [["users", "admin.users"], ["access", "admin.access"], ["usage", "admin.usage"]];
  return (
    <div class="admin">
      <div class="toolbar">
        <h1 class="title">{t("nav.admin")}</h1>
        <div class="tabs" role="tablist">
          {tabs.map(([k, label]) => (
            <button key={k} type="button" role="tab" aria-selected={tab === k} class={tab === k ? "on" : ""}
              onClick={() => setTab(k)} data-testid={"tab-" + k}>{t(label)}</button>
          ))}
        </div>
      </div>
      {tab === "users" ? <Users me={me} /> : tab === "access" ? <Access me={me} /> : <Usage />}
    </div>
  );
}

function Users({ me }) {
  const [users, setUsers] = useState(null);
  const [adding, setAdding] = useState(false);
  const load = () => api("api/users").then(setUsers).catch(errorToast);
  useEffect(() => { load(); }, []);
  const patch = async (u, body, msg) => {
    try { await api("api/users/" + encodeURIComponent(u.name), { method: "PATCH", json: body }); toast(msg); load(); } catch (e) { errorToast(e); }
  };
  const quota = async (u) => {
    const v = await ask({ title: t("admin.quota_for", { name: u.name }), label: t("admin.quota_gb"), value: u.quota_bytes ? String(+(u.quota_bytes / GB).toFixed(3)) : "", optional: true, type: "number", ok: t("common.save") });
    if (v === null) return;
    if (v === "") patch(u, { clear_quota: true }, t("admin.saved"));
    else patch(u, { quota_bytes: Math.round(Number(v) * GB) }, t("admin.saved"));
  };
  const password = async (u) => {
    const v = await ask({ title: t("admin.reset_pw_for", { name: u.name }), label: t("admin.new_password"), type: "password", ok: t("common.save") });
    if (v) patch(u, { password: v }, t("admin.pw_reset"));
  };
  const remove = async (u) => {
    const ok = await ask({ title: t("admin.delete_user"), message: t("admin.delete_confirm", { name: u.name }), ok: t("files.delete"), danger: true });
    if (!ok) return;
    try { await api("api/users/" + encodeURIComponent(u.name), { method: "DELETE" }); load(); } catch (e) { errorToast(e); }
  };
  if (!users) return <div class="center"><Spinner /></div>;
  return (
    <section class="card">
      <header class="card-head">
        <h2>{t("admin.users")}</h2>
        <span class="grow" />
        <button type="button" class="btn primary" onClick={() => setAdding(true)} data-testid="add-user"><Icon name="plus" />{t("admin.add_user")}</button>
      </header>
      <table class="table" data-testid="users-table">
        <thead><tr><th>{t("admin.name")}</th><th>{t("admin.role")}</th><th class="num">{t("admin.quota")}</th><th /></tr></thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.name} data-testid="user-row" data-name={u.name}>
              <td><Icon name="user" size={14} /> {u.name}{u.name === me.name ? <span class="muted small"> ({t("admin.you")})</span> : null}</td>
              <td>
                <select value={u.role} disabled={u.name === me.name} aria-label={t("admin.role")}
                  onChange={(e) => patch(u, { role: e.currentTarget.value }, t("admin.saved"))} data-testid="role">
                  {["admin", "user", "viewer"].map((r) => <option key={r} value={r}>{t("role." + r)}</option>)}
                </select>
              </td>
              <td class="num">{u.quota_bytes === null ? t("admin.unlimited") : bytes(u.quota_bytes)}</td>
              <td class="row-actions">
                <button type="button" class="btn small" onClick={() => quota(u)} data-testid="set-quota">{t("admin.set_quota")}</button>
                <button type="button" class="btn small" onClick={() => password(u)}>{t("admin.reset_pw")}</button>
                {u.name !== me.name ? <button type="button" class="btn small danger" onClick={() => remove(u)}>{t("files.delete")}</button> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {adding ? <AddUser onClose={() => setAdding(false)} onDone={() => { setAdding(false); load(); }} /> : null}
    </section>
  );
}

function AddUser({ onClose, onDone }) {
  const [f, setF] = useState({ name: "", password: "", role: "user", quota: "" });
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const submit = async (e) => {
    e.preventDefault();
    try {
      await api("api/users", { method: "POST", json: { name: f.name.trim(), password: f.password, role: f.role, quota_bytes: f.quota ? Math.round(Number(f.quota) * GB) : null } });
      toast(t("admin.created", { name: f.name }));
      onDone();
    } catch (err) { errorToast(err); }
  };
  return (
    <Modal title={t("admin.add_user")} onClose={onClose} testid="add-user-dialog">
      <form class="form" onSubmit={submit}>
        <label class="field"><span>{t("admin.name")}</span><input value={f.name} onInput={set("name")} required pattern="[A-Za-z0-9_.\-]+" autocomplete="off" data-testid="new-name" /></label>
        <label class="field"><span>{t("login.password")}</span><input type="password" value={f.password} onInput={set("password")} required autocomplete="new-password" data-testid="new-password" /></label>
        <label class="field"><span>{t("admin.role")}</span>
          <select value={f.role} onChange={set("role")} data-testid="new-role">{["user", "viewer", "admin"].map((r) => <option key={r} value={r}>{t("role." + r)}</option>)}</select></label>
        <label class="field"><span>{t("admin.quota_gb")}</span><input type="number" min="0" step="0.001" value={f.quota} onInput={set("quota")} placeholder={t("admin.unlimited")} data-testid="new-quota" /></label>
        <div class="actions">
          <button type="button" class="btn" onClick={onClose}>{t("common.cancel")}</button>
          <button type="submit" class="btn primary" data-testid="create-user">{t("common.create")}</button>
        </div>
      </form>
    </Modal>
  );
}

function Access({ me }) {
  const [tokens, setTokens] = useState(null);
  const [sessions, setSessions] = useState(undefined); // null: the route is not there
  const [allTokens, setAllTokens] = useState(null);
  const [fresh, setFresh] = useState(null);
  const { features } = useStore();
  const load = () => {
    api("api/tokens").then(setTokens).catch(errorToast);
    if (features.sessions) optionalApi("api/sessions", { query: { all_users: "true" } }).then(setSessions).catch(() => setSessions(null));
    // Everyone's tokens: the list route answers rows with a "user" field once it knows all_users.
    api("api/tokens", { query: { all_users: "true" } })
      .then((l) => setAllTokens(l.length && l.every((k) => "user" in k) ? l : null))
      .catch(() => setAllTokens(null));
  };
  useEffect(() => { load(); }, []);
  const create = async () => {
    const name = await ask({ title: t("admin.new_token"), label: t("admin.token_name"), value: "cli", ok: t("common.create") });
    if (!name) return;
    try { setFresh(await api("api/tokens", { method: "POST", json: { name } })); load(); } catch (e) { errorToast(e); }
  };
  const revoke = async (tok) => {
    try { await api("api/tokens/" + tok.id, { method: "DELETE" }); load(); } catch (e) { errorToast(e); }
  };
  const endSession = async (s) => {
    try { await api("api/sessions/" + encodeURIComponent(s.id), { method: "DELETE" }); load(); } catch (e) { errorToast(e); }
  };
  return (
    <>
      <section class="card">
        <header class="card-head"><h2>{t("admin.my_tokens")}</h2><span class="grow" />
          <button type="button" class="btn" onClick={create}><Icon name="plus" />{t("admin.new_token")}</button></header>
        {fresh ? (
          <div class="notice">
            <p>{t("admin.token_once")}</p>
            <div class="copyline"><input readonly value={fresh.token} /><button type="button" class="btn" onClick={() => copyText(fresh.token).then(() => toast(t("share.copied")))}><Icon name="copy" size={14} />{t("common.copy")}</button></div>
          </div>
        ) : null}
        {!tokens ? <Spinner /> : !tokens.length ? <p class="muted">{t("admin.no_tokens")}</p> : (
          <table class="table">
            <thead><tr><th>{t("admin.name")}</th><th>{t("admin.created_at")}</th><th>{t("admin.last_used")}</th><th>{t("admin.expires")}</th><th /></tr></thead>
            <tbody>{tokens.map((k) => (
              <tr key={k.id}><td>{k.name}</td><td>{date(k.created)}</td><td>{date(k.last_used)}</td><td>{k.expires ? date(k.expires) : t("share.never")}</td>
                <td class="row-actions"><button type="button" class="btn small danger" onClick={() => revoke(k)}>{t("share.revoke")}</button></td></tr>
            ))}</tbody>
          </table>
        )}
      </section>
      {sessions ? (
        <section class="card" data-testid="sessions-panel">
          <header class="card-head"><h2>{t("admin.sessions")}</h2></header>
          <table class="table">
            <thead><tr><th>{t("admin.name")}</th><th>{t("admin.created_at")}</th><th>{t("admin.last_used")}</th><th /></tr></thead>
            <tbody>{sessions.map((s) => (
              <tr key={s.id}><td>{s.user}{s.current ? <span class="muted small"> ({t("admin.this_session")})</span> : null}</td><td>{date(s.created)}</td><td>{date(s.last_seen)}</td>
                <td class="row-actions">{s.current ? null : <button type="button" class="btn small danger" onClick={() => endSession(s)}>{t("admin.end_session")}</button>}</td></tr>
            ))}</tbody>
          </table>
        </section>
      ) : null}
      {allTokens ? (
        <section class="card" data-testid="all-tokens-panel">
          <header class="card-head"><h2>{t("admin.all_tokens")}</h2></header>
          <table class="table">
            <thead><tr><th>{t("admin.user")}</th><th>{t("admin.name")}</th><th>{t("admin.last_used")}</th><th /></tr></thead>
            <tbody>{allTokens.map((k) => (
              <tr key={k.id}><td>{k.user}</td><td>{k.name}</td><td>{date(k.last_used)}</td>
                <td class="row-actions"><button type="button" class="btn small danger" onClick={() => api("api/tokens/" + k.id, { method: "DELETE" }).then(load, errorToast)}>{t("share.revoke")}</button></td></tr>
            ))}</tbody>
          </table>
        </section>
      ) : null}
    </>
  );
}

/** CSV of the usage: one row per user and day, then one total row per user. */
export function usageCsv(usage, gpu) {
  const esc = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  const lines = [["user", "day", "uploaded_bytes", "downloaded_bytes", "operations", "stored_bytes", "gpu_seconds", "generations"].join(",")];
  const gpuBy = Object.fromEntries((gpu || []).map((g) => [g.user, g]));
  for (const u of usage) {
    const g = gpuBy[u.user];
    const gday = Object.fromEntries(((g && g.by_day) || []).map((d) => [d.day, d]));
    for (const d of u.by_day) {
      const gd = gday[d.day];
      lines.push([u.user, d.day, d.uploaded, d.downloaded, d.operations, "", gd ? gd.gpu_seconds.toFixed(3) : "", gd ? gd.generations : ""].map(esc).join(","));
    }
    lines.push([u.user, "total", u.uploaded_bytes, u.downloaded_bytes, u.by_day.reduce((a, d) => a + d.operations, 0), u.stored_bytes, g ? g.gpu_seconds.toFixed(3) : 0, g ? g.generations : 0].map(esc).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

function Usage() {
  const { features } = useStore();
  const [days, setDays] = useState(30);
  const [usage, setUsage] = useState(null);
  const [gpu, setGpu] = useState(null);
  const [metric, setMetric] = useState("uploaded");
  const since = day(new Date(Date.now() - (days - 1) * 86400000));
  useEffect(() => {
    setUsage(null);
    api("api/usage", { query: { since } }).then(setUsage).catch(errorToast);
    if (!features.gpu) { setGpu(null); return; }
    optionalApi("api/gpu/usage", { query: { since: since + "T00:00:00" } }).then((r) => setGpu(r ? r.users : null)).catch(() => setGpu(null));
  }, [days]);
  if (!usage) return <div class="center"><Spinner /></div>;
  const labels = [];
  for (let i = days - 1; i >= 0; i--) labels.push(day(new Date(Date.now() - i * 86400000)));
  const stacks = usage.map((u) => {
    const by = Object.fromEntries(u.by_day.map((d) => [d.day, d]));
    return { name: u.user, values: labels.map((l) => (by[l] ? by[l][metric] : 0)) };
  });
  const gpuBy = Object.fromEntries((gpu || []).map((g) => [g.user, g]));
  const exportCsv = () => {
    const blob = new Blob([usageCsv(usage, gpu)], { type: "text/csv;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `atelier-usage-${since}-${day(new Date())}.csv`;
    a.className = "hidden-input";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  };
  return (
    <section class="card" data-testid="usage">
      <header class="card-head">
        <h2>{t("admin.usage")}</h2>
        <span class="grow" />
        <select value={metric} onChange={(e) => setMetric(e.currentTarget.value)} aria-label={t("admin.metric")} data-testid="usage-metric">
          <option value="uploaded">{t("admin.uploaded")}</option>
          <option value="downloaded">{t("admin.downloaded")}</option>
        </select>
        <select value={days} onChange={(e) => setDays(Number(e.currentTarget.value))} aria-label={t("admin.period")}>
          {[7, 30, 90].map((n) => <option key={n} value={n}>{t("admin.last_days", { n })}</option>)}
        </select>
        <button type="button" class="btn" onClick={exportCsv} data-testid="export-csv"><Icon name="download" />{t("admin.export_csv")}</button>
      </header>
      <StackedBars labels={labels} stacks={stacks} fmt={bytes} minMax={1024 * 1024} binary label={t("admin.usage")} testid="usage-chart" />
      <table class="table">
        <thead><tr><th>{t("admin.user")}</th><th class="num">{t("admin.stored")}</th><th class="num">{t("admin.uploaded")}</th><th class="num">{t("admin.downloaded")}</th><th class="num">{t("admin.gpu_seconds")}</th></tr></thead>
        <tbody>{usage.map((u) => (
          <tr key={u.user} data-testid="usage-row"><td>{u.user}</td><td class="num">{bytes(u.stored_bytes)}</td><td class="num">{bytes(u.uploaded_bytes)}</td>
            <td class="num">{bytes(u.downloaded_bytes)}</td><td class="num">{gpuBy[u.user] ? gpuBy[u.user].gpu_seconds.toFixed(1) : gpu ? "0" : "–"}</td></tr>
        ))}</tbody>
      </table>
    </section>
  );
}
