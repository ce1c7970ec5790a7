// The operator UI: a hash-routed page over the gateway's own REST API. No framework, no
// network beyond this origin; the token lives in sessionStorage and leaves with sign-out.

const KEY = "peat-gateway.token";
// The caller as /whoami states it; asked again after every sign-in or reload.
let who = null;

// Whether the caller may do what `need` names (the API decides; this only hides controls).
function can(need) {
  if (!who) return false;
  if (who.kind === "admin") return true;
  const roles = { read: ["org-admin", "operator", "viewer"], operate: ["org-admin", "operator"], manage: ["org-admin"], gateway: [] };
  return (roles[need] || []).includes(who.role);
}
const main = document.getElementById("main");
const live = document.getElementById("live");

// ---- API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(0, "unreachable", `the gateway did not answer (${e.message}); check the link and retry`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  // /ready answers 503 with a full report: the caller reads `ready`, not the status.
  if (!res.ok && !(path === "/ready" && json && "ready" in json)) {
    const err = json && json.error;
    throw new ApiError(res.status, err ? err.code : `http_${res.status}`, err ? err.message : text || res.statusText);
  }
  return json;
}

// ---- rendering helpers -----------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function errorBox(e) {
  const code = e instanceof ApiError ? e.code : "error";
  const status = e instanceof ApiError && e.status ? ` (HTTP ${e.status})` : "";
  return h("div", { class: "error", role: "alert" }, h("code", {}, code), status, ": ", e.message);
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function stateCell(text, level) {
  return h("span", { class: `state s-${level}` }, text);
}

function dl(pairs) {
  return h("dl", {}, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

function page(title, ...children) {
  main.replaceChildren(h("h1", {}, title), ...children.flat().filter((c) => c !== null && c !== undefined));
  main.focus({ preventScroll: true });
}

// ---- screens ---------------------------------------------------------------------------

function signIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "token-help",
  });
  const out = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (ev) => {
        ev.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        try {
          who = await api("GET", "/whoami");
          if (!who.ui) {
            throw new ApiError(403, "forbidden", `this ${who.role} token only appends changes and cannot use the UI; sign in with a viewer, operator, org-admin or admin token`);
          }
          input.value = "";
          // A hash change routes by itself; routing twice would render the screen twice.
          if (!location.hash) location.hash = "#/overview";
          else route();
        } catch (e) {
          sessionStorage.removeItem(KEY);
          who = null;
          out.replaceChildren(errorBox(e));
        }
      },
    },
    h("h2", {}, "Sign in"),
    h("label", { for: "token" }, "Admin or org token", input),
    h("p", { id: "token-help", class: "muted" }, "Kept in this tab only; signing out or closing the tab forgets it."),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    out,
  );
  main.replaceChildren(h("div", { class: "signin" }, message ? errorBox(message) : null, form));
  input.focus();
}

async function overview() {
  page("Overview", h("p", { class: "muted" }, "Loading…"));
  const [ready, orgs] = await Promise.all([api("GET", "/ready"), api("GET", "/orgs?limit=100")]);
  const checks = ready.checks || {};
  const health = h(
    "div",
    { class: "grid" },
    Object.entries(checks).map(([name, c]) =>
      h(
        "section",
        { class: "card", "aria-label": `${name} check` },
        h("h2", {}, name),
        stateCell(c.ok ? "OK" : "FAILING", c.ok ? "ok" : "bad"),
        c.reason ? h("p", {}, c.reason) : null,
        name === "keys" && c.provider ? dl([["provider", c.provider], ["KEK id", c.kek_id], ["last probe", c.probe && c.probe.checked_at]]) : null,
        name === "sources" && c.bound !== undefined ? dl([["bound", c.bound], ["connected", c.connected], ["down", c.down]]) : null,
      ),
    ),
  );
  const links = (checks.sources && checks.sources.links) || [];
  const linkTable = links.length
    ? h(
        "section",
        { class: "card scroll" },
        h("h2", {}, "Node links"),
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Org", "Formation", "State", "Node id", "Last change", "Refused"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            links.map((l) =>
              h(
                "tr",
                {},
                h("td", {}, l.org),
                h("td", {}, l.app),
                h("td", {}, stateCell(l.state, l.state === "connected" ? "ok" : "warn"), l.last_error ? h("div", { class: "muted" }, l.last_error) : null),
                h("td", {}, l.node_id ?? "—"),
                h("td", {}, l.seconds_since_last_frame === null ? "—" : `${l.seconds_since_last_frame} s ago`),
                h("td", {}, l.refused_documents),
              ),
            ),
          ),
        ),
      )
    : null;
  const perOrg = await Promise.all(orgs.map((o) => orgSummary(o)));
  page(
    "Overview",
    h("p", {}, "Gateway ", stateCell(ready.ready ? "READY" : "NOT READY", ready.ready ? "ok" : "bad")),
    health,
    linkTable,
    h("h2", {}, "Organizations"),
    perOrg.length ? h("div", { class: "grid" }, perOrg) : h("p", { class: "muted" }, "No organizations yet."),
  );
}

