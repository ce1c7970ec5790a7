// Overview: readiness, node links and each org's outbox and sinks, readable at a glance.

import { api, dl, errorBox, bytes, h, page, sinkState, stateCell } from "../lib.js";

export async function overview() {
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
