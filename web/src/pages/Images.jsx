// Images: the search index as a windowed grid (only visible rows are in the DOM, so
// 100k results scroll like 100), filters from what /api/search accepts, facets with
// counts (model, LoRA, sampler, size, generator, folder, date: click to keep only those,
// "−" to leave them out; several values of one facet are an OR), the viewer.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { api } from "../api.js";
import { serviceUrl } from "../base.js";
import { t, tn, getLang } from "../i18n.js";
import { Empty, Icon, Spinner } from "../components.jsx";
import { Viewer } from "../viewer.jsx";

const PAGE = 300;
const MIN_CELL = 168;
const GAP = 8;
const OVERSCAN = 3; // rows above and below the window
const MB = 1024 * 1024;

const EMPTY = { q: "", model: "", lora: "", sampler: "", after: "", before: "", min_mb: "", max_mb: "", sort: "mtime:desc", picks: [], seed: 0 };
const FACETS = ["source", "model", "lora", "sampler", "size", "folder", "date"];
const FACET_LIMIT = 12;
const TZ = -new Date().getTimezoneOffset(); // minutes east of UTC: dates are the viewer's days

// A facet value as a filter value: exact (quoted) where the API reads parts otherwise.
const EXACT = new Set(["model", "lora", "sampler", "folder"]);
const asFilter = (field, value) => (EXACT.has(field) ? `"${value}"` : String(value));

function toQuery(f) {
  const [sort, order] = f.sort.split(":");
  const q = {
    q: f.q.trim(), after: f.after, before: f.before ? nextDay(f.before) : "",
    min_size: f.min_mb ? Math.floor(Number(f.min_mb) * MB) : "",
    max_size: f.max_mb ? Math.ceil(Number(f.max_mb) * MB) : "",
    sort, order, kind: "image", limit: PAGE, tz: TZ,
  };
  for (const k of ["model", "lora", "sampler"]) if (f[k].trim()) (q[k] = q[k] || []).push(f[k].trim());
  for (const p of f.picks) {
    const key = (p.not ? "not_" : "") + p.field;
    (q[key] = q[key] || []).push(asFilter(p.field, p.value));
  }
  if (sort === "random") q.seed = f.seed;
  return q;
}

const facetQuery = (f) => {
  const { sort, order, limit, seed, ...rest } = toQuery(f); // the facets ignore the order
  return { ...rest, fields: FACETS.join(","), facet_limit: FACET_LIMIT, date_by: "month" };
};

function nextDay(d) { // "before" includes the day picked
  const x = new Date(d + "T00:00:00Z");
  x.setUTCDate(x.getUTCDate() + 1);
  return x.toISOString().slice(0, 10);
}

