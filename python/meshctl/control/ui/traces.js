// Traces from the built-in trace store: a filtered list (slow and failed ones), and one trace's
// waterfall: its spans as a tree in time, coloured by service, red when failed; a click on a span
// shows its attributes.

import { get } from "./api.js";
import { h, ms, replace, s, section, table, when } from "./dom.js";

const ROW = 24;
const LABEL = 320;
const AXIS = 24;
/** Room right of the bars for the longest one's duration. */
const TAIL = 64;

function filters(query, onChange) {
  const field = (name, attrs) => h("label", {}, `${name} `, h("input", { name, ...attrs }));
  const form = h(
    "form",
    { class: "inline", id: "trace-filters" },
    field("service", { value: query.service || "", placeholder: "any", size: 14 }),
    field("minDuration", { type: "number", min: 0, value: query.minDuration || "", placeholder: "ms", size: 6 }),
    h("label", {}, h("input", { type: "checkbox", name: "error", checked: query.error === "true" }), " errors only"),
    field("limit", { type: "number", min: 1, max: 1000, value: query.limit || 50, size: 5 }),
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    onChange({
      service: data.get("service").trim(),
      minDuration: data.get("minDuration"),
      error: data.get("error") ? "true" : "",
      limit: data.get("limit"),
    });
  });
  return form;
}

export async function renderList(view, ctx) {
  const query = ctx.query;
  const body = h("div");
  replace(
    view,
    h("h1", {}, "Traces"),
    filters(query, (q) => {
      location.hash = `#/traces?${new URLSearchParams(Object.entries(q).filter(([, v]) => v)).toString()}`;
    }),
    body,
  );
  const refresh = async () => {
    const { traces } = await get("/api/v1/traces", query, ctx.signal);
    replace(
      body,
      table(
        ["start", "root", "duration", "spans", "errors", "services", "trace id"],
        traces.map((t) => [
          when(t.start),
          `${t.root_service}: ${t.root_name}`,
          ms(t.duration_ms),
          t.span_count,
          t.error_count ? h("span", { class: "badge bad" }, t.error_count) : "0",
          t.services.join(", "),
          h("a", { class: "mono", href: `#/trace/${t.trace_id}` }, t.trace_id.slice(0, 16)),
        ]),
        {
          empty: "no traces match",
          rowAttrs: (i) => ({ dataset: { trace: traces[i].trace_id } }),
          onRow: (i) => (location.hash = `#/trace/${traces[i].trace_id}`),
        },
      ),
    );
  };
  await refresh();
  ctx.every(10, refresh);
}

/** Spans in tree order (each after its parent, siblings by start) with their depth. */
export function ordered(spans) {
  const ids = new Set(spans.map((x) => x.span_id));
  const children = new Map();
  for (const sp of spans) {
    const parent = sp.parent_span_id && ids.has(sp.parent_span_id) ? sp.parent_span_id : "";
    (children.get(parent) || children.set(parent, []).get(parent)).push(sp);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const sp of (children.get(parent) || []).sort((a, b) => a.start_ms - b.start_ms)) {
      out.push([sp, depth]);
      walk(sp.span_id, depth + 1);
    }
  };
  walk("", 0);
  return out;
}

function waterfall(spans, width, onPick) {
  const rows = ordered(spans);
  const services = [...new Set(spans.map((x) => x.service))];
  const total = Math.max(0.001, ...spans.map((x) => x.start_ms + x.duration_ms));
  const area = Math.max(200, width - LABEL - TAIL - 8);
  const x = (t) => LABEL + (t / total) * area;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    s("g", {}, s("line", { class: "grid", x1: x(f * total), x2: x(f * total), y1: AXIS - 4, y2: AXIS + rows.length * ROW }), s("text", { class: "tick", x: x(f * total), y: 14, "text-anchor": f === 1 ? "end" : f ? "middle" : "start" }, ms(f * total))),
  );
  const bars = rows.map(([sp, depth], i) => {
    const y = AXIS + i * ROW;
    const cls = `span svc-${services.indexOf(sp.service) % 8}${sp.status === "error" ? " err" : ""}`;
    return s(
      "g",
      { class: cls, dataset: { span: sp.span_id }, onclick: () => onPick(sp) },
      s("rect", { class: "row-bg", x: 0, y, width: LABEL + area + TAIL, height: ROW }),
      s("text", { class: "span-label", x: 6 + depth * 14, y: y + 16 }, s("tspan", { class: "span-service" }, sp.service), ` ${sp.name}`),
      s("rect", { class: "bar", x: x(sp.start_ms), y: y + 5, width: Math.max(2, x(sp.start_ms + sp.duration_ms) - x(sp.start_ms)), height: ROW - 10, rx: 2 }),
      s("text", { class: "span-ms", x: x(sp.start_ms + sp.duration_ms) + 4, y: y + 16 }, ms(sp.duration_ms)),
    );
  });
  const height = AXIS + rows.length * ROW + 4;
  const full = LABEL + area + TAIL;
  return s("svg", { id: "waterfall", class: "waterfall", viewBox: `0 0 ${full} ${height}`, width: full, height }, ticks, bars);
}

function details(sp) {
  const attrs = Object.entries(sp.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  return [
    h("h3", {}, `${sp.service}: ${sp.name}`),
    table(
      ["field", "value"],
      [
        ["span id", h("span", { class: "mono" }, sp.span_id)],
        ["parent", h("span", { class: "mono" }, sp.parent_span_id || "(root)")],
        ["kind", sp.kind],
        ["status", sp.status],
        ["start", `+${ms(sp.start_ms)}`],
        ["duration", ms(sp.duration_ms)],
        ...attrs.map(([k, v]) => [h("span", { class: "mono" }, k), typeof v === "string" ? v : JSON.stringify(v)]),
      ],
    ),
  ];
}

export async function renderTrace(view, ctx, traceId) {
  const trace = await get(`/api/v1/traces/${encodeURIComponent(traceId)}`, {}, ctx.signal);
  const info = h("div", { id: "span-details" }, h("p", { class: "muted" }, "click a span for its attributes"));
  const errors = trace.spans.filter((x) => x.status === "error").length;
  const services = new Set(trace.spans.map((x) => x.service));
  const total = Math.max(0, ...trace.spans.map((x) => x.start_ms + x.duration_ms));
  const box = h("div", { class: "scroll" });
  replace(
    view,
    h("h1", {}, "Trace ", h("span", { class: "mono" }, trace.trace_id)),
    h("p", {}, h("a", { href: "#/traces" }, "← all traces"), ` · ${trace.spans.length} spans · ${services.size} services · ${ms(total)}`, errors ? h("span", { class: "badge bad" }, `${errors} failed`) : null),
    box,
    section("Span", info),
  );
  box.append(waterfall(trace.spans, box.clientWidth || 1000, (sp) => replace(info, ...details(sp))));
}
