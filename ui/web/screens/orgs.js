// Organizations: the list, and an org's formations with the node each one captures from.

import { api, ApiError, can, errorBox, h, nav, orgTabs, page, say, stateCell, every } from "../lib.js";
import { openLive } from "../live.js";
import { qrSvg } from "../qr.js";

export async function orgs() {
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


export async function org(orgId) {
  const id = encodeURIComponent(orgId);
  const [o, formations] = await Promise.all([api("GET", `/orgs/${id}`), api("GET", `/orgs/${id}/formations`)]);
  const out = h("div", {});
  const fail = (e) => out.replaceChildren(errorBox(e));
  const sources = h("section", { class: "card scroll", id: "sources", "aria-label": "Sources" }, h("h2", {}, "Sources"), h("p", { class: "muted" }, "Loading…"));
  const changes = h("ol", { class: "changes", id: "changes" });
  const seen = h("span", { class: "muted" }, "none yet");
  let count = 0;
  const badge = openLive(orgId, {
    cdc: (ce) => {
      count += 1;
      seen.textContent = `${count} since this screen opened`;
      const d = ce.data || {};
      const li = h("li", {}, h("code", {}, ce.subject || `${d.collection}/${d.doc_id}`), " ", h("span", { class: "muted" }, `${ce.type || ""} · ${d.app_id || ""} · ${new Date(ce.time || Date.now()).toLocaleTimeString()}`));
      changes.prepend(li);
      while (changes.children.length > 20) changes.lastChild.remove();
    },
  });
  page(
    o.display_name,
    orgTabs(orgId, "formations"),
    formationsCard(orgId, formations, out),
    out,
    sources,
    h("section", { class: "card", "aria-label": "Live changes" }, h("h2", {}, "Changes arriving ", badge), h("p", {}, "Captured or ingested: ", seen), changes),
  );
  const draw = () => sourcesCard(orgId, formations, sources, fail);
  await draw();
  every(5000, draw, fail);
}

// A formation's binding to its peat-node sidecar: state, node, counts; bind, unbind, reconcile.
async function sourcesCard(orgId, formations, box, fail) {
  const id = encodeURIComponent(orgId);
  const [grants, bindings] = await Promise.all([
    api("GET", `/orgs/${id}/source-grants`),
    Promise.all(
      formations.map((f) =>
        api("GET", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/source`).catch((e) => {
          if (e instanceof ApiError && e.status === 404) return null;
          throw e;
        }),
      ),
    ),
  ]);
  // A form being filled in survives the refresh.
  if (box.querySelector("form.bind")) return;
  const path = (f) => `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/source`;
  const act = async (label, method, p, body) => {
    try {
      await api(method, p, body);
      say(`${label}: done.`);
      await sourcesCard(orgId, formations, box, fail);
    } catch (e) {
      fail(e);
    }
  };
  const unbind = (f) => {
    if (!confirm(`Stop capturing ${f.app_id} from its node? Captured events stay in the outbox.`)) return;
    act(`Unbind ${f.app_id}`, "DELETE", path(f));
  };
  const rows = formations.map((f, i) => {
    const b = bindings[i];
    const st = b && b.health;
    const level = !st ? "warn" : st.state === "connected" ? "ok" : st.state === "reconnecting" || st.state === "connecting" ? "warn" : "bad";
    const controls = [];
    if (can("manage")) controls.push(h("button", { type: "button", class: "bind", onclick: () => bindForm(orgId, f, b, grants.endpoints, box, () => sourcesCard(orgId, formations, box, fail), fail) }, b ? "Edit binding" : "Bind to a node"));
    if (b && can("operate")) controls.push(" ", h("button", { type: "button", class: "reconcile", onclick: () => act(`Reconcile ${f.app_id}`, "POST", `${path(f)}/reconcile`) }, "Reconcile now"));
    if (b && can("manage")) controls.push(" ", h("button", { type: "button", class: "danger unbind", onclick: () => unbind(f) }, "Unbind"));
    const refused = (st && st.refused_documents) || [];
    return h(
      "tr",
      { "data-source": f.app_id },
      h("td", {}, f.app_id),
      h("td", {}, b ? h("code", {}, b.endpoint) : h("span", { class: "muted" }, "not bound"), b ? h("div", { class: "muted" }, b.collections.join(", ")) : null),
      h("td", { class: "source-state" }, b ? stateCell(st.state, level) : "—", st && st.last_error ? h("div", { class: "muted" }, st.last_error) : null),
      h("td", {}, st && st.node_id ? h("code", {}, st.node_id) : "—", b && b.node_id ? h("div", { class: "muted" }, "pinned") : null),
      h("td", { class: "source-counts" }, st ? `${st.appended} appended, ${st.unchanged} unchanged` : "—", st && st.last_event ? h("div", { class: "muted" }, `last ${new Date(st.last_event).toLocaleTimeString()}`) : null),
      h(
        "td",
        {},
        st && st.last_reconciliation ? `${new Date(st.last_reconciliation.at).toLocaleTimeString()}: ${st.last_reconciliation.listed} listed, ${st.last_reconciliation.appended} appended` : "—",
        refused.length ? h("div", { class: "s-bad" }, `${refused.length} refused: `, refused.map((r) => `${r.collection}/${r.doc_id} (${r.reason})`).join("; ")) : null,
      ),
      controls.length ? h("td", {}, controls) : null,
    );
  });
  const heads = ["Formation", "Node endpoint", "Link", "Node id", "Captured", "Reconciliation"].concat(can("manage") || can("operate") ? [""] : []);
  box.replaceChildren(
    h("h2", {}, "Sources ", h("span", { class: "muted" }, `updated ${new Date().toLocaleTimeString()}`)),
    formations.length ? h("table", {}, h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)) : h("p", { class: "muted" }, "Create a formation first."),
    grants.endpoints.length ? h("p", { class: "muted" }, "Endpoints granted to this org: ", grants.endpoints.join(", ")) : h("p", { class: "muted" }, "No node endpoint is granted to this org yet; the gateway admin grants them, and an admin's binding grants its own."),
  );
}

function bindForm(orgId, f, current, granted, box, done, fail) {
  const endpoint = h("input", { id: "src-endpoint", required: true, list: "src-granted", value: current ? current.endpoint : granted[0] || "", placeholder: "http://127.0.0.1:50051" });
  const list = h("datalist", { id: "src-granted" }, granted.map((g) => h("option", { value: g })));
  const collections = h("input", { id: "src-collections", required: true, value: current ? current.collections.join(", ") : "", placeholder: "tracks, alerts" });
  const nodeId = h("input", { id: "src-node", value: (current && current.node_id) || "", placeholder: "optional: the node's --node-id" });
  const token = h("input", { id: "src-token", type: "password", autocomplete: "off", placeholder: current && current.token ? "kept unless replaced" : "optional" });
  const reconcile = h("input", { id: "src-reconcile", type: "number", min: "10", max: "86400", value: current ? current.reconcile_secs : 300 });
  const policy = h("select", { id: "src-policy" }, ["block", "drop-oldest"].map((p) => h("option", { value: p, selected: current && current.full_policy === p }, p)));
  const ca = h("textarea", { id: "src-ca", rows: "3", placeholder: "-----BEGIN CERTIFICATE-----" }, (current && current.tls_ca_pem) || "");
  const form = h(
    "form",
    {
      class: "bind card",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = {
          endpoint: endpoint.value.trim(),
          collections: collections.value.split(/[,\s]+/).filter(Boolean),
          reconcile_secs: Number(reconcile.value),
          full_policy: policy.value,
        };
        if (nodeId.value.trim()) body.node_id = nodeId.value.trim();
        if (token.value) body.token = token.value;
        if (ca.value.trim()) body.tls_ca_pem = ca.value.trim();
        try {
          await api("PUT", `/orgs/${encodeURIComponent(orgId)}/formations/${encodeURIComponent(f.app_id)}/source`, body);
          say(`${f.app_id} bound to ${body.endpoint}.`);
          form.remove();
          await done();
        } catch (e) {
          fail(e);
        }
      },
    },
    h("h3", {}, `Bind ${f.app_id} to its node`),
    h(
      "div",
      { class: "row" },
      h("label", { for: "src-endpoint" }, "Sidecar endpoint", endpoint, list),
      h("label", { for: "src-collections" }, "Collections", collections),
      h("label", { for: "src-node" }, "Pinned node id", nodeId),
      h("label", { for: "src-token" }, "Sidecar token", token),
      h("label", { for: "src-reconcile" }, "Reconcile every (s)", reconcile),
      h("label", { for: "src-policy" }, "When the outbox is full", policy),
    ),
    h("details", {}, h("summary", {}, "TLS (https:// endpoints)"), h("label", { for: "src-ca" }, "CA certificate (PEM)", ca)),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Save binding"), h("button", { type: "button", onclick: () => { form.remove(); done().catch(fail); } }, "Cancel")),
  );
  box.append(form);
  endpoint.focus();
}

export function formationsCard(orgId, formations, out) {
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
  // The same credentials as a QR code, for a node with a camera; shown until hidden.
  const showQr = async (f) => {
    try {
      const c = await api("GET", `/orgs/${id}/formations/${encodeURIComponent(f.app_id)}/credentials`);
      const box = h(
        "section",
        { class: "card once qr-box", role: "dialog", "aria-label": `Credentials of ${f.app_id} as a QR code` },
        h("h2", {}, `Credentials of ${f.app_id}`),
        h("p", {}, "Holds the formation secret: scan it, then hide it. The export is audited."),
        qrSvg(JSON.stringify(c), `credentials of ${f.app_id}`),
        h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: () => box.remove() }, "Hide")),
      );
      for (const old of document.querySelectorAll(".qr-box")) old.remove();
      out.replaceChildren(box);
      say(`Credentials of ${f.app_id} shown as a QR code (the export is audited).`);
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
      await nav.route();
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
              await nav.route();
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
                  ? h("td", {}, h("button", { type: "button", class: "export", onclick: () => exportCreds(f) }, "Export credentials"), " ", h("button", { type: "button", class: "show-qr", onclick: () => showQr(f) }, "QR code"), " ", h("button", { type: "button", class: "danger", onclick: () => remove(f) }, "Delete"))
                  : null,
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No formations yet."),
    form,
  );
}

