// Live tap (`meshctl tap`): request metadata streamed from every live sidecar of a service for a
// few seconds (NDJSON through fetch streaming). The API answers it for the admin token only.

import { ApiError, lines } from "./api.js";
import { dash, clock, h, ms, replace, table } from "./dom.js";

/** The newest events shown; older ones scroll away. */
const KEEP = 500;

function row(ev) {
  const status = ev.status >= 500 ? "bad" : ev.status >= 400 ? "warn" : "ok";
  return [
    clock(new Date(ev.ts * 1000)),
    ev.direction,
    h("span", { class: "mono" }, ev.source || ev.client),
    ev.method,
    ev.authority,
    h("span", { class: "mono" }, ev.path),
    h("span", { class: `badge ${status}` }, ev.grpc_status === null || ev.grpc_status === undefined ? ev.status : `${ev.status} / grpc ${ev.grpc_status}`),
    ms(ev.duration_ms),
    ev.trace_id ? h("a", { class: "mono", href: `#/trace/${ev.trace_id}` }, ev.trace_id.slice(0, 16)) : dash,
    (ev.flags || []).join(",") || dash,
  ];
}

const COLUMNS = ["time", "direction", "caller", "method", "authority", "path", "status", "duration", "trace", "flags"];

export async function render(view, ctx, key) {
  const note = h("p", { class: "muted", id: "tap-note" }, "pick a service and start: events stream for the seconds asked, then stop");
  const body = h("div", { class: "scroll tall" }, table(COLUMNS, []));
  const input = (name, attrs) => h("label", {}, `${name} `, h("input", { name, ...attrs }));
  const form = h(
    "form",
    { class: "inline", id: "tap-form" },
    input("service", { value: key || "", placeholder: "namespace/name", required: true, size: 20 }),
    input("method", { placeholder: "any", size: 6 }),
    input("path", { placeholder: "prefix", size: 12 }),
    input("status", { type: "number", min: 100, max: 599, size: 4 }),
    input("seconds", { type: "number", min: 1, max: 300, value: 30, size: 4 }),
    h("button", { type: "submit" }, "Start"),
    h("button", { type: "button", id: "tap-stop", onclick: () => running && running.abort() }, "Stop"),
  );
  let running = null;
  const events = [];
  const draw = () => replace(body, table(COLUMNS, events.map(row), { empty: "no requests yet" }));

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (running) running.abort();
    const data = new FormData(form);
    const [namespace, name] = String(data.get("service")).includes("/") ? String(data.get("service")).split("/") : ["default", data.get("service")];
    const params = { method: data.get("method"), path: data.get("path"), status: data.get("status"), seconds: data.get("seconds") };
    const stop = new AbortController();
    running = stop;
    ctx.signal.addEventListener("abort", () => stop.abort());
    events.length = 0;
    draw();
    replace(note, `tapping ${namespace}/${name} ...`);
    ctx.guard(
      (async () => {
        try {
          let pending = false;
          for await (const event of lines(`/api/v1/tap/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`, params, stop.signal)) {
            events.unshift(event);
            events.length = Math.min(events.length, KEEP);
            // One redraw per frame however fast events come.
            if (!pending) {
              pending = true;
              requestAnimationFrame(() => {
                pending = false;
                draw();
              });
            }
          }
          replace(note, `the tap ended: ${events.length} events (start again for more)`);
        } catch (e) {
          if (e instanceof ApiError && e.status === 403) {
            replace(note, h("span", { class: "error-text" }, "Tap needs the admin token: this session's token is read-only. Log in with the admin token to tap."));
          } else if (e instanceof ApiError) {
            replace(note, h("span", { class: "error-text" }, e.detail));
          } else if (e.name === "AbortError") {
            replace(note, `stopped: ${events.length} events`);
          } else {
            throw e;
          }
        } finally {
          if (running === stop) running = null;
          draw();
        }
      })(),
    );
  });
  replace(view, h("h1", {}, "Tap"), h("p", { class: "muted" }, "needs the admin token; headers outside an allow-list are never shown"), form, note, body);
}
