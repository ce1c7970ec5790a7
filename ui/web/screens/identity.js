// Identity of an org: its OpenID providers, the claim rules that admit devices and sign
// operators in, a tester for pasted claims or tokens, and the live sign-in sessions.

import { api, can, errorBox, h, orgTabs, page, say, stateCell } from "../lib.js";

const list = (s) => s.split(/[,\s]+/).filter(Boolean);

export async function identity(orgId) {
  const id = encodeURIComponent(orgId);
  const [idps, rules, settings, sessions] = await Promise.all([
    api("GET", `/orgs/${id}/idps`),
    api("GET", `/orgs/${id}/policy-rules`),
    api("GET", `/orgs/${id}/identity-settings`),
    can("manage") ? api("GET", `/orgs/${id}/sessions`) : Promise.resolve(null),
  ]);
  const out = h("div", {});
  const fail = (e) => out.replaceChildren(errorBox(e));
  const act = async (label, method, path, body) => {
    try {
      const r = await api(method, path, body);
      say(`${label}: done${r && r.last_error ? ` (${r.last_error})` : ""}.`);
      await identity(orgId);
    } catch (e) {
      fail(e);
    }
  };
  const providers = (idps.idps || idps || []).map((p) =>
    h(
      "tr",
      { "data-idp": p.idp_id },
      h("td", {}, h("code", {}, p.issuer), h("div", { class: "muted" }, `audience ${p.audience}`)),
      h("td", {}, p.client_id ? [p.client_id, h("div", { class: "muted" }, p.client_secret ? "secret sealed" : "public client (PKCE)")] : h("span", { class: "muted" }, "none: no sign-in")),
      h("td", {}, stateCell(p.enabled ? "enabled" : "disabled", p.enabled ? "ok" : "warn")),
      h("td", {}, p.keys_fetched_at ? new Date(p.keys_fetched_at).toLocaleString() : "never", p.last_error ? h("div", { class: "s-bad" }, p.last_error) : null),
      can("manage")
        ? h(
            "td",
            {},
            h("button", { type: "button", onclick: () => act(`Refresh ${p.issuer}`, "POST", `/orgs/${id}/idps/${p.idp_id}/refresh`) }, "Refresh keys"),
            " ",
            h("button", { type: "button", onclick: () => act(`${p.enabled ? "Disable" : "Enable"} ${p.issuer}`, "PATCH", `/orgs/${id}/idps/${p.idp_id}`, { enabled: !p.enabled }) }, p.enabled ? "Disable" : "Enable"),
            " ",
            h("button", { type: "button", class: "danger", onclick: () => confirm(`Remove ${p.issuer}? Its cached keys go; tokens it issued are refused.`) && act(`Remove ${p.issuer}`, "DELETE", `/orgs/${id}/idps/${p.idp_id}`) }, "Remove"),
          )
        : null,
    ),
  );
  const ruleRows = (rules.rules || []).map((r) =>
    h(
      "tr",
      { "data-rule": r.rule_id },
      h("td", {}, r.priority),
      h("td", {}, stateCell(r.effect, r.effect === "allow" ? "ok" : "bad")),
      h("td", {}, r.conditions.map((c) => h("div", {}, h("code", {}, c.claim), ` ${c.op} `, c.op === "exists" ? "" : h("code", {}, JSON.stringify(c.value))))),
      h("td", {}, r.effect === "deny" ? "denied" : r.role ? h("span", { class: "muted" }, "— (a sign-in rule)") : `${r.tier}, ${r.permissions.join(" ")}`, r.formations.length ? h("div", { class: "muted" }, `only ${r.formations.join(", ")}`) : null),
      h("td", { class: "rule-role" }, r.role || h("span", { class: "muted" }, "no sign-in")),
      h("td", {}, r.description),
      can("manage") ? h("td", {}, h("button", { type: "button", class: "danger", onclick: () => confirm(`Remove claim rule ${r.rule_id}?`) && act(`Remove rule ${r.rule_id}`, "DELETE", `/orgs/${id}/policy-rules/${r.rule_id}`) }, "Remove")) : null,
    ),
  );
  page(
    `Identity of ${orgId}`,
    orgTabs(orgId, "identity"),
    out,
    h(
      "section",
      { class: "card scroll", "aria-label": "Identity providers" },
      h("h2", {}, "Identity providers"),
      providers.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Issuer", "Client (sign-in)", "State", "Keys fetched"].concat(can("manage") ? [""] : []).map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, providers)) : h("p", { class: "muted" }, "None: devices enroll with bootstrap tokens, operators sign in with tokens."),
      can("manage") ? idpForm(orgId, act) : null,
    ),
    h(
      "section",
      { class: "card scroll", "aria-label": "Claim rules" },
      h("h2", {}, "Claim rules"),
      h("p", { class: "muted" }, `In order of priority; the first match decides. With no match, devices are ${settings.no_match === "allow" ? `allowed (${settings.tier})` : "denied"}; operators are never signed in without a rule that names a role.`),
      ruleRows.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Priority", "Effect", "When", "Device gets", "Sign-in role", "Note"].concat(can("manage") ? [""] : []).map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, ruleRows)) : h("p", { class: "muted" }, "No rules."),
      can("manage") ? ruleForm(orgId, act) : null,
    ),
    can("manage") ? tester(orgId) : null,
    sessions ? sessionsCard(orgId, sessions.sessions, act) : null,
  );
}

