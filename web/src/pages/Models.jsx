// Models: paste a reference, check what it resolves to, fetch it; live jobs over
// EventSource; the local library; source settings for admins. Built on the ModelZoo API
// (CONTRACT-models-api.md); a service without it shows a clear "not available" state.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, optionalApi } from "../api.js";
import { serviceUrl } from "../base.js";
import { t } from "../i18n.js";
import { bytes, date, duration, percent, rate } from "../format.js";
import { errorToast, toast, useStore } from "../store.js";
import { Bar, Empty, Icon, Spinner } from "../components.jsx";

const TYPES = ["Checkpoint", "LORA", "LoCon", "DoRA", "TextualInversion", "VAE", "Controlnet", "Upscaler", "Hypernetwork", "Diffusers", "Other"];
const ERRORS = {
  bad_reference: "models.err_bad_reference", remote_auth_required: "models.err_auth",
  early_access: "models.err_early_access", remote_not_found: "models.err_not_found",
  archived: "models.err_archived", rate_limited: "models.err_rate_limited", remote_error: "models.err_remote",
};

function Preview({ src, alt }) {
  const [bad, setBad] = useState(false);
  if (!src || bad) return <span class="preview none"><Icon name="model" size={36} /></span>;
  return <img class="preview" src={serviceUrl(src)} alt={alt} loading="lazy" onError={() => setBad(true)} />;
}

export function Models({ me }) {
  const [available, setAvailable] = useState(undefined);
  const [tab, setTab] = useState("get");
  const [jobs, setJobs] = useState([]);
  const admin = me.role === "admin";

  const { features } = useStore();
  useEffect(() => {
    if (!features.models) { setAvailable(false); return; }
    optionalApi("api/models/jobs", { query: { limit: 200 } })
      .then((r) => { setAvailable(r !== null); if (r) setJobs(r.jobs || []); })
      .catch(() => setAvailable(false));
  }, [features.models]);

  // Live progress: one EventSource, opened only once the API is known to be there.
  useEffect(() => {
    if (!available) return undefined;
    let es = null, timer = null, closed = false;
    const upsert = (job) => setJobs((old) => {
      const i = old.findIndex((j) => j.id === job.id);
      if (i < 0) return [job, ...old];
      const copy = old.slice();
      copy[i] = job;
      return copy;
    });
    const poll = () => api("api/models/jobs", { query: { limit: 200 } }).then((r) => setJobs(r.jobs || [])).catch(() => {});
    const open = () => {
      es = new EventSource(serviceUrl("api/models/events"), { withCredentials: true });
      es.addEventListener("job", (e) => { try { upsert(JSON.parse(e.data)); } catch { /* ignore */ } });
      es.onerror = () => {
        // The browser reconnects by itself; meanwhile poll so nothing is missed.
        if (!closed && !timer) timer = setInterval(poll, 3000);
      };
      es.onopen = () => { if (timer) { clearInterval(timer); timer = null; poll(); } };
    };
    open();
    return () => { closed = true; if (es) es.close(); if (timer) clearInterval(timer); };
  }, [available]);

  if (available === undefined) return <div class="center"><Spinner /></div>;
  if (!available) {
    return <Empty icon="model" title={t("models.missing")}><p data-testid="models-missing">{t("models.missing_hint")}</p></Empty>;
  }
  const active = jobs.filter((j) => ["queued", "running", "paused"].includes(j.state)).length;
  const tabs = [["get", "models.get"], ["jobs", "models.jobs"], ["library", "models.library"], ...(admin ? [["settings", "models.settings"]] : [])];
  return (
    <div class="models">
      <div class="toolbar">
        <h1 class="title">{t("nav.models")}</h1>
        <div class="tabs" role="tablist">
          {tabs.map(([k, label]) => (
            <button key={k} type="button" role="tab" aria-selected={tab === k} class={tab === k ? "on" : ""} onClick={() => setTab(k)} data-testid={"mtab-" + k}>
              {t(label)}{k === "jobs" && active ? <span class="badge">{active}</span> : null}
            </button>
          ))}
        </div>
      </div>
      {tab === "get" ? <Get onQueued={(job) => { setJobs((old) => [job, ...old.filter((j) => j.id !== job.id)]); setTab("jobs"); }} /> : null}
      {tab === "jobs" ? <Jobs jobs={jobs} setJobs={setJobs} /> : null}
      {tab === "library" ? <Library admin={admin} onQueued={(job) => { setJobs((old) => [job, ...old]); setTab("jobs"); }} /> : null}
      {tab === "settings" ? <Settings /> : null}
    </div>
  );
}

