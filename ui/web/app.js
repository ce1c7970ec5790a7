// The operator UI: a hash-routed page over the gateway's own REST API. No framework, no
// network beyond this origin; the token lives in sessionStorage and leaves with sign-out.
// This file is the shell: sign-in (token, client certificate, single sign-on) and routing.

import { api, ApiError, bytes, CERT, dl, errorBox, h, main, nav, page, say, session, stopTimer } from "./lib.js";
import { stopLive } from "./live.js";
import { overview } from "./screens/overview.js";
import { org, orgs } from "./screens/orgs.js";
import { sinks } from "./screens/sinks.js";
import { enrollment } from "./screens/enrollment.js";
import { identity } from "./screens/identity.js";
import { tokens } from "./screens/tokens.js";
import { audit } from "./screens/audit.js";

const SSO_ORG = "peat-gateway.sso-org";

// Asks the gateway who the stored credential is; refuses ingest tokens.
async function whoAmI() {
  const who = await api("GET", "/whoami");
  if (!who.ui) {
    throw new ApiError(403, "forbidden", `this ${who.role} token only appends changes and cannot use the UI; sign in with a viewer, operator, org-admin or admin token`);
  }
  session.who = who;
}

async function signedIn() {
  // A hash change routes by itself; routing twice would render the screen twice.
  if (!location.hash || location.hash === "#/sso") location.hash = "#/overview";
  else route();
}

function signIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  // One place for errors: a new attempt's replaces the last one's.
  const out = h("div", {}, message ? errorBox(message) : null);
  const fail = (e) => {
    session.forget();
    out.replaceChildren(errorBox(e));
  };
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  const tokenForm = h(
    "form",
    {
      class: "card",
      onsubmit: async (ev) => {
        ev.preventDefault();
        session.set(input.value.trim());
        try {
          await whoAmI();
          input.value = "";
          await signedIn();
        } catch (e) {
          fail(e);
        }
      },
    },
    h("h2", {}, "Sign in with a token"),
    h("label", { for: "token" }, "Admin or org token", input),
    h("p", { id: "token-help", class: "muted" }, "Kept in this tab only; signing out or closing the tab forgets it. Tokens work when the identity provider cannot be reached."),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  const ssoOrg = h("input", { id: "sso-org", name: "org", required: true, value: localStorage.getItem(SSO_ORG) || "", autocomplete: "organization" });
  const ssoForm = h(
    "form",
    {
      class: "card",
      onsubmit: async (ev) => {
        ev.preventDefault();
        localStorage.setItem(SSO_ORG, ssoOrg.value.trim());
        try {
          // Same-origin credentials: the answer's cookie binds the sign-in to this browser.
          const res = await fetch("/sso/start", { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify({ org_id: ssoOrg.value.trim() }), credentials: "same-origin", cache: "no-store" });
          const body = await res.json().catch(() => null);
          if (!res.ok) throw new ApiError(res.status, body && body.error ? body.error.code : `http_${res.status}`, body && body.error ? body.error.message : res.statusText);
          say("Going to the identity provider…");
          location.assign(body.authorize_url);
        } catch (e) {
          fail(e);
        }
      },
    },
    h("h2", {}, "Single sign-on"),
    h("label", { for: "sso-org" }, "Organization", ssoOrg),
    h("p", { class: "muted" }, "Signs you in with your organization's identity provider; your role comes from its claim rules."),
    h("button", { type: "submit", id: "sso", class: "primary" }, "Continue with single sign-on"),
  );
  const certForm =
    location.protocol === "https:"
      ? h(
          "form",
          {
            class: "card",
            onsubmit: async (ev) => {
              ev.preventDefault();
              session.set(CERT);
              try {
                await whoAmI();
                await signedIn();
              } catch (e) {
                fail(e);
              }
            },
          },
          h("h2", {}, "Client certificate"),
          h("p", { class: "muted" }, "When this device holds a certificate the gateway maps to a role, it is your sign-in."),
          h("button", { type: "submit", id: "cert" }, "Use my certificate"),
        )
      : null;
  main.replaceChildren(h("div", { class: "signin" }, out, tokenForm, ssoForm, certForm));
  input.focus();
}

