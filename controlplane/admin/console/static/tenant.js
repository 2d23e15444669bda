// One tenant's view: the names it sees and their answers with the rule that admitted
// each (searchable), and what is forwarded, where and how. Polls
// GET api/v1/views/{tenant}/dns-table and api/v1/tenants/{tenant}.
"use strict";

(() => {
  const { el, api, poll, fmt, chart, legend, param } = Console;
  const LIMIT = 500; // rows drawn at once; the search narrows the rest
  const TRANSPORT = { udp: "plain DNS", "dns-over-tls": "DoT (DNS over TLS)", "dns-over-https": "DoH (DNS over HTTPS)" };
  const tenant = param("name") || "";
  let table = null;
  let tableKey = "";
  let summary = null;
  let range = Number(param("range")) || 300; // the chart's range, seconds (Console.RANGES)

  function setRange(seconds) {
    range = seconds;
    const params = new URLSearchParams(window.location.search);
    params.set("range", String(seconds));
    history.replaceState(null, "", `?${params}`);
    renderSummary();
  }

  function answers(n) {
    const parts = [];
    if (n.A.length) parts.push(`A ${n.A.join(", ")}`);
    if (n.AAAA.length) parts.push(`AAAA ${n.AAAA.join(", ")}${n.aaaa_mapped ? " (mapped)" : ""}`);
    for (const s of n.SRV) parts.push(`SRV ${s.name} → ${s.target}:${s.port}`);
    if (n.answered_from_cluster) parts.push(`resolved: ${n.answered_from_cluster.join(", ")}`);
    if (n.truncated) parts.push(`(${n.truncated} more left out)`);
    return parts.length ? parts : ["no record (NXDOMAIN)"];
  }

  function matches(n, needle) {
    if (!needle) return true;
    const hay = [n.name, n.rule, n.action, ...n.A, ...n.AAAA, ...n.sources,
      ...n.SRV.map((s) => s.name)].join(" ").toLowerCase();
    return needle.split(/\s+/).every((word) => hay.includes(word));
  }

  function namesTable() {
    const needle = document.getElementById("search").value.trim().toLowerCase();
    const found = table.names.filter((n) => matches(n, needle));
    const rows = found.slice(0, LIMIT).map((n) => el("tr", { dataset: { name: n.name } },
      el("td", { class: "mono" }, Console.dotted(n.name)),
      el("td", {}, answers(n).map((a) => el("div", {}, a))),
      el("td", {}, el("span", { class: `action ${n.action}` }, n.action), " ", n.rule),
      el("td", { class: "muted" }, n.sources.join(", ")),
      el("td", { class: "num" }, n.ttl_seconds)));
    document.getElementById("count").textContent = found.length > LIMIT
      ? `${found.length} of ${table.names.length} names match; the first ${LIMIT} are shown`
      : `${found.length} of ${table.names.length} names`;
    document.getElementById("names").replaceChildren(...rows);
  }

  function forwarding() {
    const r = table.resolver;
    if (!r) {
      return el("p", { id: "forwarding", dataset: { transport: "none" } },
        table.forwarding.length ? `forwards to ${table.forwarding.join(", ")}`
          : "Nothing is forwarded: a name outside the table gets NXDOMAIN from Envoy.");
    }
    const resolver = el("span", { class: "mono" }, table.forwarding.join(", ") || "(not running)");
    const asks = r.server === null
      ? el("p", {}, "Nothing is forwarded: the table-only tenant resolver ", resolver,
        " answers the DNS front what Envoy cannot (other types, TCP, PTR) and NXDOMAIN "
        + "for every name outside the table; Envoy itself answers NXDOMAIN for those.")
      : el("p", {}, "Names outside the table go to the tenant resolver ", resolver,
        ", which asks ", el("b", { class: "mono" }, r.server), " over ",
        el("b", { class: "transport" }, TRANSPORT[r.transport] || r.transport),
        r.tls_server_name ? ` (certificate name ${r.tls_server_name}, CA ${r.ca_bundle})` : "",
        r.doh_path ? `, path ${r.doh_path}` : "", ".");
    // The rules the policy wrote (and the targets of ExternalNames); the resolver's own
    // triggers that only carry the default action (the ancestors of those names, "*")
    // are said in one sentence, listed only on demand.
    const isDefault = (rule) => rule.rule.startsWith("defaultAction");
    const own = r.rules.filter((rule) => !isDefault(rule));
    const internal = r.rules.filter(isDefault);
    const action = (summary && summary.policy.default_action)
      || (internal.length ? internal[0].rule.split(" ")[1] : null);
    const how = TRANSPORT[r.transport] || r.transport;
    const rest = r.server === null || !action ? null
      : action === "DENY"
        ? el("p", { dataset: { field: "everything-else" } }, "Everything else is denied (NXDOMAIN, never forwarded) under ",
          el("span", { class: "action deny keep-case" }, "defaultAction DENY"), ".")
        : el("p", { dataset: { field: "everything-else" } }, `Everything else is forwarded (${how}) under `,
          el("span", { class: `action keep-case ${action.toLowerCase()}` }, `defaultAction ${action}`),
          action === "WARN" ? ", and each such query is reported as WARN." : ".");
    const rows = (rules) => rules.map((rule) => el("tr", {},
      el("td", { class: "mono" }, rule.names),
      el("td", {}, el("span", { class: `action ${rule.action === "deny" ? "deny" : "allow"}` },
        rule.action === "deny" ? "denies (NXDOMAIN, never forwarded)" : `forwards (${how})`)),
      el("td", {}, rule.rule)));
    const head = () => el("thead", {}, el("tr", {}, ["names", "the resolver", "rule"].map((h) => el("th", {}, h))));
    return el("div", { id: "forwarding", dataset: { transport: r.transport } }, asks,
      el("p", { class: "muted" }, `Unknown names under ${r.zone.name}: ${r.zone.unknown_names}.`),
      own.length ? el("table", { class: "rules" }, head(), el("tbody", {}, rows(own))) : null,
      rest,
      internal.length ? el("details", { class: "internal" },
        el("summary", { class: "muted" }, `the resolver's internal triggers (${internal.length}): the parents of the names above, carrying the default action`),
        el("table", { class: "internal-rules" }, head(), el("tbody", {}, rows(internal)))) : null);
  }

  // An unknown tenant: say so, and list the tenants there are (not the internal default).
  async function notFound() {
    let names = [];
    try { names = (await api("api/v1/views")).map((v) => v.tenant).filter((t) => t !== Console.DEFAULT_TENANT); } catch (e) { /* the list is a help only */ }
    tableKey = "";
    document.getElementById("main").replaceChildren(el("section", { class: "card not-found", id: "no-tenant" },
      el("h1", {}, "No tenant named ", el("span", { class: "mono" }, `“${tenant}”`)),
      el("p", {}, "A tenant is a DnsPolicy's name; no DnsPolicy has this one (or it was deleted)."),
      names.length ? el("p", {}, "Tenants: ", names.flatMap((n, i) => [i ? ", " : "",
        el("a", { href: `tenant?name=${encodeURIComponent(n)}` }, n)])) : el("p", { class: "muted" }, "There is no tenant yet.")));
    document.title = `no tenant ${tenant} · DNS control plane`;
  }

  function renderSummary() {
    const box = document.getElementById("summary-body");
    if (!summary || !box) return;
    const shown = ["queries", "local", "forwarded", "nxdomain", "denied", "warn"];
    const rows = Console.ranged(summary.traffic, range, summary.now);
    const drawn = chart(Console.withNow(rows, summary.kinds, summary.traffic.rates, summary.now),
      summary.kinds, shown, { width: 1000, height: 150 });
    drawn.dataset.range = String(range);
    box.replaceChildren(
      el("div", { class: "rates" }, Object.entries(summary.traffic.rates).map(([kind, v]) =>
        el("span", { class: `rate ${kind}`, dataset: { kind, value: String(v) } }, el("b", {}, fmt(v)), " ", Console.KIND_LABELS[kind]))),
      drawn, legend(shown));
  }

  // The most queried and most denied names, and the answers by rcode over the last
  // minute, from the query log (only a policy that logs something has them).
  function renderTop() {
    const box = document.getElementById("top-box");
    if (!summary || !box) return;
    const q = summary.queries;
    const log = (extra) => `queries?${new URLSearchParams({ tenant, ...extra })}`;
    const top = (id, title, items, extra) => el("div", { id },
      el("h3", {}, title),
      items.length ? el("table", { class: "top" }, el("tbody", {}, items.map((i) =>
        el("tr", { dataset: { name: i.name, count: String(i.count) } },
          el("td", { class: "mono" }, el("a", { href: log({ name: i.name, ...extra }) }, Console.dotted(i.name))),
          el("td", { class: "num" }, i.count)))))
        : el("p", { class: "muted" }, "none yet"));
    const answers = q.answers;
    const rate = (rcode) => el("span", { class: "rate", dataset: { rcode, rate: String(answers.rates[rcode] || 0), count: String(answers.counts[rcode] || 0) } },
      el("b", {}, fmt(answers.rates[rcode] || 0)), ` ${rcode}/s (${answers.counts[rcode] || 0})`);
    const resolver = q.resolver_answers;
    box.replaceChildren(
      el("h2", {}, "Queries ", el("a", { class: "small", href: log({}) }, "query log →")),
      ...(q.logged ? [] : [el("p", { class: "muted", id: "not-logged" }, "This tenant's policy logs no query (defaultAction ALLOW and no blacklist): no names to rank.")]),
      el("div", { class: "tops" },
        top("top-queried", "Most queried names", q.queried, {}),
        top("top-denied", "Most denied names", q.denied, { action: "deny" }),
        el("div", { id: "answers" },
          el("h3", {}, `Answers in the last ${answers.window_seconds} s`),
          el("div", { class: "rates" }, rate("NXDOMAIN"), rate("SERVFAIL"), rate("NOERROR")),
          resolver ? el("p", { class: "muted", id: "resolver-answers" },
            `the tenant resolver, since it started: ${Object.entries(resolver).map(([k, v]) => `${k} ${v}`).join(" · ")}`) : null)));
  }

  // Created once (a poll never closes it under the reader's pointer).
  function rangeSelect() {
    const select = el("select", { id: "range", title: "history starts when the control plane started",
      onchange: (e) => setRange(Number(e.target.value)) },
    Console.RANGES.map(([seconds, label]) => el("option", { value: String(seconds) }, `last ${label}`)));
    select.value = String(range);
    return select;
  }

  // The tenant resolver's forwarding, from its own counters since it started.
  function renderUpstream() {
    const box = document.getElementById("upstream-box");
    if (!summary || !box) return;
    const f = summary.forwarding;
    const head = el("h2", {}, "Upstream");
    if (!f) {
      box.replaceChildren(head, el("p", { class: "muted", id: "no-upstream" }, "No tenant resolver counters (no resolver for this tenant, or not read yet)."));
      return;
    }
    const [latency, errors, hits] = Console.upstreamCells(f);
    const stat = (cell, label) => el("span", { class: "stat", dataset: { ...cell.dataset } }, el("b", { class: cell.className }, cell.textContent), ` ${label}`);
    const median = f.latency_ms ? el("span", { class: "stat", dataset: { field: "upstream-median", value: String(f.latency_ms.median) } }, el("b", {}, Console.ms(f.latency_ms.median)), " median") : null;
    box.replaceChildren(head,
      el("div", { class: "rates", id: "upstream" }, stat(latency, "average to the upstream"), median,
        stat(errors, "upstream errors (SERVFAIL)"), stat(hits, "answered without the upstream (its cache, local names, policy)")),
      lastMinute(f.last_minute),
      el("p", { class: "muted" }, `Since the tenant resolver started: ${f.queries} queries, ${f.upstream_answers} answered by `
        + `the upstream (${f.upstream_sent.udp} sent over UDP, ${f.upstream_sent.tcp} over TCP/TLS), ${f.cache_hits} without it.`));
  }

  // The same counters over the last minute (api: forwarding.last_minute), so a slow or
  // failing upstream shows now rather than diluted in everything since the start.
  function lastMinute(m) {
    if (!m) return el("p", { class: "muted", id: "upstream-minute" }, "Last minute: not read twice yet.");
    return el("p", { id: "upstream-minute", dataset: { queries: String(m.queries), ms: m.latency_avg_ms === null ? "" : String(m.latency_avg_ms), errors: String(m.upstream_errors) } },
      `Last ${Math.round(m.seconds)} s: ${m.queries} queries, ${m.upstream_answers} answered by the upstream`
      + (m.latency_avg_ms === null ? "" : ` in ${Console.ms(m.latency_avg_ms)} on average`)
      + `, ${m.upstream_errors} upstream error${m.upstream_errors === 1 ? "" : "s"}.`);
  }

  // Per sidecar: its rates (its own counters; denied from the query log) and the names
  // it asked most (the query log, for a policy that logs queries).
  function renderSidecars() {
    const box = document.getElementById("sidecars-box");
    if (!summary || !box) return;
    const top = summary.queries.by_sidecar || {};
    const cars = summary.sidecars;
    const rate = (c, kind) => c.traffic ? c.traffic.rates[kind] : 0;
    box.replaceChildren(el("h2", {}, "Per sidecar"),
      cars.length ? el("div", { class: "table-wrap" }, el("table", { class: "per-sidecar" },
        el("thead", {}, el("tr", {}, ["sidecar", "queries/s", "denied/s", "most queried names"].map((h) => el("th", {}, h)))),
        el("tbody", {}, cars.map((c) => el("tr", { dataset: { node: c.node_id || "", stale: c.stale ? "1" : "" } },
          el("td", { class: "mono" }, el("a", { href: `sidecar?node=${encodeURIComponent(c.node_id || "")}` }, c.node_id || "(no node id)"),
            c.connected ? "" : el("span", { class: "muted" }, " disconnected")),
          el("td", { class: "num", dataset: { field: "queries", value: String(rate(c, "queries")) } }, fmt(rate(c, "queries"))),
          el("td", { class: `num ${rate(c, "denied") ? "bad" : "muted"}`, dataset: { field: "denied", value: String(rate(c, "denied")) } }, fmt(rate(c, "denied"))),
          el("td", { class: "names-cell" }, (top[c.node_id] || []).length
            ? (top[c.node_id] || []).map((n, i) => [i ? ", " : "", el("span", { class: "mono top-name", dataset: { name: n.name, count: String(n.count) } }, Console.dotted(n.name), ` (${n.count})`)])
            : el("span", { class: "muted" }, summary.queries.logged ? "none yet" : "not logged")))))))
        : el("p", { class: "muted" }, "no sidecar"));
  }

  function layout() {
    document.getElementById("main").replaceChildren(
      el("h1", {}, tenant === Console.DEFAULT_TENANT ? `Workloads ${Console.OUTSIDE}` : ["Tenant ", el("span", { class: "mono" }, tenant)]),
      el("p", { class: "muted", id: "policy-line" }),
      el("section", { class: "card", id: "summary" },
        el("label", { class: "range" }, "chart range ", rangeSelect()),
        el("div", { id: "summary-body" })),
      el("section", { class: "card", id: "top-box" }),
      el("section", { class: "card", id: "upstream-box" }),
      el("section", { class: "card", id: "sidecars-box" }),
      el("section", { class: "card" }, el("h2", {}, "Forwarding"), el("div", { id: "forwarding-box" })),
      el("section", { class: "card" },
        el("h2", {}, "Names and answers"),
        el("input", { id: "search", type: "search", placeholder: "search names, addresses, rules…",
          autocomplete: "off", oninput: () => table && namesTable() }),
        el("span", { id: "count", class: "muted" }),
        el("div", { class: "table-wrap" }, el("table", { class: "names" },
          el("thead", {}, el("tr", {}, ["name", "Envoy answers", "admitted by", "from", "TTL"].map((h) => el("th", {}, h)))),
          el("tbody", { id: "names" })))),
      el("section", { class: "card", id: "notes-box" }));
  }

  async function load() {
    let body, info;
    try {
      [body, info] = await Promise.all([
        api(`api/v1/views/${encodeURIComponent(tenant)}/dns-table`),
        api(`api/v1/tenants/${encodeURIComponent(tenant)}`).catch(() => null),
      ]);
    } catch (error) {
      if (error.status !== 404) throw error;
      await notFound();  // an answer, not a failure: the page is not stale
      return;
    }
    if (!document.getElementById("summary")) layout();
    summary = info;
    renderSummary();
    renderTop();
    renderUpstream();
    renderSidecars();
    const p = info ? info.policy : null;
    document.getElementById("policy-line").textContent = p && p.name
      ? `DnsPolicy ${p.name} · default ${p.default_action} · namespaces ${info.namespaces.join(", ") || "none"} · TTL ${body.ttl_seconds} s`
      : `no DnsPolicy selects these workloads: the default view · TTL ${body.ttl_seconds} s`;
    const key = JSON.stringify(body);
    if (key === tableKey) return; // unchanged: keep the table (and the reader's place)
    tableKey = key;
    table = body;
    document.getElementById("forwarding-box").replaceChildren(forwarding());
    const notes = [...body.notes, ...body.unenforced, ...body.conflicts];
    document.getElementById("notes-box").replaceChildren(el("h2", {}, "Notes"),
      notes.length ? el("ul", {}, notes.map((n) => el("li", {}, n))) : el("p", { class: "muted" }, "none"));
    namesTable();
  }

  document.addEventListener("DOMContentLoaded", () => {
    layout();
    if (!tenant) {
      Console.setStatus("no tenant given (tenant?name=...)", true);
      return;
    }
    document.title = `${tenant} · DNS control plane`;
    poll(load, 3000);
  });
})();
