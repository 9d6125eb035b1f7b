// Routes and policies: every resource by kind (its stored spec on a click), the mesh's revision
// log (`meshctl history`) and what changed between any two revisions (`meshctl diff`).

import { get } from "./api.js";
import { canonical, diffLines } from "./diff.js";
import { dash, h, replace, section, table, when } from "./dom.js";

const HIDDEN = new Set(["created_at", "updated_at", "resource_version", "namespace", "name"]);

/** Without the fields left unset (null), as `meshctl get -o yaml` writes them. */
function set(value) {
  if (Array.isArray(value)) return value.map(set);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => [k, set(v)]));
  return value;
}

/** What a resource is, without its bookkeeping: a Service's ports and mode, another kind's spec. */
function specOf(row) {
  return set(row.spec ?? Object.fromEntries(Object.entries(row).filter(([k]) => !HIDDEN.has(k))));
}

function changeView(c) {
  const lines = diffLines(canonical(c.before && c.before.spec), canonical(c.after && c.after.spec));
  return h(
    "div",
    { class: "change", dataset: { change: c.change } },
    h("h3", {}, h("span", { class: `badge ${c.change}` }, c.change), ` ${c.kind} `, h("span", { class: "mono" }, c.name)),
    h(
      "pre",
      { class: "diff" },
      lines.map(([op, line]) => h("span", { class: op === "+" ? "add" : op === "-" ? "del" : "same" }, `${op} ${line}\n`)),
    ),
  );
}

async function showDiff(box, before, after, signal) {
  replace(box, h("p", { class: "muted" }, "loading ..."));
  const changes = await get(`/api/v1/revisions/${before}/diff/${after}`, {}, signal);
  replace(
    box,
    h("h3", {}, `revision ${before} → ${after}`),
    changes.length ? changes.map(changeView) : h("p", { class: "muted" }, "no change"),
  );
}

function picker(revisions, chosen) {
  const options = [0, ...revisions.map((r) => r.id)];
  return h("select", {}, options.map((id) => h("option", { value: id, selected: id === chosen }, id === 0 ? "0 (empty mesh)" : String(id))));
}

async function historyPanel(view, ctx, diffBox) {
  const revisions = await get("/api/v1/revisions", {}, ctx.signal);
  const latest = revisions.length ? revisions[revisions.length - 1].id : 0;
  const from = picker(revisions, Math.max(0, latest - 1));
  const to = picker(revisions, latest);
  const compare = h(
    "form",
    {
      class: "inline",
      id: "compare",
      onsubmit: (ev) => {
        ev.preventDefault();
        ctx.guard(showDiff(diffBox, from.value, to.value, ctx.signal));
      },
    },
    "compare revision ",
    from,
    " with ",
    to,
    h("button", { type: "submit" }, "Diff"),
  );
  const newest = [...revisions].reverse();
  const log = table(
    ["revision", "time", "action", "kind", "name"],
    newest.map((r) => [r.id, when(r.created_at), r.action, r.kind === "*" ? dash : r.kind, r.name]),
    {
      empty: "no revisions yet",
      rowAttrs: (i) => ({ dataset: { revision: newest[i].id } }),
      onRow: (i) => {
        const id = newest[i].id;
        from.value = String(id - 1);
        to.value = String(id);
        ctx.guard(showDiff(diffBox, id - 1, id, ctx.signal));
      },
    },
  );
  return [compare, h("div", { class: "scroll short" }, log)];
}

async function kindTables(ctx, specBox) {
  const kinds = await get("/ui/kinds.json", {}, ctx.signal);
  const lists = await Promise.all(kinds.map((k) => get(`/api/v1/${k.plural}`, {}, ctx.signal)));
  return kinds.map((k, i) => {
    const rows = lists[i];
    if (!rows.length) return h("h3", { class: "muted", dataset: { kind: k.kind } }, `${k.kind} (0)`);
    return h(
      "div",
      { class: "kind", dataset: { kind: k.kind } },
      h("h3", {}, `${k.kind} (${rows.length})`),
      table(
        ["name", "version", "updated"],
        rows.map((r) => [h("span", { class: "mono" }, `${r.namespace}/${r.name}`), r.resource_version, when(r.updated_at)]),
        {
          empty: "none",
          onRow: (j) =>
            replace(
              specBox,
              h("h3", {}, `${k.kind} `, h("span", { class: "mono" }, `${rows[j].namespace}/${rows[j].name}`)),
              h("pre", { class: "spec" }, canonical(specOf(rows[j])).join("\n")),
            ),
        },
      ),
    );
  });
}

export async function render(view, ctx) {
  const specBox = h("div", { class: "spec-box" }, h("p", { class: "muted" }, "pick a resource to see its spec"));
  const diffBox = h("div", { id: "diff" });
  const [tables, history] = await Promise.all([kindTables(ctx, specBox), historyPanel(view, ctx, diffBox)]);
  replace(
    view,
    h("h1", {}, "Routes & policies"),
    h("div", { class: "two" }, section("Resources", tables), section("Spec", specBox)),
    section("Revisions", history, diffBox),
  );
}