async function orgSummary(org) {
  const id = encodeURIComponent(org.org_id);
  try {
    const [outbox, sinks] = await Promise.all([api("GET", `/orgs/${id}/outbox`), api("GET", `/orgs/${id}/sinks`)]);
    const statuses = await Promise.all(sinks.map((s) => api("GET", `/orgs/${id}/sinks/${encodeURIComponent(s.sink_id)}/status`).catch((e) => ({ state: "unknown", last_error: e.message }))));
    return h(
      "section",
      { class: "card", "aria-label": `org ${org.org_id}` },
      h("h2", {}, h("a", { href: `#/orgs/${id}` }, org.display_name), " ", h("span", { class: "muted" }, org.org_id)),
      dl([
        ["held in outbox", `${outbox.events} events, ${bytes(outbox.bytes)}`],
        ["outbox use", `${(outbox.used_ratio * 100).toFixed(1)} % of ${bytes(outbox.share_bytes)}`],
      ]),
      sinks.length
        ? h(
            "ul",
            {},
            sinks.map((s, i) => h("li", {}, `${s.sink_id}: `, sinkState(statuses[i]))),
          )
        : h("p", { class: "muted" }, "No sinks."),
    );
  } catch (e) {
    return h("section", { class: "card" }, h("h2", {}, org.org_id), errorBox(e));
  }
}

function sinkState(st) {
  const s = String(st.state || "unknown").toLowerCase();
  const level = s === "delivering" || s === "idle" ? "ok" : s === "stalled" || s === "unknown" ? "bad" : "warn";
  return h("span", {}, stateCell(s, level), st.last_error ? ` — ${st.last_error}` : "");
}

async function orgs() {
  const list = await api("GET", "/orgs?limit=100");
  const out = h("div", {});
  const id = h("input", { id: "new-org", name: "org_id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,127}" });
  const name = h("input", { id: "new-org-name", name: "display_name", required: true, maxlength: "256" });
  const form = h(
    "form",
    {
      class: "card row",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api("POST", "/orgs", { org_id: id.value, display_name: name.value });
          say(`Organization ${id.value} created.`);
          await orgs();
        } catch (e) {
          out.replaceChildren(errorBox(e));
        }
      },
    },
    h("label", { for: "new-org" }, "Org id", id),
    h("label", { for: "new-org-name" }, "Display name", name),
    h("button", { type: "submit", class: "primary" }, "Create org"),
  );
  const create = can("gateway") ? [h("h2", {}, "New organization"), form, out] : [];
  page(
    "Organizations",
    h(
      "div",
      { class: "card scroll" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Org id", "Name", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          {},
          list.map((o) =>
            h("tr", {}, h("td", {}, h("a", { href: `#/orgs/${encodeURIComponent(o.org_id)}` }, o.org_id)), h("td", {}, o.display_name), h("td", {}, new Date(o.created_at).toLocaleString())),
          ),
        ),
      ),
    ),
    ...create,
  );
}

// The screen's refresh timer; cleared on every route change so screens never poll in the background.
let refresh = null;

