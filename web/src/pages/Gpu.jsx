// GPU: memory per device (our models by tier, reserve, others, free), resident models,
// load/unload/pin, and switch metrics over time (polled and charted here).
import { useEffect, useRef, useState } from "preact/hooks";
import { api, optionalApi } from "../api.js";
import { t } from "../i18n.js";
import { bytes, duration } from "../format.js";
import { errorToast, toast, useStore } from "../store.js";
import { Empty, Icon, Spinner } from "../components.jsx";
import { LineChart, PALETTE } from "../chart.jsx";

const POLL_MS = 2000;
const KEEP = 180; // samples: six minutes at 2 s

/** Parse the Prometheus text: switches by source, switch seconds sum/count by source. */
export function parseMetrics(text) {
  const out = { switches: {}, seconds: {} };
  for (const line of text.split("\n")) {
    let m = line.match(/^atelier_gpu_switches_total\{([^}]*)\} (\S+)/);
    if (m) {
      const src = (m[1].match(/source="([^"]*)"/) || [])[1] || "?";
      out.switches[src] = (out.switches[src] || 0) + Number(m[2]);
      continue;
    }
    m = line.match(/^atelier_gpu_switch_seconds_(sum|count)\{([^}]*)\} (\S+)/);
    if (m) {
      const src = (m[2].match(/source="([^"]*)"/) || [])[1] || "?";
      out.seconds[src] = out.seconds[src] || { sum: 0, count: 0 };
      out.seconds[src][m[1]] += Number(m[3]);
    }
  }
  return out;
}

function MemoryBar({ dev, models }) {
  const total = dev.total || 1;
  const mine = models.filter((m) => m.device === dev.device || (dev.device === "ram" && m.tier === "ram"));
  const ours = mine.reduce((a, m) => a + m.bytes, 0);
  const other = Math.max(0, dev.total - dev.free - ours);
  const free = Math.max(0, dev.free - dev.reserve);
  const reserve = Math.min(dev.reserve, dev.free);
  const segs = [
    ...mine.map((m, i) => ({ key: m.model, label: m.model, v: m.bytes, cls: "sw" + (i % PALETTE.length) })),
    { key: "_other", label: t("gpu.other"), v: other, cls: "seg-other" },
    { key: "_reserve", label: t("gpu.reserve"), v: reserve, cls: "seg-reserve" },
    { key: "_free", label: t("gpu.free"), v: free, cls: "seg-free" },
  ].filter((s) => s.v > 0);
  return (
    <div class="membar-wrap">
      <div class="membar" role="img" data-testid="memory-bar" data-device={dev.device}
        aria-label={t("gpu.bar_label", { device: dev.device, used: bytes(dev.total - dev.free), total: bytes(dev.total) })}>
        {segs.map((s) => <div key={s.key} class={"memseg " + s.cls} style={{ width: (100 * s.v) / total + "%" }} title={`${s.label}: ${bytes(s.v)}`} />)}
      </div>
      <ul class="legend">
        {segs.map((s) => <li key={s.key}><i class={"sw " + s.cls} />{s.label} <span class="muted">{bytes(s.v)}</span></li>)}
      </ul>
    </div>
  );
}

function ModelRow({ m, admin, busy, act }) {
  return (
    <tr data-testid="resident-model">
      <td>{m.pinned ? <span title={t("gpu.pinned")}><Icon name="pin" size={14} /> </span> : null}{m.model}</td>
      <td>{t("gpu.tier_" + m.tier)}{m.device && m.tier === "gpu" ? ` · ${m.device}` : ""}</td>
      <td class="num">{bytes(m.bytes)}</td>
      <td class="num">{m.uses}</td>
      <td class="row-actions">
        {admin && m.tier === "gpu" ? <button type="button" class="btn small" disabled={busy} onClick={() => act("unload", { model: m.model, to: "ram" })}>{t("gpu.to_ram")}</button> : null}
        {admin && m.tier !== "disk" ? <button type="button" class="btn small" disabled={busy} onClick={() => act("unload", { model: m.model, to: "disk" })}>{t("gpu.unload")}</button> : null}
        {admin ? <button type="button" class="btn small" disabled={busy} onClick={() => act("pin", { model: m.model, pinned: !m.pinned })}>{m.pinned ? t("gpu.unpin") : t("gpu.pin")}</button> : null}
      </td>
    </tr>
  );
}

