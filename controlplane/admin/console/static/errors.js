// Errors: the current input errors with file and line, or object and reason.
// Polls GET api/v1/errors.
"use strict";

(() => {
  const { el, api, poll } = Console;

  async function load() {
    const body = await api("api/v1/errors");
    const main = document.getElementById("main");
    const rows = body.errors.map((e) => el("tr", { dataset: { kind: e.kind, name: e.name } },
      el("td", {}, e.kind),
      el("td", { class: "mono" }, [e.namespace, e.name].filter(Boolean).join("/") || "–"),
      el("td", { class: "mono" }, e.origin || "–"),
      el("td", {}, e.reason)));
    main.replaceChildren(
      el("h1", {}, "Input errors ", el("span", { class: "muted", id: "errors-total" }, `(${body.count})`)),
      el("p", { class: "muted" }, "Broken files keep what they held before; an invalid object keeps its last valid version; other objects are unaffected."),
      body.count ? el("table", { class: "errors" },
        el("thead", {}, el("tr", {}, ["kind", "object", "where", "reason"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)) : el("p", { class: "ok", id: "no-errors" }, "No input errors."));
  }

  document.addEventListener("DOMContentLoaded", () => poll(load, 2000));
})();
