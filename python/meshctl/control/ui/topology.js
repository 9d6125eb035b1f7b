// The topology: services as nodes in layers by call depth (callers left of what they call), edges
// with rps / success / p99 from the last minute, solid and locked when mTLS, dashed when plaintext;
// a node's colour says its health (success rate, and whether any sidecar of it is live).

import { get } from "./api.js";
import { dash, h, ms, percent, rate, replace, s, section, serviceLabel, serviceLink, table } from "./dom.js";

const WINDOW = 60;
const COL = 340;
const ROW = 110;
const NODE_W = 164;
const NODE_H = 50;
const MARGIN = 30;

/** The health class: down (no live sidecar), bad (< 95 % success), warn (< 99 %), ok. */
export function health(stats, live) {
  if (!live) return "down";
  const sr = stats ? stats.success_rate : null;
  if (sr === null || sr === undefined) return "ok";
  return sr < 0.95 ? "bad" : sr < 0.99 ? "warn" : "ok";
}

/** Each node's layer: the longest call chain reaching it (cycles cut after as many rounds as nodes). */
function layers(keys, edges) {
  const depth = new Map(keys.map((k) => [k, 0]));
  for (let round = 0; round < keys.length; round++) {
    let moved = false;
    for (const e of edges) {
      if (e.source === e.destination) continue;
      const want = depth.get(e.source) + 1;
      if (want > depth.get(e.destination) && want < keys.length) {
        depth.set(e.destination, want);
        moved = true;
      }
    }
    if (!moved) break;
  }
  return depth;
}

function place(keys, edges) {
  const depth = layers(keys, edges);
  const columns = [];
  for (const k of keys) (columns[depth.get(k)] ||= []).push(k);
  const tallest = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const pos = new Map();
  columns.forEach((col, i) => {
    if (!col) return;
    const offset = ((tallest - col.length) * ROW) / 2;
    col.forEach((k, j) => pos.set(k, { x: MARGIN + i * COL, y: MARGIN + offset + j * ROW }));
  });
  return { pos, width: MARGIN * 2 + (columns.length - 1) * COL + NODE_W, height: MARGIN * 2 + (tallest - 1) * ROW + NODE_H };
}

function lock(x, y) {
  return s(
    "g",
    { class: "lock", transform: `translate(${x - 5},${y - 12})` },
    s("path", { d: "M2,5 v-2 a3,3 0 0 1 6,0 v2", fill: "none" }),
    s("rect", { x: 0, y: 5, width: 10, height: 7, rx: 1 }),
  );
}

function edgeShape(e, pos) {
  const a = pos.get(e.source);
  const b = pos.get(e.destination);
  const x1 = a.x + NODE_W;
  const y1 = a.y + NODE_H / 2;
  let x2 = b.x;
  const y2 = b.y + NODE_H / 2;
  let d;
  if (b.x > a.x) {
    const mid = (x1 + x2) / 2;
    d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
  } else {
    // A call back to an earlier layer (or within one): around below.
    x2 = b.x + NODE_W / 2;
    const low = Math.max(a.y, b.y) + NODE_H + 40;
    d = `M${a.x + NODE_W / 2},${a.y + NODE_H} C${a.x + NODE_W / 2},${low} ${x2},${low} ${x2},${b.y + NODE_H}`;
  }
  const lx = b.x > a.x ? (x1 + x2) / 2 : (a.x + b.x + NODE_W) / 2;
  const ly = b.x > a.x ? (y1 + y2) / 2 - 22 : Math.max(a.y, b.y) + NODE_H + 30;
  return s(
    "g",
    { class: `edge ${e.mtls ? "mtls" : "plain"}`, dataset: { edge: `${e.source} -> ${e.destination}` } },
    s("path", { d, "marker-end": "url(#arrow)" }),
    s(
      "text",
      { class: "edge-label", x: lx, y: ly, "text-anchor": "middle" },
      s("tspan", { x: lx }, `${rate(e.rps)} · ${percent(e.success_rate)}`),
      s("tspan", { x: lx, dy: 13 }, `p99 ${ms(e.p99_ms)}`),
    ),
    e.mtls ? lock(lx, ly + 42) : s("text", { class: "plain-mark", x: lx, y: ly + 38, "text-anchor": "middle" }, "plaintext"),
    s("title", {}, `${serviceLabel(e.source)} → ${e.destination}: ${e.mtls ? "mutual TLS" : "plaintext"}, ${e.protocol}`),
  );
}

