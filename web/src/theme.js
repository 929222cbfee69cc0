const KEY = "atelier.theme";

export function currentTheme() {
  let s = null;
  try { s = localStorage.getItem(KEY); } catch { /* storage off */ }
  if (s === "dark" || s === "light") return s;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function applyTheme(theme, remember = false) {
  document.documentElement.dataset.theme = theme;
  if (remember) {
    try { localStorage.setItem(KEY, theme); } catch { /* storage off */ }
  }
}
