import { t } from "./i18n.js";

const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];
/** 1536 -> "1.5 KB" (binary multiples, short units as file managers show them). */
export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  let i = 0, v = Math.abs(n);
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  const s = i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 1 : 0);
  return (n < 0 ? "-" : "") + s + " " + UNITS[i];
}

export function rate(bps) { return bps > 0 ? bytes(bps) + "/s" : "–"; }

export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  if (s < 60) return t("fmt.seconds", { n: s });
  const m = Math.floor(s / 60);
  if (m < 60) return t("fmt.minutes", { m, s: s % 60 });
  return t("fmt.hours", { h: Math.floor(m / 60), m: m % 60 });
}

export function date(epoch) {
  if (!epoch) return "–";
  // One unambiguous form in both languages (01/12 reads two ways): 2026-12-01 09:49
  const d = new Date(epoch * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function day(d) {
  return d.toISOString().slice(0, 10);
}

export function percent(done, total) {
  if (!total) return 0;
  return Math.min(100, Math.floor((done / total) * 100));
}

/** A time of day in the same 24-hour form as date(), with seconds: 13:05:09. */
export function clock(epoch) {
  const d = new Date(epoch * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
