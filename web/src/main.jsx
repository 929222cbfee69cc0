import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { currentRoute, navigate, onRoute, UI, inFrame } from "./base.js";
import { api } from "./api.js";
import { getLang, setLang, t } from "./i18n.js";
import { applyTheme, currentTheme } from "./theme.js";
import { setState, useStore } from "./store.js";
import { AskHost, Icon, Spinner, Toasts } from "./components.jsx";
import { Login } from "./pages/Login.jsx";
import { Files } from "./pages/Files.jsx";
import { Images } from "./pages/Images.jsx";
import { Models } from "./pages/Models.jsx";
import { Gpu } from "./pages/Gpu.jsx";
import { Admin } from "./pages/Admin.jsx";
import { Share } from "./pages/Share.jsx";

applyTheme(currentTheme());
if (inFrame) document.documentElement.classList.add("framed");

const NAV = [
  ["files", "nav.files", "folder"],
  ["images", "nav.images", "image"],
  ["models", "nav.models", "model"],
  ["gpu", "nav.gpu", "gpu"],
  ["admin", "nav.admin", "user", true],
];

function useRoute() {
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => onRoute(() => setRoute(currentRoute())), []);
  return route;
}

// Links inside the app move with pushState; ctrl/middle clicks open a new tab as usual.
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[data-nav]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(UI.pathname)) return;
  e.preventDefault();
  history.pushState(null, "", url.href);
  window.dispatchEvent(new PopStateEvent("popstate"));
});

function LangSwitch({ onChange }) {
  const lang = getLang();
  const choose = (l) => { setLang(l); onChange(); };
  return (
    <div class="seg" role="group" aria-label={t("nav.language")}>
      <button type="button" class={lang === "zh" ? "on" : ""} aria-pressed={lang === "zh"}
        onClick={() => choose("zh")} lang="zh-CN" data-testid="lang-zh">中文</button>
      <button type="button" class={lang === "en" ? "on" : ""} aria-pressed={lang === "en"}
        onClick={() => choose("en")} lang="en" data-testid="lang-en">English</button>
    </div>
  );
}

function ThemeToggle({ onChange }) {
  const theme = document.documentElement.dataset.theme;
  const next = theme === "dark" ? "light" : "dark";
  return (
    <button type="button" class="icon-btn" data-testid="theme-toggle"
      aria-label={t(next === "dark" ? "nav.dark" : "nav.light")} title={t(next === "dark" ? "nav.dark" : "nav.light")}
      onClick={() => { applyTheme(next, true); onChange(); }}>
      <Icon name={theme === "dark" ? "sun" : "moon"} />
    </button>
  );
}

function TopBar({ route, me, rerender }) {
  const page = route.split("/")[0] || "files";
  const logout = async () => {
    try { await api("api/logout", { method: "POST" }); } catch { /* gone already */ }
    setState({ me: null });
    navigate("login", { replace: true });
  };
  return (
    <header class="topbar">
      <a class="brand" href="files" data-nav>
        <span class="logo" aria-hidden="true">A</span><span class="brand-name">Atelier</span>
      </a>
      {me ? (
        <nav class="mainnav" aria-label={t("nav.main")}>
          {NAV.filter((n) => !n[3] || me.role === "admin").map(([key, label, icon]) => (
            <a key={key} href={key} data-nav class={page === key ? "active" : ""}
              aria-current={page === key ? "page" : undefined} data-testid={"nav-" + key}>
              <Icon name={icon} /><span>{t(label)}</span>
            </a>
          ))}
        </nav>
      ) : <span class="grow" />}
      <div class="topbar-right">
        <LangSwitch onChange={rerender} />
        <ThemeToggle onChange={rerender} />
        {me ? (
          <span class="who">
            <span class="who-name" title={me.role}>{me.name}</span>
            <button type="button" class="icon-btn" onClick={logout} aria-label={t("nav.logout")}
              title={t("nav.logout")} data-testid="logout"><Icon name="logout" /></button>
          </span>
        ) : null}
      </div>
    </header>
  );
}

function App() {
  const route = useRoute();
  const { me } = useStore();
  const [, setTick] = useState(0);
  const [checked, setChecked] = useState(false);
  const rerender = () => setTick((n) => n + 1);
  const page = route.split("/")[0];
  const isPublic = page === "share";

  useEffect(() => {
    if (isPublic) { setChecked(true); return; }
    // ui/session answers 200 either way: no failed request for a visitor not signed in.
    api("ui/session", { auth: false })
      .then((r) => setState({ me: r.signed_in ? r.me : null, features: r.features || {} }))
      .catch(() => setState({ me: null }))
      .finally(() => setChecked(true));
  }, [isPublic]);

  useEffect(() => { document.title = t("title." + (page || "files")) + " · Atelier"; });

  useEffect(() => {
    if (!checked || isPublic) return;
    if (!me && page !== "login") {
      navigate("login?next=" + encodeURIComponent(route + location.search), { replace: true });
    } else if (me && (page === "login" || page === "")) {
      const next = new URLSearchParams(location.search).get("next");
      navigate(next && !next.startsWith("login") ? next : "files", { replace: true });
    }
  }, [checked, me, page]);

  let body;
  if (isPublic) body = <Share route={route} />;
  else if (!checked) body = <div class="center"><Spinner /></div>;
  else if (!me || page === "login") body = <Login />;
  else if (page === "files") body = <Files route={route} me={me} />;
  else if (page === "images") body = <Images me={me} />;
  else if (page === "models") body = <Models me={me} />;
  else if (page === "gpu") body = <Gpu me={me} />;
  else if (page === "admin") body = me.role === "admin" ? <Admin me={me} /> : <NotFound />;
  else body = <NotFound />;

  return (
    <div class="app" data-lang={getLang()}>
      <a class="skip" href="#main">{t("nav.skip")}</a>
      <TopBar route={route} me={page === "login" ? null : me} rerender={rerender} />
      <main id="main" class={"page page-" + (page || "files")} tabIndex={-1}>{body}</main>
      <AskHost />
      <Toasts />
    </div>
  );
}

function NotFound() {
  return (
    <div class="center notfound">
      <h1>{t("notfound.title")}</h1>
      <a class="btn primary" href="files" data-nav>{t("notfound.back")}</a>
    </div>
  );
}

render(<App />, document.getElementById("app"));
