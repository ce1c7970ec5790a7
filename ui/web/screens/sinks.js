// Sinks of an org: live state and backlog, create (every type this build has), edit filters
// and rate cap, pause/resume, test event, stalled retry/skip, dead letters.

import { api, bytes, can, errorBox, every, h, orgTabs, page, say, secretOnce, sinkState } from "../lib.js";
import { openLive } from "../live.js";

// The fields of each sink type's form: [name, label, kind, placeholder, required].
const TYPES = {
  File: [["name", "File name", "text", "alpha-events", true]],
  Nats: [
    ["subject_prefix", "Subject prefix", "text", "peat.cdc", true],
    ["url", "Server URL", "text", "nats://hub:4222 (default: PEAT_CDC_NATS_URL)"],
    ["stream", "JetStream stream", "text", "optional"],
    ["tls_ca_pem", "CA certificate (PEM)", "pem"],
    ["creds", "Credentials file (.creds)", "secret-area"],
    ["nkey_seed", "NKey seed", "secret"],
  ],
  Mqtt: [
    ["url", "Broker URL", "text", "mqtt://user:pass@broker:1883", true],
    ["topic_prefix", "Topic prefix", "text", "peat/cdc", true],
    ["tls_ca_pem", "CA certificate (PEM)", "pem"],
  ],
  Webhook: [
    ["url", "Endpoint URL", "text", "https://ingest.example/peat", true],
    ["allow_private", "Allow link-local and metadata addresses", "bool"],
    ["tls_ca_pem", "CA certificate (PEM)", "pem"],
  ],
  RedisStreams: [
    ["url", "Redis URL", "text", "redis://redis:6379/0", true],
    ["stream", "Stream", "text", "peat:{org}:{app}", true],
    ["maxlen", "Trim to about (entries)", "number", "optional"],
    ["tls_ca_pem", "CA certificate (PEM)", "pem"],
  ],
  Kafka: [
    ["topic", "Topic", "text", "peat-cdc", true],
    ["brokers", "Brokers", "text", "host:9092,host2:9092 (default: PEAT_CDC_KAFKA_BROKERS)"],
    ["tls", "TLS", "bool"],
    ["tls_ca_pem", "CA certificate (PEM)", "pem"],
    ["sasl_mechanism", "SASL mechanism", "choice", ["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]],
    ["sasl_username", "SASL user", "text", "optional"],
    ["sasl_password", "SASL password", "secret"],
    ["compression", "Compression", "choice", ["", "gzip", "snappy"]],
  ],
};

// Sink types whose protocol carries CloudEvents binary mode (attributes in headers or MQTT 5
// user properties).
const BINARY = ["Nats", "Kafka", "Mqtt"];

const list = (s) => s.split(/[,\s]+/).filter(Boolean);

export async function sinks(orgId) {
  const id = encodeURIComponent(orgId);
  const [about, formations] = await Promise.all([api("GET", "/about"), api("GET", `/orgs/${id}/formations`)]);
  const out = h("div", {});
  const fail = (e) => out.replaceChildren(errorBox(e));
  const box = h("section", { class: "card scroll", id: "sinks", "aria-label": "Sinks" }, h("h2", {}, "Sinks"), h("p", { class: "muted" }, "Loading…"));
  const detail = h("div", { id: "sink-detail" });
  let drawing = null;
  const draw = () => {
    // Events arriving together redraw once.
    if (!drawing) drawing = drawSinks(orgId, box, detail, formations, fail).finally(() => (drawing = null));
    return drawing;
  };
  const badge = openLive(orgId, { sink: () => draw().catch(fail) });
  page(
    `Sinks of ${orgId}`,
    orgTabs(orgId, "sinks"),
    h("p", { class: "muted" }, "State changes arrive live ", badge, "; backlog figures refresh every 3 s while this screen is shown."),
    out,
    box,
    detail,
    can("manage") ? createForm(orgId, about.sink_types || Object.keys(TYPES), formations, draw, fail, (about.features || []).includes("mqtt5")) : null,
  );
  await draw();
  every(3000, draw, fail);
}

async function drawSinks(orgId, box, detail, formations, fail) {
  const id = encodeURIComponent(orgId);
  const defs = await api("GET", `/orgs/${id}/sinks`);
  const states = await Promise.all(defs.map((s) => api("GET", `/orgs/${id}/sinks/${encodeURIComponent(s.sink_id)}/status`).catch((e) => ({ state: "unknown", last_error: e.message }))));
  const redraw = () => drawSinks(orgId, box, detail, formations, fail);
  const act = async (label, method, path, body) => {
    try {
      const r = await api(method, path, body);
      say(`${label}: done${r && r.outcome ? ` (${r.outcome})` : ""}.`);
      await redraw();
    } catch (e) {
      fail(e);
    }
  };
  const rows = defs.map((s, i) => {
    const st = states[i];
    const path = `/orgs/${id}/sinks/${encodeURIComponent(s.sink_id)}`;
    const kind = Object.keys(s.sink_type)[0];
    const controls = [];
    if (can("operate")) {
      controls.push(
        s.enabled
          ? h("button", { type: "button", class: "pause", onclick: () => act(`Pause ${s.sink_id}`, "PATCH", path, { enabled: false }) }, "Pause")
          : h("button", { type: "button", class: "resume", onclick: () => act(`Resume ${s.sink_id}`, "PATCH", path, { enabled: true }) }, "Resume"),
        " ",
        h("button", { type: "button", class: "test", onclick: () => act(`Test event to ${s.sink_id}`, "POST", `${path}/test`) }, "Send test event"),
      );
      if (st.state === "stalled") {
        controls.push(
          " ",
          h("button", { type: "button", class: "retry", onclick: () => act(`Retry ${s.sink_id}`, "POST", `${path}/retry`) }, "Retry refused event"),
          " ",
          h("button", { type: "button", class: "skip-event", onclick: () => confirm(`Park the refused event of ${s.sink_id} as a dead letter and go on?`) && act(`Skip on ${s.sink_id}`, "POST", `${path}/skip`) }, "Skip it"),
        );
      }
    }
    controls.push(" ", h("button", { type: "button", class: "view details", onclick: () => showDetail(orgId, s, detail, formations, redraw, fail) }, can("manage") ? "Details and edit" : "Details"));
    if (can("manage")) {
      controls.push(
        " ",
        h("button", {
          type: "button",
          class: "danger delete",
          onclick: () => confirm(`Delete sink ${s.sink_id}? Its cursor and dead letters go with it; undelivered events stay for other sinks.`) && act(`Delete ${s.sink_id}`, "DELETE", path),
        }, "Delete"),
      );
    }
    const eta = st.drain_eta_seconds ? `, drains in ~${Math.ceil(st.drain_eta_seconds)} s` : "";
    const rate = st.rate_events_per_sec ? h("div", { class: "muted" }, `${st.rate_events_per_sec.toFixed(1)} events/s`) : null;
    return h(
      "tr",
      { "data-sink": s.sink_id },
      h("td", {}, s.sink_id, h("div", { class: "muted" }, kind, st.target ? ` → ${st.target}` : "")),
      h("td", { class: "sink-state" }, sinkState(st)),
      h("td", { class: "sink-backlog" }, `${st.backlog_events ?? "—"} events, ${bytes(st.backlog_bytes)}${eta}`, rate),
      h("td", { class: "sink-delivered" }, st.delivered ?? "—", st.dead_lettered ? h("div", { class: "s-bad" }, `${st.dead_lettered} dead-lettered`) : null),
      h("td", {}, controls),
    );
  });
  const heads = ["Sink", "State", "Backlog", "Delivered", ""];
  box.replaceChildren(
    h("h2", {}, "Sinks ", h("span", { class: "muted" }, `updated ${new Date().toLocaleTimeString()}`)),
    defs.length ? h("table", {}, h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)) : h("p", { class: "muted" }, "No sinks yet."),
  );
}

// One sink: its definition, filters and rate cap (editable by an org-admin), and its dead letters.
async function showDetail(orgId, s, detail, formations, redraw, fail) {
  const id = encodeURIComponent(orgId);
  const path = `/orgs/${id}/sinks/${encodeURIComponent(s.sink_id)}`;
  const dead = await api("GET", `${path}/dead-letters`).catch((e) => {
    fail(e);
    return { dead_letters: [] };
  });
  const kind = Object.keys(s.sink_type)[0];
  const spec = Object.entries(s.sink_type[kind]).filter(([, v]) => v !== null && v !== undefined && v !== "");
  const apps = h("input", { id: "edit-formations", value: s.formations.join(", "), list: "edit-apps", placeholder: "every formation" });
  const appList = h("datalist", { id: "edit-apps" }, formations.map((f) => h("option", { value: f.app_id })));
  const cols = h("input", { id: "edit-collections", value: s.collections.join(", "), placeholder: "every collection" });
  const cap = h("input", { id: "edit-rate", type: "number", min: "0", value: s.rate_limit_bytes_per_sec });
  const close = h("button", { type: "button", class: "view", onclick: () => detail.replaceChildren() }, "Close");
  const edit = can("manage")
    ? h(
        "form",
        {
          class: "row edit",
          onsubmit: async (ev) => {
            ev.preventDefault();
            try {
              const next = await api("PATCH", path, { formations: list(apps.value), collections: list(cols.value), rate_limit_bytes_per_sec: Number(cap.value || 0) });
              say(`${s.sink_id} updated.`);
              await redraw();
              await showDetail(orgId, next, detail, formations, redraw, fail);
            } catch (e) {
              fail(e);
            }
          },
        },
        h("label", { for: "edit-formations" }, "Formations (empty: all)", apps, appList),
        h("label", { for: "edit-collections" }, "Collections (empty: all)", cols),
        h("label", { for: "edit-rate" }, "Rate cap (bytes/s, 0: none)", cap),
        h("button", { type: "submit", class: "primary" }, "Save filters"),
      )
    : h("dl", {}, h("dt", {}, "formations"), h("dd", {}, s.formations.join(", ") || "all"), h("dt", {}, "collections"), h("dd", {}, s.collections.join(", ") || "all"), h("dt", {}, "rate cap"), h("dd", {}, s.rate_limit_bytes_per_sec ? `${bytes(s.rate_limit_bytes_per_sec)}/s` : "none"));
  const letters = dead.dead_letters || [];
  const deadActions =
    can("operate") && letters.length
      ? h(
          "div",
          { class: "row" },
          h("button", {
            type: "button",
            class: "primary replay",
            onclick: async () => {
              try {
                const r = await api("POST", `${path}/dead-letters`, { action: "retry" });
                say(`Dead letters of ${s.sink_id} replayed: ${r.delivered} delivered, ${r.still_parked} still parked.`);
                await redraw();
                await showDetail(orgId, s, detail, formations, redraw, fail);
              } catch (e) {
                fail(e);
              }
            },
          }, `Replay ${letters.length}`),
          h("button", {
            type: "button",
            class: "danger discard",
            onclick: async () => {
              if (!confirm(`Discard the ${letters.length} dead letters of ${s.sink_id}? They are not delivered anywhere.`)) return;
              try {
                await api("POST", `${path}/dead-letters`, { action: "discard" });
                say(`Dead letters of ${s.sink_id} discarded.`);
                await showDetail(orgId, s, detail, formations, redraw, fail);
              } catch (e) {
                fail(e);
              }
            },
          }, "Discard all"),
        )
      : null;
  detail.replaceChildren(
    h(
      "section",
      { class: "card scroll", "aria-label": `Sink ${s.sink_id}` },
      h("h2", {}, `Sink ${s.sink_id} `, h("span", { class: "muted" }, kind)),
      h("dl", {}, spec.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "string" && v.length > 80 ? `${v.slice(0, 60)}…` : String(v))]), h("dt", {}, "starts at"), h("dd", {}, s.start), h("dt", {}, "CloudEvents mode"), h("dd", {}, s.content_mode)),
      h("h3", {}, "Filters and rate cap"),
      edit,
      h("h3", {}, `Dead letters (${letters.length})`),
      letters.length
        ? h(
            "table",
            { id: "dead-letters" },
            h("thead", {}, h("tr", {}, ["LSN", "Parked", "Reason", "Event"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, letters.slice(0, 100).map((d) => h("tr", {}, h("td", {}, d.lsn), h("td", {}, new Date(d.parked_at).toLocaleString()), h("td", {}, d.reason), h("td", {}, h("code", {}, d.event.subject || d.event.id))))),
          )
        : h("p", { class: "muted" }, "None."),
      deadActions,
      close,
    ),
  );
  detail.scrollIntoView({ block: "nearest" });
}