async function org(orgId) {
  const id = encodeURIComponent(orgId);
  const [o, formations] = await Promise.all([api("GET", `/orgs/${id}`), api("GET", `/orgs/${id}/formations`)]);
  const sinks = h("section", { class: "card scroll", id: "sinks", "aria-label": "Sinks" }, h("h2", {}, "Sinks"), h("p", { class: "muted" }, "Loading…"));
  const out = h("div", {});
  page(
    `${o.display_name}`,
    orgTabs(orgId, "sinks"),
    formationsCard(orgId, formations, out),
    out,
    sinks,
  );
  const draw = async () => {
    const list = await api("GET", `/orgs/${id}/sinks`);
    const states = await Promise.all(list.map((s) => api("GET", `/orgs/${id}/sinks/${encodeURIComponent(s.sink_id)}/status`).catch((e) => ({ state: "unknown", last_error: e.message }))));
    const act = async (label, method, path, body) => {
      try {
        const r = await api(method, path, body);
        say(`${label}: done${r && r.outcome ? ` (${r.outcome})` : ""}.`);
        await draw();
      } catch (e) {
        out.replaceChildren(errorBox(e));
      }
    };
    const rows = list.map((s, i) => {
      const st = states[i];
      const path = `/orgs/${id}/sinks/${encodeURIComponent(s.sink_id)}`;
      const controls = can("operate")
        ? [
            s.enabled
              ? h("button", { type: "button", onclick: () => act(`Pause ${s.sink_id}`, "PATCH", path, { enabled: false }) }, "Pause")
              : h("button", { type: "button", onclick: () => act(`Resume ${s.sink_id}`, "PATCH", path, { enabled: true }) }, "Resume"),
            " ",
            h("button", { type: "button", onclick: () => act(`Test event to ${s.sink_id}`, "POST", `${path}/test`) }, "Send test event"),
          ]
        : [];
      const eta = st.drain_eta_seconds ? `, drains in ~${Math.ceil(st.drain_eta_seconds)} s` : "";
      return h(
        "tr",
        { "data-sink": s.sink_id },
        h("td", {}, s.sink_id, h("div", { class: "muted" }, Object.keys(s.sink_type)[0])),
        h("td", { class: "sink-state" }, sinkState(st)),
        h("td", { class: "sink-backlog" }, `${st.backlog_events ?? "—"} events, ${bytes(st.backlog_bytes)}${eta}`),
        h("td", {}, st.delivered ?? "—", st.dead_lettered ? h("div", { class: "s-bad" }, `${st.dead_lettered} dead-lettered`) : null),
        controls.length ? h("td", {}, controls) : null,
      );
    });
    const heads = ["Sink", "State", "Backlog", "Delivered"].concat(can("operate") ? ["Actions"] : []);
    sinks.replaceChildren(
      h("h2", {}, "Sinks ", h("span", { class: "muted" }, `updated ${new Date().toLocaleTimeString()}`)),
      list.length ? h("table", {}, h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)) : h("p", { class: "muted" }, "None."),
    );
  };
  await draw();
  // One status read per sink every few seconds, only while this screen is shown and visible.
  refresh = setInterval(() => {
    if (document.visibilityState === "visible") draw().catch((e) => out.replaceChildren(errorBox(e)));
  }, 3000);
}

