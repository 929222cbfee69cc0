// Small SVG charts drawn here (no charting library): lines over time, stacked bars.
import { useLayoutEffect, useRef, useState } from "preact/hooks";
import { clock } from "./format.js";
import { t } from "./i18n.js";

/** Draw at the figure's real width, so text keeps its size whatever the screen. */
function useWidth(fallback) {
  const ref = useRef(null);
  const [w, setW] = useState(fallback);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const measure = () => { if (el.clientWidth) setW(el.clientWidth); };
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return [ref, w];
}

export const PALETTE = ["#4c6ef5", "#12b886", "#fab005", "#e64980", "#7950f2", "#fd7e14", "#15aabf", "#82c91e", "#be4bdb", "#fa5252"];

function niceMax(v, binary = false) {
  if (v <= 0) return 1;
  if (binary && v >= 1024) { // bytes: round within the unit shown (KB, MB, GB)
    const unit = 1024 ** Math.floor(Math.log(v) / Math.log(1024));
    return niceMax(v / unit) * unit;
  }
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** series: [{name, points: [[x, y]...]}]; x in seconds (epoch), y formatted by fmt. */
export function LineChart({ series, fmt = String, height = 160, label, testid, minMax = 1, binary = false }) {
  const [ref, W] = useWidth(600);
  const H = height, L = 64, R = 10, T = 10, B = 22;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  if (!xs.length) return <p class="muted small" ref={ref}>{t("chart.no_data")}</p>;
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const ymax = niceMax(Math.max(...ys, minMax), binary);
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - y / ymax) * (H - T - B);
  const ticks = [0, 0.5, 1].map((f) => f * ymax);
  return (
    <figure class="chart" data-testid={testid} ref={ref}>
      <svg viewBox={`0 0 ${W} ${H}`} width={W} height={H} role="img" aria-label={label}>
        {ticks.map((v) => (
          <g key={v}>
            <line x1={L} x2={W - R} y1={py(v)} y2={py(v)} class="grid" />
            <text x={L - 6} y={py(v) + 4} text-anchor="end" class="axis">{fmt(v)}</text>
          </g>
        ))}
        <text x={L} y={H - 6} class="axis">{clock(x0)}</text>
        <text x={W - R} y={H - 6} text-anchor="end" class="axis">{clock(x1)}</text>
        {series.map((s, i) => (
          <polyline key={s.name} fill="none" stroke={PALETTE[i % PALETTE.length]} stroke-width="2"
            vector-effect="non-scaling-stroke" points={s.points.map(([x, y]) => `${px(x)},${py(y)}`).join(" ")} />
        ))}
      </svg>
      <figcaption class="legend">
        {series.map((s, i) => <span key={s.name}><i class={"sw sw" + (i % PALETTE.length)} />{s.name}</span>)}
      </figcaption>
    </figure>
  );
}

/** Stacked bars: labels (x), stacks: [{name, values: [..per label]}]. */
export function StackedBars({ labels, stacks, fmt = String, height = 200, label, testid, minMax = 1, binary = false }) {
  const [ref, W] = useWidth(640);
  const H = height, L = 64, R = 10, T = 10, B = 34;
  if (!labels.length) return <p class="muted small" ref={ref}>{t("chart.no_data")}</p>;
  const sums = labels.map((_, i) => stacks.reduce((a, s) => a + (s.values[i] || 0), 0));
  const ymax = niceMax(Math.max(...sums, minMax), binary);
  const bw = (W - L - R) / labels.length;
  const py = (y) => T + (1 - y / ymax) * (H - T - B);
  const every = Math.max(1, Math.ceil(labels.length / 10));
  return (
    <figure class="chart" data-testid={testid} ref={ref}>
      <svg viewBox={`0 0 ${W} ${H}`} width={W} height={H} role="img" aria-label={label}>
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={L} x2={W - R} y1={py(f * ymax)} y2={py(f * ymax)} class="grid" />
            <text x={L - 6} y={py(f * ymax) + 4} text-anchor="end" class="axis">{fmt(f * ymax)}</text>
          </g>
        ))}
        {labels.map((lab, i) => {
          let acc = 0;
          return (
            <g key={lab}>
              {stacks.map((s, j) => {
                const v = s.values[i] || 0;
                const y0 = py(acc), y1 = py(acc + v);
                acc += v;
                return v > 0 ? (
                  <rect key={s.name} x={L + i * bw + bw * 0.15} width={bw * 0.7} y={y1} height={Math.max(0.5, y0 - y1)}
                    fill={PALETTE[j % PALETTE.length]}><title>{`${s.name} ${lab}: ${fmt(v)}`}</title></rect>
                ) : null;
              })}
              {i % every === 0 ? <text x={L + i * bw + bw / 2} y={H - 18} text-anchor="middle" class="axis">{lab.slice(5)}</text> : null}
            </g>
          );
        })}
      </svg>
      <figcaption class="legend">
        {stacks.map((s, i) => <span key={s.name}><i class={"sw sw" + (i % PALETTE.length)} />{s.name}</span>)}
      </figcaption>
    </figure>
  );
}
