// The query log: the latest logged queries of every action (allowed too), filtered by
// tenant, sidecar, name, type, action, rcode and time; each row links to explain with the
// question filled in. The filters live in the URL (shareable). Polls GET api/v1/querylog.
"use strict";

(() => {
  const { el, api, poll, param, dotted } = Console;
  const RANGES = [["", "any time"], ["60", "last minute"], ["300", "last 5 min"],
    ["900", "last 15 min"], ["3600", "last hour"]];
  const FILTERS = [
    ["tenant", "tenant", "select"],
    ["node", "sidecar", "input", "sleep.acme"],
    ["name", "name contains", "input", "example.com"],
    ["type", "type", "select", ["", "A", "AAAA", "SRV", "TXT", "PTR", "MX", "CNAME", "HTTPS"]],
    ["action", "action", "select", ["", "allow", "warn", "deny"]],
    ["rcode", "rcode", "select", ["", "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "NOTIMP", "FORMERR"]],
    ["last", "time", "select", RANGES],
  ];
  let tenants = [];
  let drawn = "";

  function options(values, chosen) {
    return values.map((v) => {
      const [value, label] = Array.isArray(v) ? v : [v, v || "any"];
      return el("option", { value, selected: value === chosen }, label);
    });
  }

  function form() {
    const fields = FILTERS.map(([key, label, kind, extra]) => el("label", {}, label,
      kind === "input"
        ? el("input", { id: `q-${key}`, name: key, value: param(key) || "", placeholder: extra, oninput: changed })
        : el("select", { id: `q-${key}`, name: key, onchange: changed },
          options(key === "tenant" ? [["", "every tenant"], ...tenants] : extra, param(key) || ""))));
    return el("form", { id: "query-filters", class: "card form", onsubmit: (e) => { e.preventDefault(); changed(); } },
      fields, el("button", { type: "button", id: "q-clear", onclick: clear }, "Clear"));
  }

  function filters() {
    const q = new URLSearchParams();
    for (const [key] of FILTERS) {
      const value = document.getElementById(`q-${key}`).value.trim();
      if (value) q.set(key, value);
    }
    return q;
  }

  function changed() {
    const q = filters();
    history.replaceState(null, "", q.toString() ? `?${q}` : "queries");
    drawn = "";
    refresh();
  }

  function clear() {
    for (const [key] of FILTERS) document.getElementById(`q-${key}`).value = "";
    changed();
  }

  function explainHref(r) {
    const q = new URLSearchParams({ namespace: r.namespace || "", name: r.name, type: r.type });
    if (r.labels) q.set("labels", Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(","));
    return `explain?${q}`;
  }

  function row(r) {
    const explainable = Boolean(r.namespace);
    return el("tr", { dataset: { action: r.action, name: r.name, node: r.node, rcode: r.rcode, type: r.type } },
      el("td", { class: "nowrap", title: new Date(r.time * 1000).toLocaleString() }, new Date(r.time * 1000).toLocaleTimeString()),
      el("td", {}, r.tenant),
      el("td", { class: "mono" }, r.node),
      el("td", { class: "mono" }, explainable
        ? el("a", { href: explainHref(r), class: "explain-link", title: "explain this query" }, dotted(r.name))
        : dotted(r.name)),
      el("td", {}, r.type),
      el("td", {}, el("span", { class: `action ${r.action}` }, r.action === "deny" ? "denied" : r.action)),
      el("td", {}, r.rcode),
      el("td", { class: "muted" }, r.rule, r.verdict ? ` (server said ${r.verdict})` : ""),
      el("td", {}, explainable ? el("a", { href: explainHref(r) }, "explain →") : el("span", { class: "muted", title: "the sidecar is gone: its namespace is unknown" }, "–")));
  }

  async function refresh() {
    const q = filters();
    const last = q.get("last");
    q.delete("last");
    if (last) q.set("since", String(Date.now() / 1000 - Number(last)));
    q.set("limit", "300");
    const body = await api(`api/v1/querylog?${q}`);
    const names = body.tenants_logged;
    if (names.join() !== tenants.join()) {
      tenants = names;
      const select = document.getElementById("q-tenant");
      select.replaceChildren(...options([["", "every tenant"], ...tenants], select.value || param("tenant") || ""));
    }
    const key = JSON.stringify(body.records);
    if (key === drawn) return;
    drawn = key;
    document.getElementById("query-count").textContent =
      `${body.records.length}${body.records.length === 300 ? "+" : ""} ${body.records.length === 1 ? "query" : "queries"}`
      + ` · logged for ${tenants.length ? tenants.join(", ") : "no tenant"} (a policy with a blacklist or a default other than ALLOW logs its queries)`;
    document.getElementById("queries").replaceChildren(...body.records.map(row));
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("main").replaceChildren(
      el("h1", {}, "Query log"),
      form(),
      el("p", { class: "muted", id: "query-count" }),
      el("div", { class: "table-wrap" }, el("table", { class: "querylog" },
        el("thead", {}, el("tr", {}, ["time", "tenant", "sidecar", "name", "type", "action", "rcode", "rule", ""].map((h) => el("th", {}, h)))),
        el("tbody", { id: "queries" }))));
    poll(refresh, 2000);
  });
})();
