// Shared by every screen: the session, the API client, DOM helpers and the screen timer.

const KEY = "peat-gateway.token";
// Stored in place of a token when the browser's client certificate is the sign-in.
export const CERT = "client-certificate";

// The caller as /whoami states it; asked again after every sign-in or reload.
export const session = {
  who: null,
  token: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  forget() {
    sessionStorage.removeItem(KEY);
    this.who = null;
  },
};

// The bearer header for the stored token; none when the client certificate signs in.
export function authHeader() {
  const token = session.token();
  return token && token !== CERT ? { Authorization: `Bearer ${token}` } : {};
}

// Whether the caller may do what `need` names (the API decides; this only hides controls).
export function can(need) {
  const who = session.who;
  if (!who) return false;
  if (who.kind === "admin") return true;
  const roles = { read: ["org-admin", "operator", "viewer"], operate: ["org-admin", "operator"], manage: ["org-admin"], gateway: [] };
  return (roles[need] || []).includes(who.role);
}
export const main = document.getElementById("main");
const live = document.getElementById("live");

// Set by the shell: renders the current screen again.
export const nav = { route: async () => {} };

// ---- API -------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Changes in flight: the header says "Working…" while one takes longer than a moment.
let changing = 0;
const busy = document.getElementById("busy");

export async function api(method, path, body) {
  if (method === "GET") return request(method, path, body);
  changing += 1;
  const shown = setTimeout(() => {
    if (changing > 0) busy.hidden = false;
  }, 300);
  try {
    return await request(method, path, body);
  } finally {
    changing -= 1;
    clearTimeout(shown);
    if (changing === 0) busy.hidden = true;
  }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  Object.assign(headers, authHeader());
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

export function h(tag, attrs = {}, ...children) {
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

export function errorBox(e) {
  const code = e instanceof ApiError ? e.code : "error";
  const status = e instanceof ApiError && e.status ? ` (HTTP ${e.status})` : "";
  return h("div", { class: "error", role: "alert" }, h("code", {}, code), status, ": ", e.message);
}

export function bytes(n) {
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

export function stateCell(text, level) {
  return h("span", { class: `state s-${level}` }, text);
}

export function dl(pairs) {
  return h("dl", {}, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function page(title, ...children) {
  main.replaceChildren(h("h1", {}, title), ...children.flat().filter((c) => c !== null && c !== undefined));
  // A refresh of the same screen leaves the keyboard focus where the operator put it.
  if (main.dataset.title !== title) main.focus({ preventScroll: true });
  main.dataset.title = title;
}


export function say(text) {
  live.textContent = text;
}

// The screen's refresh timer; cleared on every route change so screens never poll in the background.
let timer = null;
export function every(ms, fn, fail) {
  clearInterval(timer);
  timer = setInterval(() => {
    if (document.visibilityState === "visible") fn().catch(fail);
  }, ms);
}
export function stopTimer() {
  clearInterval(timer);
  timer = null;
}

export function secretOnce(title, secret, what) {
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


export function orgTabs(orgId, current) {
  const id = encodeURIComponent(orgId);
  const tabs = [
    ["formations", `#/orgs/${id}`, "Formations and sources"],
    ["sinks", `#/orgs/${id}/sinks`, "Sinks"],
    ["enrollment", `#/orgs/${id}/enrollment`, "Enrollment"],
    ["identity", `#/orgs/${id}/identity`, "Identity"],
  ];
  if (can("manage")) tabs.push(["tokens", `#/orgs/${id}/tokens`, "API tokens"], ["audit", `#/orgs/${id}/audit`, "Audit"]);
  return h("nav", { class: "tabs", "aria-label": "Org screens" }, tabs.map(([k, href, label]) => h("a", { href, "aria-current": k === current ? "page" : null }, label)));
}


export function sinkState(st) {
  const s = String(st.state || "unknown").toLowerCase();
  const level = s === "delivering" || s === "idle" ? "ok" : s === "stalled" || s === "unknown" ? "bad" : "warn";
  return h("span", {}, stateCell(s, level), st.last_error ? ` — ${st.last_error}` : "");
}