function formationsCard(orgId, formations, out) {
  const id = encodeURIComponent(orgId);
  const fail = (e) => out.replaceChildren(errorBox(e));
  const exportCreds = async (f) => {
    try {
      const c = await api("GET", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/credentials`);
      // A file the operator carries to the node; the object URL is released at once.
      const url = URL.createObjectURL(new Blob([JSON.stringify(c, null, 2)], { type: "application/json" }));
      const a = h("a", { href: url, download: `${orgId}-${f.app_id}-credentials.json` });
      document.body.append(a);
      a.click();
      a.remove();
      URL.revokeObjectURL(url);
      say(`Credentials of ${f.app_id} exported (the export is audited).`);
    } catch (e) {
      fail(e);
    }
  };
  const remove = async (f) => {
    const typed = prompt(`Deleting formation ${f.app_id} destroys its key material; devices of this mesh can no longer be enrolled here. Type ${f.app_id} to confirm.`);
    if (typed === null) return;
    if (typed !== f.app_id) {
      fail(new ApiError(0, "not_confirmed", `you typed "${typed}", not "${f.app_id}"; nothing was deleted`));
      return;
    }
    try {
      await api("DELETE", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}`);
      say(`Formation ${f.app_id} deleted.`);
      await route();
    } catch (e) {
      fail(e);
    }
  };
  const appId = h("input", { id: "new-app", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,127}" });
  const policy = h("select", { id: "new-app-policy" }, ["Controlled", "Strict", "Open"].map((p) => h("option", { value: p }, p)));
  const form = can("manage")
    ? h(
        "form",
        {
          class: "row",
          onsubmit: async (ev) => {
            ev.preventDefault();
            try {
              await api("POST", `/orgs/${id}/formations`, { app_id: appId.value, enrollment_policy: policy.value });
              say(`Formation ${appId.value} created.`);
              await route();
            } catch (e) {
              fail(e);
            }
          },
        },
        h("label", { for: "new-app" }, "Formation id", appId),
        h("label", { for: "new-app-policy" }, "Enrollment policy", policy),
        h("button", { type: "submit", class: "primary" }, "Create formation"),
      )
    : null;
  const heads = ["Formation", "Mesh id", "Policy", "Authority key", "Created"].concat(can("manage") ? [""] : []);
  return h(
    "section",
    { class: "card scroll", "aria-label": "Formations" },
    h("h2", {}, "Formations"),
    formations.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            formations.map((f) =>
              h(
                "tr",
                { "data-formation": f.app_id },
                h("td", {}, f.app_id, f.adopted ? h("div", { class: "muted" }, "adopted") : null),
                h("td", {}, h("code", {}, f.mesh_id)),
                h("td", {}, f.enrollment_policy),
                h("td", {}, h("code", { title: f.authority_public_key }, `${f.authority_public_key.slice(0, 16)}…`)),
                h("td", {}, new Date(f.created_at).toLocaleString()),
                can("manage")
                  ? h("td", {}, h("button", { type: "button", class: "export", onclick: () => exportCreds(f) }, "Export credentials"), " ", h("button", { type: "button", class: "danger", onclick: () => remove(f) }, "Delete"))
                  : null,
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No formations yet."),
    form,
  );
}

// Bootstrap tokens of every formation: the secret shows once, in the answer to its creation.
async function bootTokens(orgId, formations, fail) {
  const id = encodeURIComponent(orgId);
  const lists = await Promise.all(formations.map((f) => api("GET", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/tokens`).then((r) => r.tokens.map((t) => t))));
  const all = lists.flat();
  const app = h("select", { id: "boot-app" }, formations.map((f) => h("option", { value: f.app_id }, f.app_id)));
  const label = h("input", { id: "boot-label", maxlength: "128" });
  const tier = h("select", { id: "boot-tier" }, ["Tactical", "Edge", "Regional", "Enterprise"].map((t) => h("option", { value: t }, t)));
  const uses = h("input", { id: "boot-uses", type: "number", min: "1", value: "1" });
  const hours = h("input", { id: "boot-hours", type: "number", min: "1", value: "24" });
  const form = formations.length
    ? h(
        "form",
        {
          class: "row",
          onsubmit: async (ev) => {
            ev.preventDefault();
            const body = { app_id: app.value, tier: tier.value };
            if (label.value) body.label = label.value;
            if (uses.value) body.max_uses = Number(uses.value);
            if (hours.value) body.expires_at = Date.now() + Number(hours.value) * 3600000;
            try {
              const t = await api("POST", `/orgs/${id}/tokens`, body);
              await enrollment(orgId);
              main.append(secretOnce("New bootstrap token", t.token, `${t.label || t.token_id} for ${t.app_id} (${t.tier}, ${t.max_uses ?? "unlimited"} use${t.max_uses === 1 ? "" : "s"})`));
            } catch (e) {
              fail(e);
            }
          },
        },
        h("label", { for: "boot-app" }, "Formation", app),
        h("label", { for: "boot-label" }, "Label", label),
        h("label", { for: "boot-tier" }, "Tier", tier),
        h("label", { for: "boot-uses" }, "Uses", uses),
        h("label", { for: "boot-hours" }, "Valid for (hours)", hours),
        h("button", { type: "submit", class: "primary" }, "Create bootstrap token"),
      )
    : h("p", { class: "muted" }, "Create a formation first.");
  const revoke = async (t) => {
    if (!confirm(`Revoke bootstrap token ${t.label || t.token_id}? Devices not yet enrolled with it are refused.`)) return;
    try {
      await api("POST", `/orgs/${id}/tokens/${encodeURIComponent(t.token_id)}/revoke`);
      say(`Bootstrap token ${t.label || t.token_id} revoked.`);
      await enrollment(orgId);
    } catch (e) {
      fail(e);
    }
  };
  return h(
    "section",
    { class: "card scroll", "aria-label": "Bootstrap tokens" },
    h("h2", {}, `Bootstrap tokens (${all.length})`),
    all.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Label", "Formation", "Tier", "Uses", "State", "Expires", ""].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            all.map((t) =>
              h(
                "tr",
                { "data-boot": t.token_id },
                h("td", {}, t.label || h("code", {}, t.token_id)),
                h("td", {}, t.app_id),
                h("td", {}, t.tier),
                h("td", {}, `${t.uses} of ${t.max_uses ?? "∞"}`),
                h("td", { class: "boot-state" }, stateCell(t.state, t.state === "active" ? "ok" : "warn")),
                h("td", {}, t.expires_at ? new Date(t.expires_at).toLocaleString() : "never"),
                h("td", {}, t.state === "active" ? h("button", { type: "button", class: "danger", onclick: () => revoke(t) }, "Revoke") : null),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No bootstrap tokens."),
    form,
  );
}

async function enrollment(orgId) {
  const id = encodeURIComponent(orgId);
  const [pending, formations] = await Promise.all([api("GET", `/orgs/${id}/enrollments?status=pending`), api("GET", `/orgs/${id}/formations`)]);
  const certs = await Promise.all(formations.map((f) => api("GET", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/certificates?limit=200`).then((c) => [f, c])));
  const out = h("div", {});
  const fail = (e) => out.replaceChildren(errorBox(e));
  const decide = async (p, approve) => {
    let body;
    if (!approve) {
      const reason = prompt(`Deny ${p.node_id} (${p.app_id})? The requester is told this reason:`);
      if (reason === null) return;
      body = { reason };
    }
    try {
      await api("POST", `/orgs/${id}/enrollments/${encodeURIComponent(p.enrollment_id)}/${approve ? "approve" : "deny"}`, body);
      say(`${p.node_id} ${approve ? "approved: its certificate is signed" : "denied"}.`);
      await enrollment(orgId);
    } catch (e) {
      fail(e);
    }
  };
  const revoke = async (f, c) => {
    const reason = prompt(`Revoke the key of ${c.node_id}? Every certificate of that key stops being valid. Reason:`);
    if (reason === null) return;
    try {
      await api("POST", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/certificates/${c.fingerprint}/revoke`, { reason });
      say(`${c.node_id} revoked.`);
      await enrollment(orgId);
    } catch (e) {
      fail(e);
    }
  };
  const list = pending.enrollments || [];
  const date = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
  const boot = can("manage") ? await bootTokens(orgId, formations, fail) : null;
  page(
    `Enrollment in ${orgId}`,
    orgTabs(orgId, "enrollment"),
    out,
    h(
      "section",
      { class: "card scroll", "aria-label": "Pending approvals" },
      h("h2", {}, `Pending approvals (${list.length})`),
      list.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Node", "Formation", "Tier", "Identity", "Requested", "Expires", ""].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              list.map((p) =>
                h(
                  "tr",
                  { "data-enrollment": p.enrollment_id },
                  h("td", {}, p.node_id, h("div", { class: "muted" }, h("code", {}, p.public_key.slice(0, 16) + "…"))),
                  h("td", {}, p.app_id),
                  h("td", {}, p.tier, p.requested_tier !== p.tier ? h("div", { class: "muted" }, `asked ${p.requested_tier}`) : null),
                  h("td", {}, p.identity ? JSON.stringify(p.identity) : "—"),
                  h("td", {}, date(p.created_at)),
                  h("td", {}, date(p.expires_at)),
                  can("operate")
                    ? h("td", {}, h("button", { type: "button", class: "primary approve", onclick: () => decide(p, true) }, "Approve"), " ", h("button", { type: "button", class: "danger deny", onclick: () => decide(p, false) }, "Deny"))
                    : null,
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "Nothing waits for a decision."),
    ),
    boot,
    certs.map(([f, c]) => {
      const items = (c && (c.certificates || c)) || [];
      return h(
        "section",
        { class: "card scroll", "aria-label": `Certificates of ${f.app_id}` },
        h("h2", {}, `Certificates of ${f.app_id} (${items.length})`),
        items.length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Node", "Tier", "State", "Issued", "Renew by", "Via", ""].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                items.map((x) =>
                  h(
                    "tr",
                    { "data-cert": x.fingerprint },
                    h("td", {}, x.node_id, h("div", { class: "muted" }, h("code", {}, x.fingerprint.slice(0, 16) + "…"))),
                    h("td", {}, x.tier),
                    h("td", { class: "cert-state" }, stateCell(x.state, x.state === "valid" ? "ok" : "bad"), x.revocation ? h("div", { class: "muted" }, x.revocation.reason) : null),
                    h("td", {}, date(x.issued_at)),
                    h("td", {}, date(x.expires_at)),
                    h("td", {}, x.granted_via || "—"),
                    can("operate") && !x.revocation ? h("td", {}, h("button", { type: "button", class: "danger", onclick: () => revoke(f, x) }, "Revoke")) : h("td", {}),
                  ),
                ),
              ),
            )
          : h("p", { class: "muted" }, "None issued."),
      );
    }),
  );
}

function orgTabs(orgId, current) {
  const id = encodeURIComponent(orgId);
  const tabs = [["sinks", `#/orgs/${id}`, "Formations and sinks"], ["enrollment", `#/orgs/${id}/enrollment`, "Enrollment"]];
  if (can("manage")) tabs.push(["tokens", `#/orgs/${id}/tokens`, "API tokens"], ["audit", `#/orgs/${id}/audit`, "Audit"]);
  return h("nav", { class: "tabs", "aria-label": "Org screens" }, tabs.map(([k, href, label]) => h("a", { href, "aria-current": k === current ? "page" : null }, label)));
}

async function tokens(orgId) {
  const id = encodeURIComponent(orgId);
  const list = await api("GET", `/orgs/${id}/api-tokens`);
  const out = h("div", {});
  const name = h("input", { id: "tok-name", required: true, maxlength: "128" });
  const role = h("select", { id: "tok-role" }, ["viewer", "operator", "org-admin", "ingest"].map((r) => h("option", { value: r }, r)));
  const days = h("input", { id: "tok-days", type: "number", min: "1", max: "3650", value: "90" });
  const form = h(
    "form",
    {
      class: "card row",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = { name: name.value, role: role.value };
        if (days.value) body.expires_at = Date.now() + Number(days.value) * 86400000;
        try {
          const t = await api("POST", `/orgs/${id}/api-tokens`, body);
          await tokens(orgId);
          main.append(secretOnce("New API token", t.token, `${t.name} (${t.role})`));
        } catch (e) {
          out.replaceChildren(errorBox(e));
        }
      },
    },
    h("label", { for: "tok-name" }, "Name", name),
    h("label", { for: "tok-role" }, "Role", role),
    h("label", { for: "tok-days" }, "Expires in (days)", days),
    h("button", { type: "submit", class: "primary" }, "Create token"),
  );
  const revoke = async (t) => {
    if (!confirm(`Revoke token ${t.name} (${t.token_id})? Whoever holds it loses access at once.`)) return;
    try {
      await api("DELETE", `/orgs/${id}/api-tokens/${encodeURIComponent(t.token_id)}`);
      say(`Token ${t.name} revoked.`);
      await tokens(orgId);
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  page(
    `API tokens of ${orgId}`,
    orgTabs(orgId, "tokens"),
    h(
      "div",
      { class: "card scroll" },
      list.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Name", "Role", "Token id", "Created", "Expires", ""].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              list.map((t) =>
                h(
                  "tr",
                  { "data-token": t.token_id },
                  h("td", {}, t.name),
                  h("td", {}, t.role),
                  h("td", {}, h("code", {}, t.token_id)),
                  h("td", {}, new Date(t.created_at).toLocaleString()),
                  h("td", {}, t.expires_at ? new Date(t.expires_at).toLocaleString() : "never"),
                  h("td", {}, h("button", { type: "button", class: "danger", onclick: () => revoke(t) }, "Revoke")),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No API tokens."),
    ),
    h("h2", {}, "New API token"),
    form,
    out,
  );
}

// A secret shown once: selectable, copyable, never stored.
function secretOnce(title, secret, what) {
  const field = h("input", { id: "secret", readonly: true, value: secret, "aria-label": title, class: "secret" });
  const copy = h("button", { type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(secret);
      say("Copied.");
    } catch {
      field.select();
      say("Select and copy it by hand; the browser refused the clipboard.");
    }
  } }, "Copy");
  const box = h("section", { class: "card once", role: "alert" }, h("h2", {}, title), h("p", {}, what, ": shown once; the gateway keeps only its hash."), h("div", { class: "row" }, field, copy));
  setTimeout(() => field.select(), 0);
  return box;
}

async function audit(orgId, before) {
  const id = encodeURIComponent(orgId);
  const q = before ? `&before=${before}` : "";
  const pageData = await api("GET", `/orgs/${id}/audit?limit=100${q}`);
  const filter = h("input", { id: "audit-filter", type: "search", placeholder: "actor, action, target or outcome" });
  const body = h("tbody", {});
  const draw = () => {
    const f = filter.value.trim().toLowerCase();
    const rows = pageData.entries.filter((e) => !f || [e.actor_id, e.actor_role, e.action, e.target, e.outcome].join(" ").toLowerCase().includes(f));
    body.replaceChildren(
      ...rows.map((e) =>
        h("tr", {}, h("td", {}, e.seq), h("td", {}, new Date(e.time).toLocaleString()), h("td", {}, e.actor_id, h("div", { class: "muted" }, e.actor_role)), h("td", {}, e.action), h("td", {}, e.target), h("td", {}, stateCell(e.outcome, e.outcome === "ok" ? "ok" : "bad"))),
      ),
    );
  };
  filter.addEventListener("input", draw);
  draw();
  page(
    `Audit of ${orgId}`,
    orgTabs(orgId, "audit"),
    h("label", { for: "audit-filter" }, "Filter this page", filter),
    h("div", { class: "card scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["#", "Time", "Actor", "Action", "Target", "Outcome"].map((t) => h("th", { scope: "col" }, t)))), body)),
    pageData.next_before ? h("p", {}, h("a", { href: `#/orgs/${id}/audit/${pageData.next_before}` }, "Older entries")) : h("p", { class: "muted" }, "Start of the log."),
  );
}

async function about() {
  const a = await api("GET", "/about");
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
        ["UI payload", `${bytes(a.ui.embedded_gzip_bytes)} in ${a.ui.embedded_files} files`],
        ["API", h("a", { href: "/openapi.json" }, "/openapi.json")],
      ]),
    ),
  );
}

// ---- shell -----------------------------------------------------------------------------

function say(text) {
  live.textContent = text;
}

const routes = [
  [/^#\/overview$/, overview],
  [/^#\/orgs$/, orgs],
  [/^#\/orgs\/([^/]+)$/, (m) => org(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/tokens$/, (m) => tokens(decodeURIComponent(m[1]))],
  [/^#\/orgs\/([^/]+)\/enrollment$/, (m) => enrollment(decodeURIComponent(m[1]))],
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

async function routeNow() {
  clearInterval(refresh);
  refresh = null;
  if (!sessionStorage.getItem(KEY)) {
    signIn();
    return;
  }
  if (!who) {
    try {
      who = await api("GET", "/whoami");
    } catch (e) {
      sessionStorage.removeItem(KEY);
      signIn(e);
      return;
    }
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent = who.kind === "admin" ? "admin" : `${who.org_id} · ${who.role}`;
  const hash = location.hash || "#/overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const hit = routes.map(([re, fn]) => [hash.match(re), fn]).find(([m]) => m);
  try {
    if (hit) await hit[1](hit[0]);
    else page("Not found", h("p", {}, "No such screen. ", h("a", { href: "#/overview" }, "Back to the overview")));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(KEY);
      who = null;
      signIn(e);
      return;
    }
    page("Error", errorBox(e));
  }
}

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  who = null;
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