function node(key, stats, live, at) {
  // Callers from outside the mesh have no sidecar of ours to judge.
  const cls = key ? health(stats, live) : "outside";
  const [ns, name] = key ? key.split("/") : ["", "outside the mesh"];
  const line = !key ? "plaintext callers" : stats && stats.requests ? `${rate(stats.rps)} · ${percent(stats.success_rate)}` : live ? "idle" : "no live sidecar";
  const body = s(
    "g",
    { class: `node ${cls}`, transform: `translate(${at.x},${at.y})`, dataset: { service: key, health: cls } },
    s("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
    s("text", { class: "node-name", x: 10, y: 19 }, name),
    s("text", { class: "node-ns", x: NODE_W - 10, y: 19, "text-anchor": "end" }, ns),
    s("text", { class: "node-stats", x: 10, y: 38 }, line),
    s("title", {}, `${serviceLabel(key)}: ${live} live sidecar(s)`),
  );
  return key ? s("a", { href: `#/service/${key}` }, body) : body;
}

function legend() {
  return h(
    "p",
    { class: "legend-line muted" },
    h("span", { class: "dot ok" }),
    " healthy ",
    h("span", { class: "dot warn" }),
    " < 99 % success ",
    h("span", { class: "dot bad" }),
    " < 95 % ",
    h("span", { class: "dot down" }),
    " no live sidecar · solid edge with a lock: mTLS; dashed: plaintext · last minute",
  );
}

async function load(signal) {
  const [services, edges, stats, sidecars] = await Promise.all([
    get("/api/v1/services", {}, signal),
    get("/api/v1/edges", { window: WINDOW }, signal),
    get("/api/v1/stats", { kind: "service", window: WINDOW }, signal),
    get("/api/v1/sidecars", {}, signal),
  ]);
  return { services, edges: edges.edges, stats: stats.rows, sidecars };
}

export function graph({ services, edges, stats, sidecars }) {
  const keys = services.map((x) => `${x.namespace}/${x.name}`);
  for (const e of edges) for (const k of [e.source, e.destination]) if (!keys.includes(k)) keys.push(k);
  const byName = new Map(stats.map((r) => [r.name, r]));
  const live = new Map();
  for (const sc of sidecars) if (sc.live) live.set(`${sc.namespace}/${sc.service}`, (live.get(`${sc.namespace}/${sc.service}`) || 0) + 1);
  const shown = edges.filter((e) => e.destination !== "");
  const { pos, width, height } = place(keys, shown);
  return s(
    "svg",
    { id: "topology", class: "topology", viewBox: `0 0 ${width} ${height + 40}`, width, height: height + 40 },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z" }))),
    shown.map((e) => edgeShape(e, pos)),
    keys.map((k) => node(k, byName.get(k), k ? live.get(k) || 0 : 1, pos.get(k))),
  );
}

function edgeTable(edges) {
  return table(
    ["source", "destination", "protocol", "mTLS", "requests", "rps", "success", "p99"],
    edges.map((e) => [serviceLink(e.source), serviceLink(e.destination) || dash, e.protocol, e.mtls ? "yes" : "no", e.requests, rate(e.rps), percent(e.success_rate), ms(e.p99_ms)]),
    { empty: "no traffic in the last minute" },
  );
}

export async function render(view, ctx) {
  const picture = h("div", { class: "scroll" });
  const rows = h("div");
  replace(view, h("h1", {}, "Topology"), legend(), picture, section("Edges", rows));
  const refresh = async () => {
    const data = await load(ctx.signal);
    replace(picture, data.services.length ? graph(data) : h("p", { class: "muted" }, "no services yet: meshctl apply -f mesh.yaml"));
    replace(rows, edgeTable(data.edges));
  };
  await refresh();
  ctx.every(5, refresh);
}