// The provider sent the browser back: collect the session the sign-in opened, once.
async function finishSso() {
  page("Signing in…", h("p", { class: "muted" }, "Collecting the session from the gateway."));
  try {
    const res = await fetch("/sso/session", { method: "POST", headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, body && body.error ? body.error.code : `http_${res.status}`, body && body.error ? body.error.message : res.statusText);
    session.set(body.token);
    await whoAmI();
    say(`Signed in as ${body.subject} (${body.role} of ${body.org_id}) until ${new Date(body.expires_at).toLocaleTimeString()}.`);
    history.replaceState(null, "", "#/overview");
    await routeNow();
  } catch (e) {
    session.forget();
    history.replaceState(null, "", "#/");
    signIn(e);
  }
}

async function about() {
  const a = await api("GET", "/about");
  const d = a.data_dir;
  page(
    "About",
    h(
      "section",
      { class: "card" },
      dl([
        ["version", a.version],
        ["build", a.build || "—"],
        ["target", a.target],
        ["features", a.features.join(", ")],
        ["sink types", (a.sink_types || []).join(", ")],
        ["UI payload", `${bytes(a.ui.embedded_gzip_bytes)} in ${a.ui.embedded_files} files`],
        ["data directory", d ? `state ${bytes(d.state_bytes)}, outbox ${bytes(d.outbox_bytes)}, ${d.free_bytes === null ? "free space unknown" : `${bytes(d.free_bytes)} free`}` : "the admin sees its use"],
        ["API", h("a", { href: "/openapi.json" }, "/openapi.json")],
      ]),
    ),
  );
}

const routes = [
  [/^#\/overview$/, overview],
  [/^#\/orgs$/, orgs],
  [/^#\/orgs\/([^/]+)$/, (m) => org(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/sinks$/, (m) => sinks(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/tokens$/, (m) => tokens(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/enrollment$/, (m) => enrollment(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/identity$/, (m) => identity(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/audit(?:\/(\d+))?$/, (m) => audit(decodeURIComponent(m[1]), m[2])],
  [/^#\/about$/, about],
];

// Screens render one after another: a slow screen still loading when the hash changes
// finishes first, so it cannot overwrite the newer one.
// Requests made while one waits collapse into it: it reads the hash when it starts.
let routing = Promise.resolve();
let waiting = false;
function route() {
  if (waiting) return routing;
  waiting = true;
  const run = () => {
    waiting = false;
    return routeNow();
  };
  routing = routing.then(run, run);
  return routing;
}
nav.route = route;

async function routeNow() {
  stopTimer();
  stopLive();
  if (location.hash === "#/sso") {
    await finishSso();
    return;
  }
  if (!session.token()) {
    signIn();
    return;
  }
  if (!session.who) {
    try {
      await whoAmI();
    } catch (e) {
      session.forget();
      signIn(e);
      return;
    }
  }
  const who = session.who;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent = who.kind === "admin" ? "admin" : `${who.org_id} · ${who.role}`;
  const hash = location.hash || "#/overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const hit = routes.map(([re, fn]) => [hash.match(re), fn]).find(([m]) => m);
  try {
    if (hit) await hit[1](hit[0]);
    else page("Not found", h("p", {}, "No such screen. ", h("a", { href: "#/overview" }, "Back to the overview")));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session.forget();
      signIn(e);
      return;
    }
    page("Error", errorBox(e));
  }
}

document.getElementById("signout").addEventListener("click", async () => {
  stopTimer();
  stopLive();
  // A single-sign-on session ends on the gateway too; a token stays valid for its holder.
  if (session.who && session.who.session) {
    try {
      await api("DELETE", "/session");
    } catch {
      // Signed out here either way; the session expires on its own.
    }
  }
  session.forget();
  document.getElementById("who").textContent = "";
  say("Signed out.");
  signIn();
});

const theme = document.getElementById("theme");
function applyTheme(on) {
  document.documentElement.classList.toggle("hc", on);
  theme.setAttribute("aria-pressed", String(on));
}
applyTheme(localStorage.getItem("peat-gateway.hc") === "1");
theme.addEventListener("click", () => {
  const on = !document.documentElement.classList.contains("hc");
  localStorage.setItem("peat-gateway.hc", on ? "1" : "0");
  applyTheme(on);
});

window.addEventListener("hashchange", route);
route();
