// Shared by every console page: DOM building, the admin API (relative URLs only, so a
// path prefix or kubectl port-forward needs nothing), polling, and the rate chart.
"use strict";

const Console = (() => {
  const KIND_LABELS = {
    queries: "queries/s", local: "answered locally", forwarded: "forwarded",
    nxdomain: "NXDOMAIN", denied: "denied", warn: "WARN",
  };
  const KIND_COLORS = {
    queries: "#2563eb", local: "#16a34a", forwarded: "#9333ea", nxdomain: "#64748b",
    denied: "#dc2626", warn: "#d97706",
  };

  // el("div", {class: "x", dataset: {tenant: "a"}}, "text", child...): never innerHTML,
  // so names from manifests are shown as text whatever they contain.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") {
        for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) node.dataset[k] = v;
      }
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
    }
  }

  // path is relative to the API root: "api/v1/tenants". Pages live one level below it
  // (console/...), hence "../": the same under any prefix.
  async function api(path) {
    const response = await fetch("../" + path, {
      headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return response.json();
  }

  function setStatus(text, bad) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("bad", Boolean(bad));
  }

  // When a round fails, what is on the page is old: the page goes stale (body.stale:
  // greyed by the stylesheet) and every card says how old its data is, ticking each second,
  // until a round succeeds again.
  const freshness = { at: null, why: "", ticker: null };

  function staleText() {
    if (freshness.at === null) return "no data yet";
    const age = Math.max(0, Math.round((Date.now() - freshness.at) / 1000));
    return `stale: data from ${new Date(freshness.at).toLocaleTimeString()}, ${age} s old`;
  }

  function markStale() {
    document.body.classList.add("stale");
    document.body.dataset.stale = "1";
    const text = staleText();
    for (const card of document.querySelectorAll("main .card")) {
      let note = card.querySelector(":scope > .stale-note");
      if (!note) {
        note = el("div", { class: "stale-note", role: "status" });
        card.prepend(note);
      }
      note.textContent = text;
    }
    let banner = document.getElementById("stale-banner");
    if (!banner) {
      banner = el("div", { id: "stale-banner", class: "stale-banner", role: "alert" });
      document.getElementById("main").prepend(banner);
    }
    banner.textContent = `${text} · ${freshness.why} · retrying`;
  }

  function markFresh() {
    freshness.at = Date.now();
    clearInterval(freshness.ticker);
    freshness.ticker = null;
    document.body.classList.remove("stale");
    delete document.body.dataset.stale;
    for (const node of document.querySelectorAll(".stale-note, #stale-banner")) node.remove();
  }

  function goStale(why) {
    freshness.why = why;
    markStale();
    if (freshness.ticker === null) freshness.ticker = setInterval(markStale, 1000);
  }

  // Run load() now and every `ms` while the page is visible; errors show in the header,
  // the page goes stale, and the next round tries again.
  function poll(load, ms) {
    let timer = null;
    let running = false;
    async function round() {
      if (running) return;
      running = true;
      try {
        await load();
        markFresh();
        setStatus(`updated ${new Date().toLocaleTimeString()} · every ${ms / 1000} s`);
        document.body.dataset.updated = String(Date.now());
      } catch (error) {
        const why = error.status === 401 || error.status === 403
          ? `not allowed: ${error.message}` : error.status
            ? `the control plane answered ${error.message}` : "cannot reach the control plane";
        setStatus(why, true);
        goStale(why);
      } finally {
        running = false;
      }
    }
    function schedule() {
      clearInterval(timer);
      timer = setInterval(() => { if (!document.hidden) round(); }, ms);
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden) round(); });
    round();
    schedule();
    return round;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (value >= 100) return value.toFixed(0);
    if (value >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  // A DNS name that may wrap after its dots only (not in the middle of a label).
  function dotted(name) {
    return String(name).split(".").flatMap((part, i) => i ? [".", el("wbr"), part] : [part]);
  }

  // "1 name", "2 names", "0 sidecars"
  function plural(n, word, many) {
    return `${n} ${n === 1 ? word : (many || `${word}s`)}`;
  }

  // The internal tenant of the workloads no DnsPolicy selects (dns/views.py DEFAULT_TENANT).
  const DEFAULT_TENANT = "_default";
  const OUTSIDE = "outside every tenant";

  function ago(seconds) {
    if (seconds < 60) return `${Math.round(seconds)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }

  // The history rows [t, queries, local, forwarded, nxdomain, denied, warn] with the
  // current rates appended at the server's `now`, so the chart ends where the numbers are.
  function withNow(history, kinds, rates, now) {
    const rows = (history || []).slice();
    if (now && rates && (!rows.length || now > rows[rows.length - 1][0])) {
      rows.push([now, ...kinds.map((k) => rates[k] || 0)]);
    }
    return rows;
  }

  // The chart's ranges, in seconds. The fine history (one point per tick, the last few
  // minutes) serves the short ones; before it, the coarse one (means over
  // traffic.coarse_seconds, the last hour). Both start when the control plane started.
  const RANGES = [[60, "1 min"], [300, "5 min"], [900, "15 min"], [3600, "1 h"]];

  function ranged(traffic, seconds, now) {
    const fine = traffic.history || [];
    const first = fine.length ? fine[0][0] : Infinity;
    const coarse = (traffic.history_coarse || []).filter((row) => row[0] < first);
    const since = (now || 0) - seconds;
    return [...coarse, ...fine].filter((row) => row[0] >= since);
  }

  // A tenant resolver's forwarding (api: tenants[].forwarding, since that resolver
  // started): upstream latency (avg, median), SERVFAIL answers, cache-hit share.
  function ms(value) {
    return value === null || value === undefined ? "–" : `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
  }

  function share(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
  }

  function upstreamCells(f, resolver) {
    const where = resolver && resolver.length ? `the tenant resolver ${resolver.join(", ")}` : "no tenant resolver";
    if (!f) return [0, 1, 2].map(() => el("td", { class: "muted", title: where }, "–"));
    const latency = f.latency_ms;
    return [
      el("td", { class: "num", dataset: { field: "upstream-ms", value: latency ? String(latency.avg) : "" },
        title: `${latency ? `median ${ms(latency.median)} over ${f.upstream_answers} upstream answers` : "nothing asked upstream yet"}; ${where}` },
      latency ? ms(latency.avg) : "–"),
      el("td", { class: `num ${f.upstream_errors ? "bad" : "muted"}`, dataset: { field: "upstream-errors", value: String(f.upstream_errors) } },
        String(f.upstream_errors)),
      el("td", { class: "num", dataset: { field: "cache-hits", value: f.cache_hit_share === null ? "" : String(f.cache_hit_share) } },
        share(f.cache_hit_share)),
    ];
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // A small time-series chart: one line per kind over history rows
  // [t, queries, local, forwarded, nxdomain, denied, warn]; the time axis in clock time;
  // hovering a point in time shows every value then (an SVG title per column).
  function chart(history, kinds, shown, opts) {
    const width = (opts && opts.width) || 420;
    const height = (opts && opts.height) || 110;
    const pad = { l: 34, r: 8, t: 6, b: 16 };
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
    const rows = history || [];
    let max = 0;
    for (const row of rows) for (const kind of shown) max = Math.max(max, row[1 + kinds.indexOf(kind)]);
    const top = max > 0 ? niceCeil(max) : 1;
    const last = rows.length ? rows[rows.length - 1] : null;
    root.dataset.points = String(rows.length);
    root.dataset.first = rows.length ? String(rows[0][0]) : "";
    root.dataset.max = String(max);
    root.dataset.last = last ? String(last[1 + kinds.indexOf("queries")]) : "0";
    const plotW = width - pad.l - pad.r;
    const plotH = height - pad.t - pad.b;
    for (const frac of [0, 0.5, 1]) {
      const y = pad.t + plotH * (1 - frac);
      root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, class: "grid" }));
      const label = svg("text", { x: pad.l - 4, y: y + 3, class: "axis", "text-anchor": "end" });
      label.textContent = fmt(top * frac);
      root.append(label);
    }
    if (rows.length >= 1) {
      const t0 = rows[0][0];
      const span = Math.max(rows[rows.length - 1][0] - t0, 1);
      const xOf = (t) => pad.l + (rows.length === 1 ? plotW : ((t - t0) / span) * plotW);
      for (const [frac, anchor] of [[0, "start"], [0.5, "middle"], [1, "end"]]) {
        if (rows.length === 1 && frac < 1) continue;
        const t = t0 + span * frac;
        const label = svg("text", { x: xOf(t), y: height - 3, class: "axis time", "text-anchor": anchor });
        label.textContent = clock(t);
        root.append(label);
      }
      for (const kind of shown) {
        const index = 1 + kinds.indexOf(kind);
        const points = rows.map((row) => `${xOf(row[0]).toFixed(1)},${(pad.t + plotH * (1 - row[index] / top)).toFixed(1)}`);
        root.append(svg("polyline", {
          points: points.join(" "), fill: "none", stroke: KIND_COLORS[kind],
          "stroke-width": kind === "queries" ? 2 : 1.3, "data-kind": kind,
        }));
      }
      // hover columns: each point's time and values
      rows.forEach((row, i) => {
        const x = xOf(row[0]);
        const prev = i ? xOf(rows[i - 1][0]) : pad.l;
        const next = i < rows.length - 1 ? xOf(rows[i + 1][0]) : width - pad.r;
        const rect = svg("rect", { x: ((prev + x) / 2).toFixed(1), y: pad.t, height: plotH,
          width: Math.max(0.5, (next - prev) / 2).toFixed(1), class: "hover", "data-t": String(row[0]) });
        const title = svg("title", {});
        title.textContent = `${clock(row[0])}\n` + shown.map((k) => `${fmt(row[1 + kinds.indexOf(k)])} ${KIND_LABELS[k]}`).join("\n");
        rect.append(title);
        root.append(rect);
      });
    } else {
      const empty = svg("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" });
      empty.textContent = "no counters from this tenant's sidecars yet";
      root.append(empty);
    }
    return root;
  }

  function niceCeil(value) {
    const exp = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * exp >= value) return step * exp;
    return 10 * exp;
  }

  function legend(shown) {
    return el("div", { class: "legend" }, shown.map((kind) =>
      el("span", { class: "key" }, el("i", { class: `swatch ${kind}` }), KIND_LABELS[kind])));
  }

  function param(name) {
    return new URLSearchParams(window.location.search).get(name);
  }

  // The nav's error count, on every page.
  async function errorCount() {
    try {
      const body = await api("api/v1/errors");
      const count = document.getElementById("error-count");
      count.textContent = body.count ? String(body.count) : "";
      count.classList.toggle("bad", body.count > 0);
    } catch (e) { /* shown by the page's own poll */ }
  }

  function init() {
    const page = document.body.dataset.page;
    for (const link of document.querySelectorAll("nav a[data-nav]")) {
      if (link.dataset.nav === page) link.classList.add("here");
    }
    errorCount();
    setInterval(() => { if (!document.hidden) errorCount(); }, 5000);
  }
  document.addEventListener("DOMContentLoaded", init);

  return { el, api, poll, fmt, ago, plural, dotted, chart, withNow, ranged, RANGES, ms, share, upstreamCells, legend, param, setStatus, KIND_LABELS,
    DEFAULT_TENANT, OUTSIDE };
})();
