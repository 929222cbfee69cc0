import { useState } from "preact/hooks";
import { api, setCsrf } from "../api.js";
import { navigate } from "../base.js";
import { t } from "../i18n.js";
import { setState } from "../store.js";

export function Login() {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const r = await api("api/login", { method: "POST", json: { username: name, password }, auth: false });
      setCsrf(r.csrf_token);
      const session = await api("ui/session");
      const next = new URLSearchParams(location.search).get("next");
      setState({ me: session.me, features: session.features || {} });
      navigate(next && !next.startsWith("login") ? next : "files", { replace: true });
    } catch (err) {
      setError(err.status === 401 ? t("login.wrong") : err.status === 429 ? t("login.limited") : err.message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="login-wrap">
      <form class="card login" onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">{t("login.title")}</h1>
        <p class="muted">{t("login.subtitle")}</p>
        <label class="field">
          <span>{t("login.user")}</span>
          <input name="username" autocomplete="username" value={name} required autofocus
            onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label class="field">
          <span>{t("login.password")}</span>
          <input name="password" type="password" autocomplete="current-password" value={password} required
            onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {error ? <p class="error" role="alert" data-testid="login-error">{error}</p> : null}
        <button class="btn primary wide" type="submit" disabled={busy}>{t("login.submit")}</button>
      </form>
    </div>
  );
}
