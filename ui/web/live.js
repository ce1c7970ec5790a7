// The org's server-sent event stream, read with fetch (EventSource cannot send the bearer
// token). Resumes with Last-Event-ID after a drop and says when it has gone quiet.

import { authHeader, h } from "./lib.js";

// The server sends a keep-alive every 15 s; twice that without a byte means the link is stale.
const STALE_MS = 35000;

let current = null;

// Stops the stream of the previous screen; called on every route change.
export function stopLive() {
  if (current) current.stop();
  current = null;
}

// Opens `/orgs/{org}/events/stream` and calls `on[event](data, id)` per event. Returns the
// indicator element that shows the stream's state.
export function openLive(orgId, on) {
  stopLive();
  const badge = h("span", { class: "livebadge", role: "status", "aria-live": "polite" }, "connecting…");
  const ctl = new AbortController();
  let lastId = null;
  let lastByte = Date.now();
  let stopped = false;
  let delay = 1000;
  const show = (text, level) => {
    badge.textContent = text;
    badge.className = `livebadge s-${level}`;
  };
  const watchdog = setInterval(() => {
    const quiet = Date.now() - lastByte;
    if (quiet > STALE_MS) show(`stale: no word for ${Math.round(quiet / 1000)} s`, "bad");
  }, 5000);
  const dispatch = (block) => {
    let event = "message";
    let id = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (id !== null) lastId = id;
    if (!data.length) return;
    let parsed = data.join("\n");
    try {
      parsed = JSON.parse(parsed);
    } catch {
      // Not JSON: handed over as text.
    }
    const fn = on[event];
    if (fn) fn(parsed, id);
  };
  const run = async () => {
    while (!stopped) {
      const headers = { Accept: "text/event-stream", ...authHeader() };
      if (lastId) headers["Last-Event-ID"] = lastId;
      try {
        const res = await fetch(`/orgs/${encodeURIComponent(orgId)}/events/stream`, { headers, signal: ctl.signal, cache: "no-store", credentials: "omit" });
        if (!res.ok) {
          let reason = `HTTP ${res.status}`;
          try {
            const j = await res.json();
            reason = `${j.error.code}: ${j.error.message}`;
          } catch {
            // The status alone says it.
          }
          throw new Error(reason);
        }
        show(lastId ? "live (resumed)" : "live", "ok");
        delay = 1000;
        lastByte = Date.now();
        const reader = res.body.getReader();
        const text = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          lastByte = Date.now();
          if (badge.classList.contains("s-bad")) show("live", "ok");
          buf += text.decode(value, { stream: true });
          let cut;
          while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
            dispatch(block);
          }
        }
        if (!stopped) show("reconnecting: the stream ended", "warn");
      } catch (e) {
        if (stopped) return;
        show(`reconnecting: ${e.message}`, "warn");
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  };
  current = {
    stop() {
      stopped = true;
      clearInterval(watchdog);
      ctl.abort();
    },
  };
  run();
  return badge;
}