function idpForm(orgId, act) {
  const issuer = h("input", { id: "idp-issuer", required: true, placeholder: "https://idp.kit.lan/realms/ops" });
  const audience = h("input", { id: "idp-audience", required: true, placeholder: "urn:peat:gateway" });
  const clientId = h("input", { id: "idp-client", placeholder: "for single sign-on" });
  const secret = h("input", { id: "idp-secret", type: "password", autocomplete: "off", placeholder: "sealed, never shown again" });
  const ca = h("textarea", { id: "idp-ca", rows: "2", placeholder: "-----BEGIN CERTIFICATE----- (private CA)" });
  return h(
    "form",
    {
      class: "idp",
      onsubmit: (ev) => {
        ev.preventDefault();
        const body = { issuer: issuer.value.trim(), audience: audience.value.trim() };
        if (clientId.value.trim()) body.client_id = clientId.value.trim();
        if (secret.value) body.client_secret = secret.value;
        if (ca.value.trim()) body.tls_ca_pem = ca.value.trim();
        act(`Add ${body.issuer}`, "POST", `/orgs/${encodeURIComponent(orgId)}/idps`, body);
      },
    },
    h("h3", {}, "Add a provider"),
    h("div", { class: "row" }, h("label", { for: "idp-issuer" }, "Issuer URL", issuer), h("label", { for: "idp-audience" }, "Token audience", audience), h("label", { for: "idp-client" }, "Client id", clientId), h("label", { for: "idp-secret" }, "Client secret", secret)),
    h("details", {}, h("summary", {}, "TLS"), h("label", { for: "idp-ca" }, "CA certificate (PEM)", ca)),
    h("button", { type: "submit", class: "primary" }, "Add provider"),
  );
}

function ruleForm(orgId, act) {
  const claim = h("input", { id: "rule-claim", required: true, placeholder: "groups" });
  const op = h("select", { id: "rule-op" }, ["contains", "equals", "in", "prefix", "exists"].map((o) => h("option", { value: o }, o)));
  const value = h("input", { id: "rule-value", placeholder: 'kit-operators (or JSON: ["a","b"])' });
  const effect = h("select", { id: "rule-effect" }, h("option", { value: "allow" }, "allow"), h("option", { value: "deny" }, "deny"));
  const role = h("select", { id: "rule-role" }, h("option", { value: "" }, "none: a device rule"), ["viewer", "operator", "org-admin"].map((r) => h("option", { value: r }, r)));
  const tier = h("select", { id: "rule-tier" }, ["Edge", "Tactical", "Regional", "Enterprise"].map((t) => h("option", { value: t }, t)));
  const priority = h("input", { id: "rule-priority", type: "number", min: "0", value: "100" });
  const formations = h("input", { id: "rule-formations", placeholder: "every formation" });
  const note = h("input", { id: "rule-note", maxlength: "256" });
  return h(
    "form",
    {
      class: "rule",
      onsubmit: (ev) => {
        ev.preventDefault();
        let v = value.value.trim();
        try {
          v = v === "" ? null : JSON.parse(v);
        } catch {
          // Plain text is a string value.
        }
        const body = { priority: Number(priority.value), effect: effect.value, conditions: [{ claim: claim.value.trim(), op: op.value, value: v }], tier: tier.value, formations: list(formations.value), description: note.value };
        if (role.value) body.role = role.value;
        act("Add claim rule", "POST", `/orgs/${encodeURIComponent(orgId)}/policy-rules`, body);
      },
    },
    h("h3", {}, "Add a rule"),
    h(
      "div",
      { class: "row" },
      h("label", { for: "rule-claim" }, "Claim", claim),
      h("label", { for: "rule-op" }, "Test", op),
      h("label", { for: "rule-value" }, "Value", value),
      h("label", { for: "rule-effect" }, "Effect", effect),
      h("label", { for: "rule-role" }, "Sign-in role", role),
      h("label", { for: "rule-tier" }, "Device tier", tier),
      h("label", { for: "rule-priority" }, "Priority", priority),
      h("label", { for: "rule-formations" }, "Formations", formations),
      h("label", { for: "rule-note" }, "Note", note),
    ),
    h("button", { type: "submit", class: "primary" }, "Add rule"),
  );
}

