// Tenants: policy, namespaces, sidecars and their ACK/NACK state, a live rate chart,
// recent denied and WARN queries. Polls GET api/v1/tenants.
"use strict";

(() => {
  const { el, api, poll, fmt, ago, plural, chart, legend } = Console;
  const SHOWN = ["queries", "forwarded", "nxdomain", "denied", "warn"];

  function condition(c) {
    const good = (c.type === "Conflicted") ? c.status === "False" : c.status === "True";
    return el("span", { class: `badge ${good ? "ok" : "warn"}`, title: c.message || c.reason,
      dataset: { condition: c.type, status: c.status } }, `${c.type}: ${c.reason}`);
  }

  function policyBlock(t) {
    const p = t.policy;
    if (!p.name) {
      return el("dl", { class: "policy" }, el("dt", {}, "policy"),
        el("dd", {}, `none selects these sidecars: the default view (${p.default_view})`));
    }
    const rows = [
      ["default action", el("span", { class: `action ${p.default_action.toLowerCase()}` }, p.default_action)],
      ["namespaces", t.namespaces.length ? t.namespaces.join(", ") : `none match ${p.namespace_selector}`],
      ["selector", p.selector ? `pods ${p.selector}` : null],
      ["whitelist", p.whitelist.length ? p.whitelist.join("  ") : null],
      ["blacklist", p.blacklist.length ? p.blacklist.join("  ") : null],
      ["forwards", t.view.resolver_server
        ? `to ${t.view.resolver_server} (${t.view.transport}) through the tenant resolver ${t.view.forwarding.join(", ") || "(not running)"}`
        : "nothing (only the table is answered)"],
      ["policy server", p.policy_server],
    ];
    return el("dl", { class: "policy" }, rows.filter(([, v]) => v).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function xdsState(s) {
    if (!s.connected) {
      return el("span", { class: "badge gone", title: "its ADS stream is closed; its last counters are kept for a while",
        dataset: { state: "disconnected" } }, "disconnected");
    }
    const types = Object.entries(s.types);
    const nacked = types.filter(([, t]) => t.nacked);
    if (nacked.length) {
      return el("span", { class: "badge warn", title: nacked.map(([k, t]) => `${k}: ${t.error}`).join("\n"),
        dataset: { state: "nack" } }, `NACK ${nacked.map(([k]) => k.toUpperCase()).join(", ")}`);
    }
    if (s.current) return el("span", { class: "badge ok", dataset: { state: "current" } }, "ACK, current");
    return el("span", { class: "badge pending", dataset: { state: "pending" } }, "pending");
  }

  // The counters' age: "1 s ago" while they come in; "stale: 40 s ago" once they stop.
  function counters(s) {
    if (!s.traffic) return el("span", { class: "muted" }, "none yet");
    const age = ago(s.traffic.last_report_seconds_ago);
    return s.stale ? el("span", { class: "stale-age", title: "no counters from this sidecar for longer than the stale threshold" }, `stale: ${age}`)
      : el("span", { class: "muted" }, age);
  }

  function sidecarsTable(t, staleAfter) {
    if (!t.sidecars.length) return el("p", { class: "muted" }, "no sidecar connected");
    return el("div", { class: "table-wrap" }, el("table", { class: "sidecars", title: `counters older than ${staleAfter} s are stale` },
      el("thead", {}, el("tr", {}, ["sidecar", "namespace", "xDS", "versions (LDS)", "queries/s", "last counters"].map((h) => el("th", {}, h)))),
      el("tbody", {}, t.sidecars.map((s) => el("tr", { class: s.stale ? "stale" : null,
        dataset: { node: s.node_id, stale: s.stale ? "1" : null, age: s.traffic ? String(s.traffic.last_report_seconds_ago) : null } },
        el("td", { class: "mono" }, el("a", { href: `sidecar?node=${encodeURIComponent(s.node_id)}`, title: "its config history" }, s.node_id)),
        el("td", {}, s.namespace),
        el("td", {}, xdsState(s)),
        el("td", { class: "mono" }, ((s.types.lds || {}).acked || "–").slice(0, 12)),
        el("td", { class: "num" }, s.traffic && !s.stale ? fmt(s.traffic.rates.queries) : "–"),
        el("td", {}, counters(s)),
      )))));
  }

  // The query's name as a link to explain, with the sidecar's namespace and labels.
  function explainLink(t, r, text) {
    const car = t.sidecars.find((s) => s.node_id === r.node);
    if (!car) return text;
    const q = new URLSearchParams({ namespace: car.namespace, name: r.name, type: r.type });
    if (car.labels && Object.keys(car.labels).length) q.set("labels", Object.entries(car.labels).map(([k, v]) => `${k}=${v}`).join(","));
    return el("a", { href: `explain?${q}`, class: "explain-link", title: "explain this query" }, text);
  }

  // One query per item on two lines: what (action, name, type, rcode) and when, from
  // which sidecar and why (time, sidecar, rule); the lines wrap rather than cut.
  function recentList(t) {
    if (!t.recent.length) return el("p", { class: "muted" }, "no denied or WARN query reported");
    return el("ul", { class: "recent" }, t.recent.slice(0, 8).map((r) =>
      el("li", { dataset: { action: r.action, name: r.name } },
        el("div", { class: "what" },
          el("span", { class: `action ${r.action}` }, r.action === "deny" ? "denied" : "WARN"),
          el("span", { class: "mono qname" }, explainLink(t, r, `${r.name} ${r.type}`)),
          el("span", { class: "muted" }, r.rcode)),
        el("div", { class: "when muted" },
          el("span", { "data-field": "time" }, new Date(r.time * 1000).toLocaleTimeString()),
          el("span", { "data-field": "node", class: "mono" }, r.node),
          el("span", { "data-field": "rule" }, `${r.rule} · by ${r.source || "rule"}${r.verdict ? ` (server said ${r.verdict})` : ""}`)))));
  }

  function rates(t) {
    return el("div", { class: "rates" }, Object.entries(t.traffic.rates).map(([kind, value]) =>
      el("span", { class: `rate ${kind}`, dataset: { kind, value: String(value) } },
        el("b", {}, fmt(value)), " ", Console.KIND_LABELS[kind])));
  }

  function card(t, kinds, staleAfter, now) {
    const href = `tenant?name=${encodeURIComponent(t.tenant)}`;
    return el("section", { class: "card tenant", id: `tenant-${t.tenant}`, dataset: { tenant: t.tenant } },
      el("div", { class: "card-head" },
        el("h2", {}, el("a", { href }, t.tenant === Console.DEFAULT_TENANT ? `Workloads ${Console.OUTSIDE}` : t.tenant)),
        el("span", { class: "muted", dataset: { field: "counts" } },
          `${plural(t.view.names, "name")} · ${plural(t.sidecars.filter((s) => s.connected).length, "sidecar")}`),
        el("span", { class: "conditions" }, t.conditions.map(condition))),
      el("div", { class: "grid2" },
        el("div", {}, policyBlock(t), sidecarsTable(t, staleAfter)),
        el("div", {},
          rates(t),
          chart(Console.withNow(t.traffic.history, kinds, t.traffic.rates, now), kinds, SHOWN),
          legend(SHOWN),
          el("h3", {}, "Recent denied and WARN queries ",
            el("a", { href: `queries?tenant=${encodeURIComponent(t.tenant)}`, class: "small" }, "query log →")),
          recentList(t))));
  }

  const HEAD_TITLES = {
    upstream: "the tenant resolver's average time to its upstream server (hover: median, address)",
    "upstream errors": "SERVFAIL answered by the tenant resolver since it started",
    cached: "share of the tenant resolver's answers from its cache",
  };

  // Every tenant on one line: sidecars (current / NACK / stale), rates, the answers'
  // rcodes, its resolver's forwarding (latency, errors, cache hits) and readiness; the
  // name jumps to its card.
  function overview(tenants) {
    const num = (v, cls) => el("td", { class: `num ${v > 0 ? cls || "" : "muted"}` }, fmt(v));
    return el("section", { class: "card" }, el("h2", {}, "All tenants"),
      el("div", { class: "table-wrap" }, el("table", { class: "overview" },
        el("thead", {}, el("tr", {}, ["tenant", "default", "sidecars", "NACK", "stale", "queries/s",
          "denied/s", "WARN/s", "NXDOMAIN/s", "SERVFAIL/s", "upstream", "upstream errors", "cached", "ready"].map((h) => el("th", { title: HEAD_TITLES[h] || "" }, h)))),
        el("tbody", {}, tenants.map((t) => {
          const connected = t.sidecars.filter((c) => c.connected);
          const nacked = connected.filter((c) => Object.values(c.types).some((x) => x.nacked)).length;
          const stale = t.sidecars.filter((c) => c.stale).length;
          const ready = t.conditions.find((c) => c.type === "Ready");
          const servfail = (t.queries.answers.rates || {}).SERVFAIL || 0;
          return el("tr", { dataset: { tenant: t.tenant } },
            el("td", {}, el("a", { href: `#tenant-${t.tenant}` }, t.tenant === Console.DEFAULT_TENANT ? Console.OUTSIDE : t.tenant)),
            el("td", {}, t.policy.name ? el("span", { class: `action ${t.policy.default_action.toLowerCase()}` }, t.policy.default_action) : "–"),
            el("td", { class: "num", dataset: { field: "sidecars" } }, `${connected.filter((c) => c.current).length} / ${connected.length}`),
            el("td", { class: `num ${nacked ? "bad" : "muted"}`, dataset: { field: "nack" } }, String(nacked)),
            el("td", { class: `num ${stale ? "bad" : "muted"}`, dataset: { field: "stale" } }, String(stale)),
            num(t.traffic.rates.queries), num(t.traffic.rates.denied, "bad"), num(t.traffic.rates.warn, "warn-text"),
            num(t.traffic.rates.nxdomain), num(servfail, "bad"),
            ...Console.upstreamCells(t.forwarding, t.view.forwarding),
            el("td", {}, ready ? el("span", { class: `badge ${ready.status === "True" ? "ok" : "warn"}`, title: ready.message || "" }, ready.reason) : "–"));
        })))));
  }

  async function load() {
    const body = await api("api/v1/tenants");
    const main = document.getElementById("main");
    const cards = body.tenants.map((t) => card(t, body.kinds, body.stale_after_seconds, body.now));
    main.replaceChildren(el("h1", {}, "Tenants"),
      ...(cards.length ? [overview(body.tenants), ...cards] : [el("p", { class: "muted" }, "no DnsPolicy yet")]));
  }

  document.addEventListener("DOMContentLoaded", () => poll(load, 2000));
})();