function Get({ onQueued }) {
  const [ref, setRef] = useState("");
  const [to, setTo] = useState("");
  const [file, setFile] = useState(null);
  const [resolved, setResolved] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const body = (f = file) => ({ ref: ref.trim(), file: f, to: to.trim() || null });
  const resolve = async (e, f = file) => {
    if (e) e.preventDefault();
    if (!ref.trim()) return;
    setBusy(true);
    setError(null);
    try {
      setResolved(await api("api/models/resolve", { method: "POST", json: body(f) }));
    } catch (err) {
      setResolved(null);
      setError(err);
    } finally { setBusy(false); }
  };
  const start = async () => {
    setBusy(true);
    try {
      const job = await api("api/models/jobs", { method: "POST", json: body() });
      toast(job.reused ? t("models.reused", { name: job.name }) : t("models.queued", { name: job.name }));
      setResolved(null);
      setRef("");
      onQueued(job);
    } catch (err) { setError(err); } finally { setBusy(false); }
  };
  const r = resolved;
  return (
    <section class="card">
      <form class="resolve-form" onSubmit={resolve}>
        <label class="field grow">
          <span>{t("models.ref")}</span>
          <input value={ref} onInput={(e) => { setRef(e.currentTarget.value); setResolved(null); setFile(null); }}
            placeholder={t("models.ref_hint")} data-testid="model-ref" spellcheck={false} />
        </label>
        <label class="field">
          <span>{t("models.to")}</span>
          <input value={to} onInput={(e) => setTo(e.currentTarget.value)} placeholder={t("models.to_hint")} data-testid="model-to" />
        </label>
        <button type="submit" class="btn primary" disabled={busy || !ref.trim()} data-testid="model-resolve">{busy && !r ? <Spinner /> : null}{t("models.resolve")}</button>
      </form>
      {error ? (
        <p class="error" role="alert" data-testid="model-error">{ERRORS[error.code] ? t(ERRORS[error.code]) + " " : ""}{error.message}</p>
      ) : null}
      {r ? (
        <div class="resolved" data-testid="resolved">
          <Preview src={r.preview} alt={r.name} />
          <div class="resolved-body">
            <h2 data-testid="resolved-name">{r.name}{r.version ? <span class="muted"> · {r.version}</span> : null}</h2>
            <dl class="kv">
              <dt>{t("models.type")}</dt><dd data-testid="resolved-type">{r.type}</dd>
              <dt>{t("models.base")}</dt><dd>{r.base_model || "–"}</dd>
              <dt>{t("files.size")}</dt><dd data-testid="resolved-size">{bytes(r.size)}</dd>
              <dt>{t("models.source")}</dt><dd>{r.source} · <code>{r.ref}</code></dd>
              <dt>{t("models.destination")}</dt><dd data-testid="resolved-dest"><code>{r.destination}</code></dd>
              {r.sha256 ? (<><dt>SHA-256</dt><dd><code class="hash">{r.sha256}</code></dd></>) : null}
            </dl>
            {r.trigger_words && r.trigger_words.length ? (
              <><h3>{t("models.triggers")}</h3><ul class="chips" data-testid="triggers">{r.trigger_words.map((w) => <li key={w}>{w}</li>)}</ul></>
            ) : null}
            {r.files && r.files.length > 1 ? (
              <fieldset class="files-pick">
                <legend>{t("models.files")}</legend>
                {r.files.map((f) => (
                  <label key={f.name} class="radio">
                    <input type="radio" name="mfile" checked={(file || r.files.find((x) => x.primary)?.name) === f.name}
                      onChange={() => { setFile(f.name); resolve(null, f.name); }} />
                    {f.name} <span class="muted">{bytes(f.size)}</span>
                  </label>
                ))}
              </fieldset>
            ) : null}
            {r.existing ? (
              <p class="notice small" data-testid="existing">{r.existing.same_sha256 ? t("models.existing_same", { p: r.existing.path }) : t("models.existing_diff", { p: r.existing.path })}</p>
            ) : null}
            {r.description ? <details><summary>{t("models.description")}</summary><p class="desc">{r.description}</p></details> : null}
            <div class="actions">
              <button type="button" class="btn" onClick={() => setResolved(null)}>{t("common.cancel")}</button>
              <button type="button" class="btn primary" onClick={start} disabled={busy} data-testid="model-fetch">
                <Icon name="download" />{r.existing && r.existing.same_sha256 ? t("models.use_existing") : t("models.fetch", { size: bytes(r.size) })}</button>
            </div>
          </div>
        </div>
      ) : !error ? <p class="muted small">{t("models.ref_examples")}</p> : null}
    </section>
  );
}

