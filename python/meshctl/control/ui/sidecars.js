// Sidecars (`meshctl status`): the mesh at a glance, and each sidecar: live or not, in sync with
// the mesh generation or behind (or refusing it: a NACK), and when its SVID expires.

import { get } from "./api.js";
import { dash, h, relative, replace, secondsUntil, section, serviceLink, table } from "./dom.js";

/** An SVID this close to its end has missed its renewal (sidecars renew at ~70 % of the lifetime). */
const SVID_WARN_SECONDS = 3600;

function sync(sc) {
  if (!sc.live) return h("span", { class: "badge down" }, "gone");
  if (sc.nacked_version !== null && sc.nacked_version >= (sc.acked_version ?? -1)) {
    return h("span", { class: "badge bad", title: sc.last_error || "" }, `NACK v${sc.nacked_version}`);
  }
  if (sc.acked_version === sc.mesh_generation) return h("span", { class: "badge ok" }, "in sync");
  const held = sc.acked_version === null ? "none acked" : `v${sc.acked_version}`;
  return h("span", { class: "badge warn" }, `behind (${held} of v${sc.mesh_generation})`);
}

function svid(sc) {
  if (!sc.svid_expires_at) return h("span", { class: "muted" }, "none");
  const left = secondsUntil(sc.svid_expires_at);
  const cls = left <= 0 ? "bad" : left < SVID_WARN_SECONDS ? "warn" : "ok";
  return h("span", { class: `badge ${cls}`, title: sc.svid_expires_at }, left <= 0 ? `expired ${relative(sc.svid_expires_at)}` : `expires ${relative(sc.svid_expires_at)}`);
}

function summary(mesh) {
  const item = (label, value) => h("div", { class: "stat" }, h("div", { class: "value" }, String(value)), h("div", { class: "muted" }, label));
  return h(
    "div",
    { class: "stats", id: "mesh-summary" },
    item("generation", mesh.generation),
    item("revision", mesh.revision),
    item("services", mesh.services),
    item("live sidecars", `${mesh.live_sidecars} / ${mesh.sidecars}`),
    item("in sync", `${mesh.in_sync} / ${mesh.live_sidecars}`),
  );
}

export async function render(view, ctx) {
  const head = h("div");
  const body = h("div");
  replace(view, h("h1", {}, "Sidecars"), head, section("Instances", body));
  const refresh = async () => {
    const [mesh, sidecars] = await Promise.all([get("/api/v1/mesh", {}, ctx.signal), get("/api/v1/sidecars", {}, ctx.signal)]);
    replace(head, summary(mesh));
    replace(
      body,
      table(
        ["id", "service", "address", "zone", "kind", "config", "SVID", "last seen", "error"],
        sidecars.map((sc) => [
          sc.id,
          serviceLink(`${sc.namespace}/${sc.service}`),
          h("span", { class: "mono" }, sc.gateway ? sc.address : `${sc.address}:${sc.inbound_port}`),
          sc.zone || dash,
          sc.gateway ? "gateway" : "sidecar",
          sync(sc),
          svid(sc),
          relative(sc.last_seen),
          sc.last_error ? h("span", { class: "error-text" }, sc.last_error) : dash,
        ]),
        { empty: "no sidecars have joined", rowAttrs: (i) => ({ dataset: { sidecar: sidecars[i].id } }) },
      ),
    );
  };
  await refresh();
  ctx.every(5, refresh);
}