export function Gpu({ me }) {
  const [snap, setSnap] = useState(null);
  const [missing, setMissing] = useState(false);
  const [error, setError] = useState("");
  const [history, setHistory] = useState([]);
  const [webui, setWebui] = useState(null);
  const [busy, setBusy] = useState(false);
  const [model, setModel] = useState("");
  const [device, setDevice] = useState("");
  const [tier, setTier] = useState("gpu");
  const [plan, setPlan] = useState(null);
  const prevMetrics = useRef(null);
  const admin = me.role === "admin";
  const canLoad = me.role === "admin" || me.role === "user";

  const { features } = useStore();
  const poll = async () => {
    if (!features.gpu) { setMissing(true); return; }
    try {
      const s = await optionalApi("api/gpu");
      if (s === null) { setMissing(true); return; }
      setSnap(s);
      setError("");
      let switches = null;
      if (features.metrics) try {
        const m = parseMetrics(await api("metrics"));
        const prev = prevMetrics.current;
        switches = {};
        for (const [src, n] of Object.entries(m.switches)) switches[src] = prev ? Math.max(0, n - (prev.switches[src] || 0)) : 0;
        prevMetrics.current = m;
      } catch { /* metrics are optional */ }
      const now = Date.now() / 1000;
      setHistory((h) => [...h.slice(-KEEP + 1), { at: now, snap: s, switches, metrics: prevMetrics.current }]);
    } catch (e) {
      setError(e.message);
    }
  };

  useEffect(() => {
    poll();
    if (features.gpu_webui) optionalApi("api/gpu/webui").then(setWebui).catch(() => setWebui(null));
    const id = setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);
    return () => clearInterval(id);
  }, []);

  const act = async (what, body) => {
    setBusy(true);
    try {
      await api("api/gpu/" + what, { method: "POST", json: body });
      await poll();
    } catch (e) { errorToast(e); } finally { setBusy(false); }
  };

  const load = async (dry) => {
    if (!model) return;
    setBusy(true);
    try {
      const body = { model, tier, dry_run: dry };
      if (device && tier === "gpu") body.device = device;
      const r = await api("api/gpu/load", { method: "POST", json: body });
      if (dry) setPlan(r.plan);
      else { setPlan(null); toast(t("gpu.loaded", { model, s: (r.seconds || 0).toFixed(1) })); await poll(); }
    } catch (e) { errorToast(e); } finally { setBusy(false); }
  };

  if (missing) return <Empty icon="gpu" title={t("gpu.missing")}><p>{t("gpu.missing_hint")}</p></Empty>;
  if (!snap) return error ? <Empty icon="gpu" title={error} /> : <div class="center"><Spinner /></div>;

  const models = snap.models || [];
  const memSeries = [...snap.devices, snap.ram].map((d) => ({
    name: d.device,
    points: history.map((h) => {
      const dd = [...h.snap.devices, h.snap.ram].find((x) => x.device === d.device);
      return [h.at, dd ? dd.ours : 0];
    }),
  }));
  const sources = ["gpu", "ram", "disk"];
  const swSeries = sources.map((src) => ({
    name: t("gpu.from_" + src),
    points: history.filter((h) => h.switches).map((h) => [h.at, h.switches[src] || 0]),
  }));
  const last = history.length ? history[history.length - 1].metrics : null;
  const totalSwitches = last ? Object.values(last.switches).reduce((a, b) => a + b, 0) : 0;
  const hits = last ? last.switches.gpu || 0 : 0;

  return (
    <div class="gpu">
      <div class="toolbar">
        <h1 class="title">{t("gpu.title")}</h1>
        <span class="muted small">{t("gpu.policy", { p: snap.policy })}</span>
        <span class="grow" />
        <button type="button" class="btn" onClick={poll}><Icon name="refresh" />{t("common.refresh")}</button>
      </div>
      <div class="cards">
        {[...snap.devices, { ...snap.ram, kind: "ram", queue: null }].map((d) => (
          <section class="card device" key={d.device} data-testid="device">
            <header class="card-head">
              <h2><Icon name={d.kind === "ram" ? "model" : "gpu"} /> {d.device === "ram" ? t("gpu.ram") : d.device}</h2>
              <span class="muted small">{d.kind}{d.queue !== null && d.queue !== undefined ? " · " + t("gpu.queue", { n: d.queue }) : ""}</span>
            </header>
            <p class="bigline"><strong>{bytes(d.total - d.free)}</strong> / {bytes(d.total)} <span class="muted small">{t("gpu.budget", { b: bytes(d.limit) })}</span></p>
            <MemoryBar dev={d} models={models.filter((m) => (d.device === "ram" ? m.tier === "ram" : m.tier === "gpu" && m.device === d.device))} />
          </section>
        ))}
      </div>

      <section class="card">
        <header class="card-head"><h2>{t("gpu.resident")}</h2></header>
        {models.length ? (
          <table class="table">
            <thead><tr><th>{t("gpu.model")}</th><th>{t("gpu.tier")}</th><th class="num">{t("files.size")}</th><th class="num">{t("gpu.uses")}</th><th /></tr></thead>
            <tbody>{models.map((m) => <ModelRow key={m.model} m={m} admin={admin} busy={busy} act={act} />)}</tbody>
          </table>
        ) : <p class="muted">{t("gpu.none_resident")}</p>}
        {canLoad ? (
          <form class="inline-form" onSubmit={(e) => { e.preventDefault(); load(false); }}>
            <label class="field"><span>{t("gpu.model")}</span>
              <select value={model} onChange={(e) => { setModel(e.currentTarget.value); setPlan(null); }} data-testid="load-model">
                <option value="">{snap.available && snap.available.length ? t("gpu.pick") : t("gpu.no_models")}</option>
                {(snap.available || []).map((n) => <option key={n} value={n}>{n}</option>)}
              </select>
            </label>
            <label class="field"><span>{t("gpu.tier")}</span>
              <select value={tier} onChange={(e) => setTier(e.currentTarget.value)}>
                <option value="gpu">{t("gpu.tier_gpu")}</option><option value="ram">{t("gpu.tier_ram")}</option>
              </select>
            </label>
            {tier === "gpu" ? (
              <label class="field"><span>{t("gpu.device")}</span>
                <select value={device} onChange={(e) => setDevice(e.currentTarget.value)}>
                  <option value="">{t("gpu.auto")}</option>
                  {snap.devices.map((d) => <option key={d.device} value={d.device}>{d.device}</option>)}
                </select>
              </label>
            ) : null}
            <button type="button" class="btn" disabled={!model || busy} onClick={() => load(true)}>{t("gpu.preview")}</button>
            <button type="submit" class="btn primary" disabled={!model || busy} data-testid="load-go">{busy ? <Spinner /> : null}{t("gpu.load")}</button>
          </form>
        ) : null}
        {plan ? (
          <div class="plan" data-testid="plan">
            <h3>{t("gpu.plan")}</h3>
            {plan.moves.length ? (
              <ul class="plain">{plan.moves.map((mv, i) => <li key={i}>{mv.model}: {t("gpu.tier_" + mv.from)} → {t("gpu.tier_" + mv.to)}{mv.to_device ? ` (${mv.to_device})` : ""} · {bytes(mv.bytes)} · ~{duration(mv.seconds)}</li>)}</ul>
            ) : <p class="muted">{t("gpu.plan_nothing")}</p>}
          </div>
        ) : null}
      </section>

      <div class="cards two">
        <section class="card">
          <header class="card-head"><h2>{t("gpu.memory_over_time")}</h2></header>
          <LineChart series={memSeries} fmt={bytes} minMax={1024 ** 3} binary label={t("gpu.memory_over_time")} testid="mem-chart" />
        </section>
        <section class="card">
          <header class="card-head"><h2>{t("gpu.switches")}</h2>
            <span class="muted small">{totalSwitches ? t("gpu.hit_rate", { p: Math.round((100 * hits) / totalSwitches), n: totalSwitches }) : ""}</span></header>
          <LineChart series={swSeries} minMax={4} label={t("gpu.switches")} testid="switch-chart" />
          {last && Object.keys(last.seconds).length ? (
            <p class="muted small">{Object.entries(last.seconds).map(([src, v]) => t("gpu.avg_switch", { src: t("gpu.from_" + src), s: v.count ? (v.sum / v.count).toFixed(2) : "–" })).join(" · ")}</p>
          ) : null}
        </section>
      </div>

      {webui ? <WebuiSection data={webui} /> : null}
    </div>
  );
}

function WebuiSection({ data }) {
  const list = Array.isArray(data) ? data : data.checkpoints || data.models || data.loaded || [];
  return (
    <section class="card" data-testid="webui-section">
      <header class="card-head"><h2>{t("gpu.webui")}</h2>{data.current ? <span class="muted small">{t("gpu.webui_current", { m: data.current.title || data.current.name || data.current })}</span> : null}</header>
      {list.length ? (
        <ul class="plain">{list.map((m, i) => <li key={i}>{typeof m === "string" ? m : m.title || m.name || JSON.stringify(m)}{m.device ? ` · ${m.device}` : ""}{m.bytes ? ` · ${bytes(m.bytes)}` : ""}</li>)}</ul>
      ) : <p class="muted">{t("gpu.webui_none")}</p>}
    </section>
  );
}
