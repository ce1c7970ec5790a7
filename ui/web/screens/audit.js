// The org's audit log, newest first: filtered by actor and action on the gateway, paged, with
// the hash chain's verification.

import { api, errorBox, h, orgTabs, page, stateCell } from "../lib.js";

// The filter survives paging through older entries.
const filters = { actor: "", action: "" };

export async function audit(orgId, before) {
  const id = encodeURIComponent(orgId);
  const q = new URLSearchParams({ limit: "100" });
  if (before) q.set("before", before);
  if (filters.actor) q.set("actor", filters.actor);
  if (filters.action) q.set("action", filters.action);
  const [data, chain] = await Promise.all([api("GET", `/orgs/${id}/audit?${q}`), api("GET", `/orgs/${id}/audit/verify`).catch((e) => ({ error: e }))]);
  const actor = h("input", { id: "audit-actor", type: "search", value: filters.actor, placeholder: "token id, sso:ana@…, admin" });
  const action = h("input", { id: "audit-action", type: "search", value: filters.action, placeholder: "sink. or api-token.revoke" });
  const form = h(
    "form",
    {
      class: "row",
      onsubmit: async (ev) => {
        ev.preventDefault();
        filters.actor = actor.value.trim();
        filters.action = action.value.trim();
        // Filtering starts from the newest entry again.
        if (location.hash !== `#/orgs/${id}/audit`) location.hash = `#/orgs/${id}/audit`;
        else await audit(orgId);
      },
    },
    h("label", { for: "audit-actor" }, "Actor contains", actor),
    h("label", { for: "audit-action" }, "Action starts with", action),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const verdict = chain.error
    ? errorBox(chain.error)
    : chain.intact
      ? h("p", { id: "chain" }, stateCell("CHAIN INTACT", "ok"), ` — ${chain.records} entries verified${chain.from_seq ? ` from the retention checkpoint at #${chain.from_seq}` : ""}.`)
      : h("p", { id: "chain", role: "alert" }, stateCell("CHAIN BROKEN", "bad"), ` at entry #${chain.broken_at_seq}: ${chain.reason} (${chain.checked} verified before it).`);
  const rows = data.entries.map((e) =>
    h(
      "tr",
      {},
      h("td", {}, e.seq),
      h("td", {}, new Date(e.time).toLocaleString()),
      h("td", {}, e.actor_id, h("div", { class: "muted" }, e.actor_role)),
      h("td", {}, e.action),
      h("td", {}, e.target),
      h("td", {}, stateCell(e.outcome, e.outcome === "ok" ? "ok" : "bad")),
    ),
  );
  const filtered = filters.actor || filters.action;
  page(
    `Audit of ${orgId}`,
    orgTabs(orgId, "audit"),
    verdict,
    form,
    filtered ? h("p", { class: "muted" }, `${data.entries.length} matching entries among ${data.scanned} read.`) : null,
    h("div", { class: "card scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["#", "Time", "Actor", "Action", "Target", "Outcome"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))),
    data.next_before ? h("p", {}, h("a", { href: `#/orgs/${id}/audit/${data.next_before}` }, "Older entries")) : h("p", { class: "muted" }, "Start of the log."),
  );
}
