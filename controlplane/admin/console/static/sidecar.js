// One sidecar's config history: what it was sent (type, version) and what it answered
// (ACK, or NACK with Envoy's reason), newest first. Polls GET api/v1/nodes/{node}/history.
"use strict";

(() => {
  const { el, api, poll, param, ago } = Console;
  const node = param("node") || "";
  const LABEL = { sent: "pushed", ack: "ACK", nack: "NACK" };

  function row(e, now) {
    return el("tr", { class: e.event === "nack" ? "nack" : null, dataset: { event: e.event, type: e.type } },
      el("td", { class: "nowrap", title: new Date(e.time * 1000).toLocaleString() },
        new Date(e.time * 1000).toLocaleTimeString(), el("div", { class: "muted" }, ago(Math.max(0, now - e.time)))),
      el("td", {}, el("span", { class: `badge ${e.event === "nack" ? "warn" : e.event === "ack" ? "ok" : "pending"}` }, LABEL[e.event] || e.event)),
      el("td", {}, e.type.toUpperCase()),
      el("td", { class: "mono" }, e.version.slice(0, 16)),
      el("td", { class: "mono" }, e.stream),
      el("td", { class: "bad" }, e.error || ""));
  }

  async function load() {
    const body = await api(`api/v1/nodes/${encodeURIComponent(node)}/history?limit=200`);
    const now = Date.now() / 1000;
    const nacks = body.events.filter((e) => e.event === "nack").length;
    document.getElementById("main").replaceChildren(
      el("h1", {}, "Sidecar ", el("span", { class: "mono" }, node)),
      el("p", { class: "muted", id: "sidecar-line" },
        body.connected ? "connected" : "not connected now", " · ",
        el("a", { href: `queries?node=${encodeURIComponent(node)}` }, "its queries in the query log →")),
      el("section", { class: "card" },
        el("h2", {}, "Config history ", el("span", { class: "muted" }, `(${body.events.length} events, ${nacks} NACK${nacks === 1 ? "" : "s"})`)),
        body.events.length ? el("div", { class: "table-wrap" }, el("table", { class: "history" },
          el("thead", {}, el("tr", {}, ["time", "event", "type", "version", "stream", "Envoy's reason"].map((h) => el("th", {}, h)))),
          el("tbody", { id: "history" }, body.events.map((e) => row(e, now)))))
          : el("p", { class: "muted" }, "nothing sent to this node in the history kept")));
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!node) { Console.setStatus("no sidecar given (sidecar?node=...)", true); return; }
    document.title = `${node} · DNS control plane`;
    poll(load, 3000);
  });
})();