export function Images() {
  const [form, setForm] = useState(EMPTY);
  const [query, setQuery] = useState(EMPTY);
  const [showFilters, setShowFilters] = useState(false);
  const [facets, setFacets] = useState(null);
  const [more, setMore] = useState({}); // facets shown whole
  const [items, setItems] = useState([]);
  const [next, setNext] = useState(null);
  const [total, setTotal] = useState(null);
  const [exact, setExact] = useState(true);
  const [indexing, setIndexing] = useState(false);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const [viewer, setViewer] = useState(null);
  const [focus, setFocus] = useState(0);
  const scroller = useRef(null);
  const [box, setBox] = useState({ w: 0, h: 0, top: 0 });
  const gen = useRef(0);
  const fetching = useRef(false);

  const fetchPage = async (cursor) => {
    const my = gen.current;
    fetching.current = true;
    setLoading(true);
    try {
      const r = await api("api/search", { query: { ...toQuery(query), cursor } });
      if (my !== gen.current) return;
      setItems((old) => (cursor ? old.concat(r.results) : r.results));
      setNext(r.next);
      setTotal(r.total);
      setExact(r.total_exact !== false);
      setIndexing(!!r.indexing);
      setError(null);
    } catch (e) {
      if (my === gen.current) setError(e);
    } finally {
      if (my === gen.current) { fetching.current = false; setLoading(false); }
    }
  };

  useEffect(() => {
    gen.current++;
    setItems([]);
    setNext(null);
    setFocus(0);
    if (scroller.current) scroller.current.scrollTop = 0;
    fetchPage(null);
  }, [query]);

  // The facets of the current search, while the filter panel is open.
  useEffect(() => {
    if (!showFilters) return undefined;
    let alive = true;
    const limits = Object.keys(more).filter((k) => more[k]).length ? 100 : FACET_LIMIT;
    api("api/search/facets", { query: { ...facetQuery(query), facet_limit: limits } })
      .then((r) => alive && setFacets(r))
      .catch(() => alive && setFacets(null));
    return () => { alive = false; };
  }, [query, showFilters, more]);

  // While the index is still being built, look again now and then.
  useEffect(() => {
    if (!indexing) return undefined;
    const id = setTimeout(() => { gen.current++; fetchPage(null); }, 3000);
    return () => clearTimeout(id);
  }, [indexing, items.length]);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return undefined;
    const measure = () => setBox({ w: el.clientWidth, h: el.clientHeight, top: el.scrollTop });
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    let raf = 0;
    const onScroll = () => {
      if (!raf) raf = requestAnimationFrame(() => { raf = 0; measure(); });
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    return () => { ro.disconnect(); el.removeEventListener("scroll", onScroll); cancelAnimationFrame(raf); };
  }, []);

  const cols = Math.max(1, Math.floor((box.w + GAP) / (MIN_CELL + GAP)));
  const cell = cols ? (box.w - GAP * (cols - 1)) / cols : MIN_CELL;
  const rowH = cell + GAP;
  const rows = Math.ceil(items.length / cols);
  const first = Math.max(0, Math.floor(box.top / rowH) - OVERSCAN);
  const last = Math.min(rows, Math.ceil((box.top + box.h) / rowH) + OVERSCAN);

  useEffect(() => {
    if (next && !fetching.current && last >= rows - OVERSCAN) fetchPage(next);
  }, [last, rows, next]);

  const submit = (e) => { e.preventDefault(); setQuery({ ...form }); };
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const reset = () => { setForm(EMPTY); setQuery(EMPTY); };
  const filtered = Object.keys(EMPTY).some((k) => k !== "sort" && k !== "seed" && k !== "picks" && query[k]) || query.picks.length > 0;
  const apply = (f) => { setForm(f); setQuery(f); };
  // A facet value: keep only it (not: leave it out); again, or on the chip, undo.
  const pick = (field, value, not) => {
    const same = (p) => p.field === field && String(p.value) === String(value);
    const had = query.picks.find(same);
    const rest = query.picks.filter((p) => !same(p));
    const picks = had && had.not === not ? rest : rest.concat([{ field, value, not }]);
    apply({ ...form, picks });
  };
  const sortChanged = (e) => {
    const v = e.currentTarget.value;
    apply({ ...form, sort: v, seed: v.startsWith("random") ? 1 + Math.floor(Math.random() * 2147483646) : 0 });
  };

  const keydown = (ev) => {
    if (!items.length) return;
    let to = null;
    if (ev.key === "ArrowRight") to = focus + 1;
    else if (ev.key === "ArrowLeft") to = focus - 1;
    else if (ev.key === "ArrowDown") to = focus + cols;
    else if (ev.key === "ArrowUp") to = focus - cols;
    else if (ev.key === "Home") to = 0;
    else if (ev.key === "End") to = items.length - 1;
    else if (ev.key === "Enter") { ev.preventDefault(); setViewer(focus); return; }
    if (to === null) return;
    ev.preventDefault();
    to = Math.max(0, Math.min(items.length - 1, to));
    setFocus(to);
    const el = scroller.current;
    const r = Math.floor(to / cols);
    if (r * rowH < el.scrollTop) el.scrollTop = r * rowH;
    else if ((r + 1) * rowH > el.scrollTop + el.clientHeight) el.scrollTop = (r + 1) * rowH - el.clientHeight;
  };

  const cells = [];
  for (let i = first * cols; i < Math.min(items.length, last * cols); i++) {
    const r = items[i];
    const row = Math.floor(i / cols), col = i % cols;
    cells.push(
      <button type="button" key={r.path} class={"cell" + (i === focus ? " focused" : "")} data-testid="image-cell"
        data-path={r.path} tabIndex={-1} title={r.prompt ? r.prompt.slice(0, 300) : r.name}
        style={{ top: row * rowH + "px", left: col * (cell + GAP) + "px", width: cell + "px", height: cell + "px" }}
        onClick={() => { setFocus(i); setViewer(i); }}>
        {r.thumb ? <img src={serviceUrl(r.thumb)} alt={r.name} loading="lazy" decoding="async" /> : <Icon name="image" size={40} />}
        <span class="cell-name">{r.name}</span>
      </button>,
    );
  }

  const fmt = new Intl.NumberFormat(getLang() === "zh" ? "zh-CN" : "en");
  return (
    <div class="images">
      <form class="toolbar search" onSubmit={submit} role="search">
        <label class="searchbox">
          <Icon name="search" />
          <span class="sr-only">{t("images.search")}</span>
          <input type="search" value={form.q} onInput={set("q")} placeholder={t("images.search_hint")} data-testid="image-search" />
        </label>
        <button type="submit" class="btn primary" data-testid="image-search-go">{t("images.search")}</button>
        <button type="button" class={"btn" + (showFilters ? " on" : "")} aria-expanded={showFilters}
          onClick={() => setShowFilters(!showFilters)} data-testid="toggle-filters">{t("images.filters")}</button>
        {filtered ? <button type="button" class="btn" onClick={reset}>{t("images.reset")}</button> : null}
        <span class="grow" />
        <select value={form.sort} onChange={sortChanged} aria-label={t("files.sort")} data-testid="image-sort">
          <option value="mtime:desc">{t("files.sort_newest")}</option>
          <option value="mtime:asc">{t("files.sort_oldest")}</option>
          <option value="relevance:desc">{t("images.relevance")}</option>
          <option value="name:asc">{t("files.sort_name")}</option>
          <option value="size:desc">{t("files.sort_largest")}</option>
          <option value="random:desc">{t("images.random")}</option>
        </select>
        {query.sort.startsWith("random") ? (
          <button type="button" class="btn" onClick={() => apply({ ...form, seed: 1 + Math.floor(Math.random() * 2147483646) })}
            data-testid="shuffle">{t("images.shuffle")}</button>
        ) : null}
        <span class="muted small count" data-testid="image-count">
          {total === null ? "" : exact ? tn("images.count", total, { n: fmt.format(total) }) : t("images.count_more", { n: fmt.format(total) })}{indexing ? " · " + t("images.indexing") : ""}
        </span>
      </form>
      {showFilters ? (
        <form class="filters" onSubmit={submit} data-testid="filters">
          <label class="field"><span>{t("images.model")}</span><input value={form.model} onInput={set("model")} data-testid="f-model" /></label>
          <label class="field"><span>LoRA</span><input value={form.lora} onInput={set("lora")} data-testid="f-lora" /></label>
          <label class="field"><span>{t("viewer.sampler")}</span><input value={form.sampler} onInput={set("sampler")} data-testid="f-sampler" /></label>
          <label class="field"><span>{t("images.after")}</span><input type="date" value={form.after} onInput={set("after")} /></label>
          <label class="field"><span>{t("images.before")}</span><input type="date" value={form.before} onInput={set("before")} /></label>
          <label class="field narrow"><span>{t("images.min_mb")}</span><input type="number" min="0" step="0.1" value={form.min_mb} onInput={set("min_mb")} /></label>
          <label class="field narrow"><span>{t("images.max_mb")}</span><input type="number" min="0" step="0.1" value={form.max_mb} onInput={set("max_mb")} /></label>
          <button type="submit" class="btn primary">{t("images.apply")}</button>
          <Facets facets={facets} picks={query.picks} onPick={pick} more={more}
            onMore={(f) => setMore({ ...more, [f]: !more[f] })} fmt={fmt} />
        </form>
      ) : null}
      {query.picks.length ? (
        <ul class="chips picks" aria-label={t("images.active_filters")}>
          {query.picks.map((p) => (
            <li key={p.field + p.not + p.value} class={p.not ? "not" : ""} data-testid="facet-chip">
              <span class="muted">{t("facet." + p.field)}{p.not ? " ≠ " : ": "}</span>{label(p.field, p.value)}
              <button type="button" class="icon-btn" aria-label={t("images.remove_filter")}
                onClick={() => pick(p.field, p.value, p.not)}><Icon name="close" size={12} /></button>
            </li>
          ))}
        </ul>
      ) : null}
      {error ? (
        <Empty icon="image" title={error.status === 503 ? t("images.index_off") : error.message} />
      ) : null}
      <div class="gallery" ref={scroller} tabIndex={0} onKeyDown={keydown} aria-label={t("images.grid")} data-testid="gallery">
        {!error && !items.length && !loading ? (
          <Empty icon="image" title={filtered ? t("images.no_match") : t("images.none")}>
            <p>{filtered ? t("images.no_match_hint") : indexing ? t("images.indexing") : t("images.none_hint")}</p>
          </Empty>
        ) : null}
        <div class="gallery-inner" style={{ height: rows * rowH + "px" }}>{cells}</div>
        {loading && !items.length ? <div class="center"><Spinner /></div> : null}
      </div>
      {viewer !== null && items[viewer] ? (
        <Viewer items={items} index={viewer} onIndex={(i) => { setViewer(i); setFocus(i); if (i >= items.length - 5 && next && !fetching.current) fetchPage(next); }}
          onClose={() => setViewer(null)} />
      ) : null}
    </div>
  );
}