// What pasted claims (JSON) or a token would get, as a device and at sign-in.
function tester(orgId) {
  const input = h("textarea", { id: "eval-input", rows: "5", placeholder: '{"sub": "ana", "groups": ["kit-operators"]}  or a JWT' });
  const app = h("input", { id: "eval-app", placeholder: "formation (optional)" });
  const result = h("div", { id: "eval-result", "aria-live": "polite" });
  return h(
    "section",
    { class: "card", "aria-label": "Rule tester" },
    h("h2", {}, "Test the rules"),
    h(
      "form",
      {
        onsubmit: async (ev) => {
          ev.preventDefault();
          const text = input.value.trim();
          const body = {};
          if (text.startsWith("{")) {
            try {
              body.claims = JSON.parse(text);
            } catch (e) {
              result.replaceChildren(errorBox(new Error(`the claims are not JSON: ${e.message}`)));
              return;
            }
          } else body.token = text;
          if (app.value.trim()) body.app_id = app.value.trim();
          try {
            const r = await api("POST", `/orgs/${encodeURIComponent(orgId)}/policy-rules/evaluate`, body);
            const device = r.decision === "allow" ? `allowed as ${r.tier} (${r.permissions.join(" ")})${r.rule_id ? ` by rule ${r.rule_id}` : " by the no-match setting"}` : `denied: ${r.reason}`;
            const signin = r.sign_in.decision === "allow" ? `signs in as ${r.sign_in.role} by rule ${r.sign_in.rule_id}` : `cannot sign in: ${r.sign_in.reason}`;
            result.replaceChildren(
              r.token ? h("p", {}, stateCell(r.token.verified ? "TOKEN VERIFIED" : "TOKEN NOT VERIFIED", r.token.verified ? "ok" : "bad"), r.token.reason ? ` — ${r.token.reason}` : "") : "",
              h("p", { class: "eval-device" }, "Device: ", stateCell(r.decision, r.decision === "allow" ? "ok" : "bad"), " ", device),
              h("p", { class: "eval-signin" }, "Sign-in: ", stateCell(r.sign_in.decision, r.sign_in.decision === "allow" ? "ok" : "bad"), " ", signin),
              r.claims ? h("pre", {}, JSON.stringify(r.claims, null, 2)) : "",
            );
          } catch (e) {
            result.replaceChildren(errorBox(e));
          }
        },
      },
      h("label", { for: "eval-input" }, "Claims (JSON) or a token", input),
      h("div", { class: "row" }, h("label", { for: "eval-app" }, "Formation", app), h("button", { type: "submit", class: "primary" }, "Evaluate")),
    ),
    result,
  );
}

function sessionsCard(orgId, sessions, act) {
  return h(
    "section",
    { class: "card scroll", "aria-label": "Sign-in sessions" },
    h("h2", {}, `Signed in by single sign-on (${sessions.length})`),
    sessions.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Who", "Role", "Rule", "Since", "Until", ""].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            sessions.map((s) =>
              h(
                "tr",
                { "data-session": s.session_id },
                h("td", {}, s.subject, h("div", { class: "muted" }, s.issuer)),
                h("td", {}, s.role),
                h("td", {}, h("code", {}, s.rule_id)),
                h("td", {}, new Date(s.created_at).toLocaleString()),
                h("td", {}, new Date(s.expires_at).toLocaleString()),
                h("td", {}, h("button", { type: "button", class: "danger", onclick: () => confirm(`End the session of ${s.subject}? They are signed out at once.`) && act(`End ${s.subject}'s session`, "DELETE", `/orgs/${encodeURIComponent(orgId)}/sessions/${s.session_id}`) }, "End session")),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "Nobody is signed in by single sign-on."),
  );
}
