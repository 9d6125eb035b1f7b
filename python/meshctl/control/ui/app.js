// The dashboard's shell: the token login, hash routing between pages, and each page's lifetime
// (its refresh timers and requests end when another page opens). Pages are modules exporting a
// render(view, ctx, ...args); ctx.every(seconds, fn) refreshes while the page stays open.

import * as api from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import * as resources from "./resources.js";
import * as service from "./service.js";
import * as sidecars from "./sidecars.js";
import * as tap from "./tap.js";
import * as topology from "./topology.js";
import * as traces from "./traces.js";

const view = document.getElementById("view");

/** The pages by their hash's first part; each gets the rest of the path. */
const PAGES = {
  topology: (ctx) => topology.render(view, ctx),
  services: (ctx) => service.renderList(view, ctx),
  service: (ctx, rest) => service.renderService(view, ctx, rest),
  resources: (ctx) => resources.render(view, ctx),
  sidecars: (ctx) => sidecars.render(view, ctx),
  traces: (ctx) => traces.renderList(view, ctx),
  trace: (ctx, rest) => traces.renderTrace(view, ctx, rest),
  tap: (ctx, rest) => tap.render(view, ctx, rest),
};

let current = null;

function showError(e) {
  if (e instanceof api.Unauthorized) {
    location.hash = "#/login";
    return;
  }
  if (e && e.name === "AbortError") return;
  let banner = view.querySelector(".page-error");
  if (!banner) {
    banner = h("div", { class: "page-error" });
    view.prepend(banner);
  }
  replace(banner, errorBox(e));
}

/** A page's lifetime: an abort signal for its requests, its timers, and errors shown, not thrown. */
function pageContext(query) {
  const controller = new AbortController();
  const timers = [];
  const ctx = {
    signal: controller.signal,
    query,
    guard: (promise) => promise.catch(showError),
    every(seconds, fn) {
      let busy = false;
      timers.push(
        setInterval(() => {
          if (busy || document.hidden) return;
          busy = true;
          fn()
            .then(() => view.querySelector(".page-error")?.remove())
            .catch(showError)
            .finally(() => (busy = false));
        }, seconds * 1000),
      );
    },
    close() {
      timers.forEach(clearInterval);
      controller.abort();
    },
  };
  return ctx;
}

function loginPage(message) {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, size: 60, placeholder: "mesh-reader-..." });
  const note = h("p", { id: "login-message", class: "notice", role: "status" }, message || "");
  const form = h(
    "form",
    { id: "login", class: "login" },
    h("h1", {}, "meshctl"),
    h("p", {}, "Log in with an API token. The read-only one is enough (", h("code", {}, "reader.token"), " in the control plane's data dir); tapping requests needs the admin token."),
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Log in"),
    note,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api.login(input.value.trim());
      // Back to the page asked for (a deep link), else the topology.
      const target = location.hash && !location.hash.startsWith("#/login") ? location.hash : "#/topology";
      if (location.hash === target) route();
      else location.hash = target;
    } catch (e) {
      note.className = "error";
      replace(note, e instanceof api.Unauthorized ? "That token was refused (401)." : e.status === 403 ? "That token may not read the mesh (a join token?): use the read-only or the admin token." : e.message);
    }
  });
  replace(view, form);
  input.focus();
}

function route() {
  if (current) current.close();
  current = null;
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  const top = document.getElementById("top");
  if (!api.token() || page === "login") {
    top.hidden = true;
    if (api.token()) api.logout();
    loginPage(api.flash());
    return;
  }
  top.hidden = false;
  const render = PAGES[page];
  if (!render) {
    location.hash = "#/topology";
    return;
  }
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page || (page === "service" && a.dataset.page === "services") || (page === "trace" && a.dataset.page === "traces"));
  const ctx = pageContext(Object.fromEntries(new URLSearchParams(search || "")));
  current = ctx;
  replace(view, h("p", { class: "muted" }, "loading ..."));
  view.dataset.page = page;
  view.dataset.ready = "";
  ctx.guard(render(ctx, rest.map(decodeURIComponent).join("/")).then(() => (view.dataset.ready = "true")));
}

document.getElementById("logout").addEventListener("click", () => {
  api.logout("Logged out.");
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
route();
