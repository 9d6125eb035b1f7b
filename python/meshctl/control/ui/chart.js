// Time-series line charts in SVG: a time axis, a y axis from zero with round ticks, one path per
// series (a missing value breaks its line), and a legend.

import { s } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { left: 58, right: 14, top: 28, bottom: 26 };

/** A round step so that `max` spans about `n` ticks. */
function step(max, n = 4) {
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function hhmm(t) {
  const d = new Date(t * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** The path for one series: a value of null ends a run. */
function pathOf(points, x, y) {
  let d = "";
  let open = false;
  for (const [t, v] of points) {
    if (!present(v)) {
      open = false;
      continue;
    }
    d += `${open ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
    open = true;
  }
  return d.trim();
}

function present(v) {
  return v !== null && v !== undefined && !Number.isNaN(v);
}

/** Points with no neighbour to draw a line to, drawn as dots so they show at all. */
function lonePoints(points, x, y, cls) {
  return points
    .filter(([, v], i) => present(v) && !present(points[i - 1]?.[1]) && !present(points[i + 1]?.[1]))
    .map(([t, v]) => s("circle", { class: `dot-point ${cls}`, cx: x(t), cy: y(v), r: 3 }));
}

/**
 * series: [{name, points: [[unix seconds, value or null], ...]}]; from/to: the time range shown;
 * format(v): a y tick's label; yMax: a fixed top (e.g. 1 for a ratio), else from the data.
 */
export function lineChart({ title, series, from, to, format = String, yMax, id }) {
  const values = series.flatMap((x) => x.points.map((p) => p[1])).filter(present);
  const top = yMax ?? (values.length ? Math.max(...values) : 0);
  const tick = step(top > 0 ? top : 1);
  const ceiling = yMax ?? Math.max(tick, Math.ceil((top > 0 ? top : 1) / tick) * tick);
  const x = (t) => PAD.left + ((t - from) / Math.max(1, to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / ceiling) * (H - PAD.top - PAD.bottom);

  const grid = [];
  for (let v = 0; v <= ceiling + 1e-9; v += yMax ? ceiling / 4 : tick) {
    grid.push(s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    grid.push(s("text", { class: "tick", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const span = to - from;
  const every = span > 7200 ? 1800 : span > 1800 ? 600 : span > 600 ? 300 : 60;
  for (let t = Math.ceil(from / every) * every; t <= to; t += every) {
    grid.push(s("text", { class: "tick", x: x(t), y: H - 8, "text-anchor": "middle" }, hhmm(t)));
  }
  const lines = series.map((one, i) => [
    s("path", { class: `series series-${i}`, d: pathOf(one.points, x, y), dataset: { series: one.name } }),
    lonePoints(one.points, x, y, `series-${i}`),
  ]);
  const legend = series.map((one, i) =>
    s(
      "g",
      { transform: `translate(${W - PAD.right - 70 * (series.length - i)},10)` },
      s("rect", { class: `swatch series-${i}`, x: 0, y: -7, width: 10, height: 10 }),
      s("text", { class: "legend", x: 14, y: 2 }, one.name),
    ),
  );
  return s(
    "svg",
    { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, id },
    s("text", { class: "chart-title", x: PAD.left, y: 14 }, title),
    s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top - 4, y2: H - PAD.bottom }),
    grid,
    lines,
    legend,
    values.length ? null : s("text", { class: "muted", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no requests"),
  );
}
