// Services: every service's golden metrics for the last minute, and one service's page with the
// last hour charted (rps, success rate, p50/p95/p99), its routes and who calls it.

import { get } from "./api.js";
import { lineChart } from "./chart.js";
import { h, ms, percent, rate, replace, section, serviceLink, table } from "./dom.js";

const WINDOW = 60;
const HOUR = 3600;
const STEP = 60;

function goldenCells(r) {
  return [r.requests, rate(r.rps), percent(r.success_rate), ms(r.p50_ms), ms(r.p95_ms), ms(r.p99_ms)];
}

const GOLDEN = ["requests", "rps", "success", "p50", "p95", "p99"];

export async function renderList(view, ctx) {
  const body = h("div");
  replace(view, h("h1", {}, "Services"), h("p", { class: "muted" }, "the last minute, from the sidecars' heartbeats"), body);
  const refresh = async () => {
    const [services, stats, sidecars] = await Promise.all([
      get("/api/v1/services", {}, ctx.signal),
      get("/api/v1/stats", { kind: "service", window: WINDOW }, ctx.signal),
      get("/api/v1/sidecars", {}, ctx.signal),
    ]);
    const byName = new Map(stats.rows.map((r) => [r.name, r]));
    const rows = services.map((svc) => {
      const key = `${svc.namespace}/${svc.name}`;
      const live = sidecars.filter((sc) => sc.live && `${sc.namespace}/${sc.service}` === key).length;
      const r = byName.get(key) || { requests: 0 };
      return [serviceLink(key), svc.mtls, live, ...goldenCells(r)];
    });
    replace(body, table(["service", "mTLS", "live sidecars", ...GOLDEN], rows, { empty: "no services yet" }));
  };
  await refresh();
  ctx.every(5, refresh);
}

function charts(series) {
  const to = Math.floor(Date.now() / 1000);
  const from = to - HOUR;
  const pick = (field) => series.points.map((p) => [p.t, p[field]]);
  return h(
    "div",
    { class: "charts" },
    lineChart({ id: "chart-rps", title: "requests per second", series: [{ name: "rps", points: pick("rps") }], from, to, format: (v) => rate(v) }),
    lineChart({
      id: "chart-success",
      title: "success rate",
      series: [{ name: "success", points: pick("success_rate") }],
      from,
      to,
      yMax: 1,
      format: (v) => `${Math.round(100 * v)}%`,
    }),
    lineChart({
      id: "chart-latency",
      title: "latency",
      series: ["p50", "p95", "p99"].map((q) => ({ name: q, points: pick(`${q}_ms`) })),
      from,
      to,
      format: (v) => ms(v),
    }),
  );
}

export async function renderService(view, ctx, key) {
  const [namespace, name] = key.split("/");
  const now = h("div");
  const chartBox = h("div");
  const routes = h("div");
  const callers = h("div");
  replace(
    view,
    h("h1", {}, "Service ", h("span", { class: "mono" }, key)),
    h("p", {}, h("a", { href: `#/tap/${key}` }, "tap its requests"), " · ", h("a", { href: `#/traces?service=${encodeURIComponent(name)}` }, "its traces")),
    section("Last minute", now),
    section("Last hour", chartBox),
    section("Routes", routes),
    section("Edges", callers),
  );
  const refresh = async () => {
    const [stats, series, routeStats, edges] = await Promise.all([
      get("/api/v1/stats", { kind: "service", window: WINDOW, namespace, name }, ctx.signal),
      get("/api/v1/stats/series", { service: key, window: HOUR, step: STEP }, ctx.signal),
      get("/api/v1/stats", { kind: "route", window: WINDOW, namespace, name }, ctx.signal),
      get("/api/v1/edges", { window: WINDOW }, ctx.signal),
    ]);
    replace(now, table(GOLDEN, stats.rows.map(goldenCells), { empty: "no requests" }));
    replace(chartBox, charts(series));
    replace(routes, table(["route", ...GOLDEN], routeStats.rows.map((r) => [r.name || "(no route)", ...goldenCells(r)]), { empty: "no requests" }));
    const mine = edges.edges.filter((e) => e.source === key || e.destination === key);
    replace(
      callers,
      table(
        ["source", "destination", "mTLS", "rps", "success", "p99"],
        mine.map((e) => [serviceLink(e.source), serviceLink(e.destination), e.mtls ? "yes" : "no", rate(e.rps), percent(e.success_rate), ms(e.p99_ms)]),
        { empty: "no calls in the last minute" },
      ),
    );
  };
  await refresh();
  ctx.every(10, refresh);
}
