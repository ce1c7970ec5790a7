// API tokens of an org: created with a role and expiry, shown once, revoked.

import { api, errorBox, h, main, orgTabs, page, say, secretOnce } from "../lib.js";

export async function tokens(orgId) {
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