function label(field, value) {
  if (field === "source") return t("source." + value);
  if (field === "folder") { // the end of a path says which folder it is
    const parts = String(value).split("/");
    return value === "" ? "/" : parts.length > 2 ? "…/" + parts.slice(-2).join("/") : value;
  }
  return String(value);
}

// The facets: each value with its count; a click keeps only the images with it (more
// clicks in one facet: any of them), "−" leaves them out. Counts past the service's
// limit are lower bounds ("+").
function Facets({ facets, picks, onPick, more, onMore, fmt }) {
  if (!facets) return <div class="facets muted small" data-testid="facets">{t("images.facets_loading")}</div>;
  return (
    <div class="facets" data-testid="facets">
      {FACETS.map((field) => {
        const f = facets.facets[field];
        if (!f || !f.values.length) return null;
        const values = more[field] ? f.values : f.values.slice(0, FACET_LIMIT);
        return (
          <section key={field} class="facet" data-testid={"facet-" + field}>
            <h3>{t("facet." + field)}</h3>
            <ul>
              {values.map((v) => {
                const p = picks.find((x) => x.field === field && String(x.value) === String(v.value));
                const cls = p ? (p.not ? "not" : "on") : "";
                return (
                  <li key={String(v.value)} class={cls}>
                    <button type="button" class="facet-value" data-testid="facet-value" data-field={field}
                      data-value={v.value} aria-pressed={p && !p.not ? "true" : "false"}
                      title={String(v.value)} onClick={() => onPick(field, v.value, false)}>
                      <span class="facet-label">{label(field, v.value)}</span>
                      <span class="facet-count" data-testid="facet-count">{fmt.format(v.count)}{f.exact ? "" : "+"}</span>
                    </button>
                    <button type="button" class="facet-not" data-testid="facet-exclude" aria-pressed={p && p.not ? "true" : "false"}
                      aria-label={t("images.exclude", { what: label(field, v.value) })} title={t("images.exclude", { what: label(field, v.value) })}
                      onClick={() => onPick(field, v.value, true)}>−</button>
                  </li>
                );
              })}
            </ul>
            {f.more || (more[field] && f.values.length > FACET_LIMIT) ? (
              <button type="button" class="btn small" onClick={() => onMore(field)}>
                {more[field] ? t("images.fewer") : t("images.more")}
              </button>
            ) : null}
          </section>
        );
      })}
    </div>
  );
}
