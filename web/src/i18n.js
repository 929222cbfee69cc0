// Two dictionaries with the same keys (a test checks); {name} placeholders.
import en from "./i18n/en.json";
import zh from "./i18n/zh.json";

const DICTS = { en, zh };
const KEY = "atelier.lang";

function stored() {
  try { return localStorage.getItem(KEY); } catch { return null; }
}

export function defaultLang() {
  const s = stored();
  if (s === "en" || s === "zh") return s;
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  return nav.toLowerCase().startsWith("zh") ? "zh" : "en";
}

let lang = defaultLang();
document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";

export function getLang() { return lang; }
export function setLang(l) {
  lang = l;
  document.documentElement.lang = l === "zh" ? "zh-CN" : "en";
  try { localStorage.setItem(KEY, l); } catch { /* storage off */ }
}

export function t(key, vars) {
  let s = DICTS[lang][key] ?? DICTS.en[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

/** t() with a count: "key_one" when n is 1 and the language has that form (English). */
export function tn(key, n, vars) {
  const one = key + "_one";
  return t(n === 1 && one in DICTS[lang] ? one : key, { n, ...(vars || {}) });
}