function field([name, label, kind, extra, required]) {
  const fid = `sink-${name}`;
  let input;
  if (kind === "bool") input = h("input", { id: fid, name, type: "checkbox" });
  else if (kind === "pem" || kind === "secret-area") input = h("textarea", { id: fid, name, rows: "3", placeholder: kind === "pem" ? "-----BEGIN CERTIFICATE-----" : "sealed, never shown again" });
  else if (kind === "choice") input = h("select", { id: fid, name }, extra.map((c) => h("option", { value: c }, c || "none")));
  else input = h("input", { id: fid, name, type: kind === "secret" ? "password" : kind === "number" ? "number" : "text", placeholder: kind === "secret" ? "sealed, never shown again" : extra, required, autocomplete: "off" });
  return h("label", { for: fid, class: kind === "bool" ? "check" : null }, label, input);
}

function createForm(orgId, types, formations, redraw, fail, mqtt5) {
  const offered = types.filter((t) => TYPES[t]);
  const kind = h("select", { id: "sink-kind" }, offered.map((t) => h("option", { value: t }, t)));
  const fields = h("div", { class: "row" });
  const apps = h("input", { id: "sink-formations", list: "sink-apps", placeholder: "every formation" });
  const appList = h("datalist", { id: "sink-apps" }, formations.map((f) => h("option", { value: f.app_id })));
  const cols = h("input", { id: "sink-collections", placeholder: "every collection" });
  const cap = h("input", { id: "sink-rate", type: "number", min: "0", value: "0" });
  const start = h("select", { id: "sink-start" }, h("option", { value: "earliest" }, "everything the outbox holds"), h("option", { value: "latest" }, "new events only"));
  const batched = h("option", { value: "batched" }, "batched: a message per batch, a JSON array of CloudEvents");
  const mode = h("select", { id: "sink-mode" }, h("option", { value: "structured" }, "structured: the CloudEvent as JSON"), h("option", { value: "binary" }, "binary: the document, attributes in headers"), batched);
  const modeLabel = h("label", { for: "sink-mode" }, "CloudEvents mode", mode);
  const fill = () => {
    fields.replaceChildren(...TYPES[kind.value].map(field));
    // Only NATS, Kafka and MQTT 5 (a build with it) carry the attributes apart from the body.
    const headers = BINARY.includes(kind.value) && (kind.value !== "Mqtt" || mqtt5);
    modeLabel.hidden = !headers;
    // Batched is a NATS mode (a webhook posts batches already).
    batched.hidden = kind.value !== "Nats";
    if (!headers || (batched.hidden && mode.value === "batched")) mode.value = "structured";
  };
  kind.addEventListener("change", fill);
  fill();
  const out = h("div", {});
  const form = h(
    "form",
    {
      class: "card create-sink",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const spec = {};
        for (const [name, , type] of TYPES[kind.value]) {
          const el = form.querySelector(`#sink-${name}`);
          if (type === "bool") spec[name] = el.checked;
          else if (el.value.trim() === "") continue;
          else spec[name] = type === "number" ? Number(el.value) : el.value.trim();
        }
        const body = { sink_type: { [kind.value]: spec }, formations: list(apps.value), collections: list(cols.value), rate_limit_bytes_per_sec: Number(cap.value || 0), start: start.value, content_mode: mode.value };
        try {
          const made = await api("POST", `/orgs/${encodeURIComponent(orgId)}/sinks`, body);
          say(`Sink ${made.sink_id} created.`);
          form.reset();
          fill();
          out.replaceChildren(made.signing_secret ? secretOnce("Webhook signing secret", made.signing_secret, `${made.sink_id} signs each request with it`) : "");
          await redraw();
        } catch (e) {
          fail(e);
        }
      },
    },
    h("h2", {}, "New sink"),
    h("div", { class: "row" }, h("label", { for: "sink-kind" }, "Type", kind)),
    fields,
    h(
      "div",
      { class: "row" },
      h("label", { for: "sink-formations" }, "Formations (empty: all)", apps, appList),
      h("label", { for: "sink-collections" }, "Collections (empty: all)", cols),
      h("label", { for: "sink-rate" }, "Rate cap (bytes/s, 0: none)", cap),
      h("label", { for: "sink-start" }, "Starts with", start),
      modeLabel,
    ),
    h("button", { type: "submit", class: "primary" }, "Create sink"),
    out,
  );
  return form;
}
