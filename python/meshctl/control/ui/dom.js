// Building the page: elements (HTML and SVG) from plain calls, tables, and how numbers read.
// Nothing here sets a `style` attribute: the Content-Security-Policy forbids inline styles.

const SVG = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/x", class: "y"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, as h. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

export function replace(el, ...children) {
  el.replaceChildren();
  return build(el, {}, children);
}

/** A table: `columns` are header labels; `rows` arrays of cells (nodes or text); `onRow(i)` optional. */
export function table(columns, rows, { onRow, rowAttrs, empty = "nothing yet" } = {}) {
  const body = rows.length
    ? rows.map((cells, i) =>
        h(
          "tr",
          { ...(rowAttrs ? rowAttrs(i) : {}), class: onRow ? "clickable" : null, onclick: onRow ? () => onRow(i) : null },
          cells.map((c) => h("td", {}, c)),
        ),
      )
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("table", {}, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))), h("tbody", {}, body));
}

export function section(title, ...children) {
  return h("section", {}, h("h2", {}, title), ...children);
}

export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e.detail ?? e.message ?? String(e));
}

// === numbers ===

export const dash = "–";

export function rate(rps) {
  if (rps === null || rps === undefined) return dash;
  return `${rps >= 100 ? rps.toFixed(0) : rps.toFixed(rps >= 10 ? 1 : 2)}/s`;
}

export function percent(ratio) {
  return ratio === null || ratio === undefined ? dash : `${(100 * ratio).toFixed(ratio >= 0.9995 ? 0 : ratio >= 0.99 ? 2 : 1)}%`;
}

export function ms(value) {
  if (value === null || value === undefined) return dash;
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(value >= 1 ? 1 : 2)} ms`;
}

export function clock(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

export function when(iso) {
  if (!iso) return dash;
  // The API's timestamps are UTC; some carry no zone.
  const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return d.toLocaleString([], { hour12: false });
}

/** "in 3h 20m" / "5m ago", from now to an ISO time. */
export function relative(iso) {
  if (!iso) return dash;
  const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  const secs = Math.round((t - Date.now()) / 1000);
  const a = Math.abs(secs);
  const text =
    a < 90 ? `${a}s` : a < 5400 ? `${Math.round(a / 60)}m` : a < 172800 ? `${Math.floor(a / 3600)}h ${Math.floor((a % 3600) / 60)}m` : `${Math.round(a / 86400)}d`;
  return secs >= 0 ? `in ${text}` : `${text} ago`;
}

/** Seconds from now to an ISO time (negative: past). */
export function secondsUntil(iso) {
  return (Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`) - Date.now()) / 1000;
}

/** "ns/name" for the API's service keys; "" is a caller outside the mesh. */
export function serviceLabel(key) {
  return key ? key : "(outside the mesh)";
}

/** A link to a service's page. */
export function serviceLink(key) {
  return key ? h("a", { href: `#/service/${key}` }, key) : serviceLabel(key);
}
