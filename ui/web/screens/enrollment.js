// Enrollment: pending approvals, bootstrap tokens and the certificate inventory.

import { openLive } from "../live.js";
import { api, can, errorBox, h, main, orgTabs, page, say, secretOnce, stateCell } from "../lib.js";

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

export async function enrollment(orgId) {
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
  const date = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
  const boot = can("manage") ? await bootTokens(orgId, formations, fail) : null;
  // Requests and decisions arrive over the event stream: the pending list redraws alone, so
  // a form being filled in elsewhere on the screen is kept.
  const pendingBox = h("div", { id: "pending" });
  const drawPending = (list) => pendingBox.replaceChildren(
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
  );
  drawPending(pending.enrollments || []);
  const badge = openLive(orgId, {
    enrollment: () =>
      api("GET", `/orgs/${id}/enrollments?status=pending`)
        .then((p) => drawPending(p.enrollments || []))
        .catch(fail),
  });
  page(
    `Enrollment in ${orgId}`,
    orgTabs(orgId, "enrollment"),
    h("p", { class: "muted" }, "Requests and decisions arrive live ", badge, "."),
    out,
    pendingBox,
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
