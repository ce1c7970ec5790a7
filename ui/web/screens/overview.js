// Overview: readiness, alerts, rates, node links and each org's outbox and sinks, readable
// at a glance; refreshed every 10 s while shown.

import { api, dl, errorBox, bytes, every, h, page, session, sinkState, stateCell } from "../lib.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// Ingest and delivery per second over the last minutes: two lines, the peak labelled.
function chart(rates) {
  if (rates.length < 2) return h("p", { class: "muted" }, "Rates appear after a few seconds of sampling.");
  const w = 600;
  const hgt = 120;
  const peak = Math.max(1, ...rates.map((r) => Math.max(r.ingested_per_sec, r.delivered_per_sec)));
  const line = (key, cls) => {
    const pts = rates.map((r, i) => `${((i / (rates.length - 1)) * w).toFixed(1)},${(hgt - (r[key] / peak) * (hgt - 8)).toFixed(1)}`);
    return svg("polyline", { points: pts.join(" "), class: cls, fill: "none" });
  };
  const g = svg("svg", { viewBox: `0 0 ${w} ${hgt}`, class: "chart", role: "img", "aria-label": "ingest and delivery rates" });
  g.append(svg("line", { x1: 0, y1: hgt - 0.5, x2: w, y2: hgt - 0.5, class: "axis" }), line("ingested_per_sec", "in"), line("delivered_per_sec", "out"));
  const last = rates[rates.length - 1];
  const minutes = Math.round((Date.parse(last.at) - Date.parse(rates[0].at)) / 60000) || 1;
  return h(
    "div",
    {},
    g,
    h("p", { class: "legend" }, h("span", { class: "k-in" }, "■ ingested"), ` ${last.ingested_per_sec.toFixed(1)}/s now · `, h("span", { class: "k-out" }, "■ delivered"), ` ${last.delivered_per_sec.toFixed(1)}/s now · peak ${peak.toFixed(1)}/s over ${minutes} min`),
  );
}

function alertsCard(list) {
  return h(
    "section",
    { class: "card", id: "alerts", "aria-label": "Alerts" },
    h("h2", {}, `Alerts (${list.length})`),
    list.length
      ? h("ul", { class: "alerts" }, list.slice(0, 20).map((a) => h("li", {}, stateCell(a.level === "bad" ? "!" : "•", a.level), " ", a.org_id ? h("span", { class: "muted" }, `${a.org_id}: `) : null, a.text, a.at ? h("span", { class: "muted" }, ` (${new Date(a.at).toLocaleTimeString()})`) : null)))
      : h("p", {}, stateCell("All clear", "ok")),
  );
}

export async function overview() {
  page("Overview", h("p", { class: "muted" }, "Loading…"));
  await drawOverview();
  every(10000, drawOverview, () => {});
}

async function drawOverview() {
  const who = session.who;
  const activityPath = who.kind === "admin" ? "/activity" : `/orgs/${encodeURIComponent(who.org_id)}/activity`;
  const [ready, orgs, activity] = await Promise.all([api("GET", "/ready"), api("GET", "/orgs?limit=100"), api("GET", activityPath).catch((e) => ({ error: e }))]);
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
  const tls = activity.tls;
  page(
    "Overview",
    h(
      "p",
      {},
      "Gateway ",
      stateCell(ready.ready ? "READY" : "NOT READY", ready.ready ? "ok" : "bad"),
      tls ? h("span", { class: tls.days_left < 30 ? "s-warn" : "muted" }, ` · TLS certificate valid ${tls.days_left} more days (until ${new Date(tls.not_after).toLocaleDateString()})`) : null,
      h("span", { class: "muted" }, ` · updated ${new Date().toLocaleTimeString()}`),
    ),
    activity.error ? errorBox(activity.error) : alertsCard(activity.alerts),
    activity.error ? null : h("section", { class: "card", "aria-label": "Rates" }, h("h2", {}, "Ingest and delivery"), chart(activity.rates)),
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
        ["outbox use", h("span", { class: outbox.used_ratio > 0.8 ? "s-bad" : outbox.used_ratio > 0.5 ? "s-warn" : null }, `${(outbox.used_ratio * 100).toFixed(1)} % of ${bytes(outbox.share_bytes)}`)],
      ]),
      h("progress", { max: "1", value: String(Math.min(1, outbox.used_ratio)), "aria-label": "outbox use" }),
      sinks.length
        ? h(
            "ul",
            {},
            sinks.map((s, i) => {
              const st = statuses[i];
              const eta = st.drain_eta_seconds ? `, drains in ~${Math.ceil(st.drain_eta_seconds)} s` : "";
              return h("li", { "data-sink": s.sink_id }, `${s.sink_id}: `, sinkState(st), st.backlog_events ? h("span", { class: "muted" }, ` — backlog ${st.backlog_events} events, ${bytes(st.backlog_bytes)}${eta}`) : null);
            }),
          )
        : h("p", { class: "muted" }, "No sinks."),
    );
  } catch (e) {
    return h("section", { class: "card" }, h("h2", {}, org.org_id), errorBox(e));
  }
}
