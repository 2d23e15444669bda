// Errors: the current input errors, each once: where (the file and line, or the object
// and where it came from), why, since when, and for a file that is not valid YAML the
// lines around the fault (tabs shown as →). Polls GET api/v1/errors.
"use strict";

(() => {
  const { el, api, poll, ago } = Console;
  const TAB = "\u2192"; // how the API's snippet shows a tab (sources/files.py)

  // A file: its path and line once. An object: kind and name, and where it came from
  // when that adds something (a file and line, "kubernetes").
  function where(e) {
    if (e.kind === "File") return el("span", { class: "mono" }, e.origin || e.name);
    const object = [e.namespace, e.name].filter(Boolean).join("/");
    return [el("span", {}, `${e.kind} `, el("span", { class: "mono" }, object || "–")),
      e.origin ? el("div", { class: "muted mono" }, e.origin) : null];
  }

  function snippet(text) {
    return el("pre", { class: "snippet" }, text.split("\n").map((line) => [
      line.split(TAB).flatMap((part, i) => i ? [el("span", { class: "tab", title: "a tab character" }, TAB), part] : [part]),
      "\n"]));
  }

  function rows(e, now) {
    const seen = new Date(e.first_seen * 1000);
    const main = el("tr", { dataset: { kind: e.kind, name: e.name } },
      el("td", {}, where(e)),
      el("td", {}, e.reason),
      el("td", { class: "muted", title: "when the admin API first listed it" },
        seen.toLocaleTimeString(), el("div", {}, ago(Math.max(0, now - e.first_seen)))));
    if (!e.snippet) return [main];
    return [main, el("tr", { class: "snippet-row" }, el("td", { colspan: 3 }, snippet(e.snippet)))];
  }

  async function load() {
    const body = await api("api/v1/errors");
    const now = Date.now() / 1000;
    const main = document.getElementById("main");
    main.replaceChildren(
      el("h1", {}, "Input errors ", el("span", { class: "muted", id: "errors-total" }, `(${body.count})`)),
      el("p", { class: "muted" }, "Broken files keep what they held before; an invalid object keeps its last valid version; other objects are unaffected."),
      body.count ? el("div", { class: "table-wrap" }, el("table", { class: "errors" },
        el("thead", {}, el("tr", {}, ["where", "reason", "since"].map((h) => el("th", {}, h)))),
        el("tbody", {}, body.errors.map((e) => rows(e, now))))) : el("p", { class: "ok", id: "no-errors" }, "No input errors."));
  }

  document.addEventListener("DOMContentLoaded", () => poll(load, 2000));
})();