function Jobs({ jobs, setJobs }) {
  const act = async (job, what) => {
    try {
      const j = await api(`api/models/jobs/${encodeURIComponent(job.id)}/${what}`, { method: "POST" });
      setJobs((old) => old.map((x) => (x.id === j.id ? j : x)));
    } catch (e) { errorToast(e); }
  };
  const remove = async (job) => {
    try {
      await api(`api/models/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      setJobs((old) => old.filter((x) => x.id !== job.id));
    } catch (e) { errorToast(e); }
  };
  if (!jobs.length) return <Empty icon="download" title={t("models.no_jobs")} />;
  return (
    <ul class="jobs" data-testid="jobs">
      {jobs.map((j) => {
        const pc = j.state === "done" ? 100 : percent(j.done, j.size);
        return (
          <li key={j.id} class={"card job " + j.state} data-testid="job" data-state={j.state} data-id={j.id}>
            <Preview src={j.preview} alt={j.name} />
            <div class="job-body">
              <div class="job-line">
                <strong class="ellipsis">{j.name}</strong>
                <span class={"state s-" + j.state} data-testid="job-state">{t("job." + j.state)}</span>
              </div>
              <div class="muted small ellipsis">{[j.type, j.base_model].filter(Boolean).join(" · ")} → <code>{j.destination}</code></div>
              <Bar value={pc} label={j.name} kind={j.state === "failed" ? "bad" : j.state === "done" ? "good" : ""} />
              <div class="job-line small muted">
                <span>
                  {bytes(j.done)} / {bytes(j.size)} ({pc} %)
                  {j.state === "running" ? ` · ${rate(j.speed)} · ${t("up.eta", { t: duration(j.eta) })}` : ""}
                  {j.reused ? " · " + t("models.reused_short") : ""}
                  {j.state === "done" && j.finished ? " · " + date(j.finished) : ""}
                </span>
                <span class="up-actions">
                  {j.state === "running" || j.state === "queued" ? <button type="button" class="btn small" onClick={() => act(j, "pause")}><Icon name="pause" size={14} />{t("up.pause")}</button> : null}
                  {j.state === "paused" ? <button type="button" class="btn small" onClick={() => act(j, "resume")}><Icon name="play" size={14} />{t("up.resume")}</button> : null}
                  {["queued", "running", "paused"].includes(j.state) ? <button type="button" class="btn small danger" onClick={() => act(j, "cancel")}>{t("up.cancel")}</button> : null}
                  {j.state === "failed" || j.state === "cancelled" ? <button type="button" class="btn small" onClick={() => act(j, "retry")}><Icon name="refresh" size={14} />{t("models.retry")}</button> : null}
                  {["done", "failed", "cancelled"].includes(j.state) ? <button type="button" class="icon-btn" onClick={() => remove(j)} aria-label={t("models.remove_job")} title={t("models.remove_job")}><Icon name="close" size={14} /></button> : null}
                </span>
              </div>
              {j.error ? <p class="error small">{j.error}</p> : null}
            </div>
          </li>
        );
      })}
    </ul>
  );
}

function Library({ admin, onQueued }) {
  const [f, setF] = useState({ q: "", type: "", base_model: "", updates: false });
  const [query, setQuery] = useState(f);
  const [models, setModels] = useState(null);
  const [next, setNext] = useState(null);
  const [status, setStatus] = useState(null);
  const timer = useRef(null);
  const load = async (cursor = null) => {
    try {
      const r = await api("api/models/library", { query: { q: query.q, type: query.type, base_model: query.base_model, updates: query.updates ? "true" : "", limit: 60, cursor } });
      setModels((old) => (cursor && old ? old.concat(r.models) : r.models));
      setNext(r.next);
    } catch (e) { errorToast(e); setModels([]); }
  };
  useEffect(() => { setModels(null); load(); }, [query]);
  const pollStatus = () => api("api/models/library/status").then((s) => {
    setStatus(s);
    if (s.state === "scanning") timer.current = setTimeout(pollStatus, 1500); else if (timer.current) { timer.current = null; load(); }
  }).catch(() => {});
  useEffect(() => { pollStatus(); return () => clearTimeout(timer.current); }, []);
  const scan = async () => {
    try { await api("api/models/library/scan", { method: "POST" }); timer.current = 1; pollStatus(); } catch (e) { errorToast(e); }
  };
  const update = async (m) => {
    try {
      const job = await api("api/models/jobs", { method: "POST", json: { ref: `civitai:${m.civitai.model_id}@${m.update_available.version_id}` } });
      onQueued(job);
    } catch (e) { errorToast(e); }
  };
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.type === "checkbox" ? e.currentTarget.checked : e.currentTarget.value });
  return (
    <>
      <form class="toolbar filters" onSubmit={(e) => { e.preventDefault(); setQuery({ ...f }); }}>
        <label class="searchbox"><Icon name="search" /><input type="search" value={f.q} onInput={set("q")} placeholder={t("models.search")} aria-label={t("models.search")} /></label>
        <select value={f.type} onChange={(e) => { const g = { ...f, type: e.currentTarget.value }; setF(g); setQuery(g); }} aria-label={t("models.type")}>
          <option value="">{t("models.all_types")}</option>{TYPES.map((x) => <option key={x} value={x}>{x}</option>)}
        </select>
        <input value={f.base_model} onInput={set("base_model")} placeholder={t("models.base")} aria-label={t("models.base")} class="narrow-input" />
        <label class="check"><input type="checkbox" checked={f.updates} onChange={(e) => { const g = { ...f, updates: e.currentTarget.checked }; setF(g); setQuery(g); }} />{t("models.updates_only")}</label>
        <button type="submit" class="btn">{t("images.apply")}</button>
        <span class="grow" />
        {status ? <span class="muted small">{status.state === "scanning" ? t("models.scanning", status) : t("models.scanned", status)}</span> : null}
        {admin ? <button type="button" class="btn" onClick={scan} disabled={status && status.state === "scanning"}><Icon name="refresh" />{t("models.scan")}</button> : null}
      </form>
      {!models ? <div class="center"><Spinner /></div> : !models.length ? <Empty icon="model" title={t("models.library_empty")} /> : (
        <div class="lib-grid" data-testid="library">
          {models.map((m) => (
            <article key={m.path} class="card lib-card" data-testid="lib-model">
              <Preview src={m.preview} alt={m.name} />
              <div class="lib-body">
                <h3 class="ellipsis" title={m.name}>{m.name}</h3>
                <p class="muted small">{[m.type, m.base_model, bytes(m.size)].filter(Boolean).join(" · ")}</p>
                <p class="muted small ellipsis" title={m.path}><code>{m.path}</code></p>
                {m.trigger_words && m.trigger_words.length ? <ul class="chips small">{m.trigger_words.slice(0, 6).map((w) => <li key={w}>{w}</li>)}</ul> : null}
                {m.update_available ? (
                  <p class="update"><span class="badge warn">{t("models.update")}</span> {m.update_available.name}
                    {m.civitai ? <button type="button" class="btn small" onClick={() => update(m)}>{t("models.get_update")}</button> : null}</p>
                ) : null}
              </div>
            </article>
          ))}
        </div>
      )}
      {next ? <p class="center"><button type="button" class="btn" onClick={() => load(next)}>{t("models.more")}</button></p> : null}
    </>
  );
}

function Settings() {
  const [s, setS] = useState(null);
  const [civitai, setCivitai] = useState("");
  const [hf, setHf] = useState("");
  const [mirrors, setMirrors] = useState("");
  const [writers, setWriters] = useState("");
  const fill = (x) => { setS(x); setMirrors((x.hf_mirrors || []).join("\n")); setWriters((x.allow_shared_write || []).join(", ")); };
  useEffect(() => { api("api/models/settings").then(fill).catch(errorToast); }, []);
  const save = async (e) => {
    e.preventDefault();
    const body = {
      hf_mirrors: mirrors.split(/\s+/).filter(Boolean),
      allow_shared_write: writers.split(/[\s,]+/).filter(Boolean),
    };
    if (civitai) body.civitai_token = civitai;
    if (hf) body.hf_token = hf;
    try { fill(await api("api/models/settings", { method: "PUT", json: body })); setCivitai(""); setHf(""); toast(t("admin.saved")); } catch (err) { errorToast(err); }
  };
  const clear = async (key) => {
    try { fill(await api("api/models/settings", { method: "PUT", json: { [key]: "" } })); toast(t("admin.saved")); } catch (err) { errorToast(err); }
  };
  if (!s) return <div class="center"><Spinner /></div>;
  return (
    <form class="card form settings" onSubmit={save}>
      <p class="muted small">{t("models.settings_hint")}</p>
      <label class="field"><span>{t("models.civitai_token")} · <em>{s.civitai_token_set ? t("models.token_set") : t("models.token_unset")}</em></span>
        <div class="copyline"><input type="password" value={civitai} autocomplete="off" onInput={(e) => setCivitai(e.currentTarget.value)} placeholder={t("models.token_keep")} />
          {s.civitai_token_set ? <button type="button" class="btn" onClick={() => clear("civitai_token")}>{t("models.token_clear")}</button> : null}</div></label>
      <label class="field"><span>{t("models.hf_token")} · <em>{s.hf_token_set ? t("models.token_set") : t("models.token_unset")}</em></span>
        <div class="copyline"><input type="password" value={hf} autocomplete="off" onInput={(e) => setHf(e.currentTarget.value)} placeholder={t("models.token_keep")} />
          {s.hf_token_set ? <button type="button" class="btn" onClick={() => clear("hf_token")}>{t("models.token_clear")}</button> : null}</div></label>
      <label class="field"><span>{t("models.hf_mirrors")}</span><textarea rows={3} value={mirrors} onInput={(e) => setMirrors(e.currentTarget.value)} placeholder="https://hf-mirror.example" /></label>
      <label class="field"><span>{t("models.shared_write")}</span><input value={writers} onInput={(e) => setWriters(e.currentTarget.value)} placeholder="ann, bob" /></label>
      <dl class="kv small">
        <dt>Civitai</dt><dd><code>{s.civitai_url}</code></dd>
        <dt>Hugging Face</dt><dd><code>{s.hf_endpoint}</code></dd>
        <dt>ModelScope</dt><dd><code>{s.modelscope_url}</code></dd>
      </dl>
      <div class="actions"><button type="submit" class="btn primary">{t("common.save")}</button></div>
    </form>
  );
}
