// Explain: namespace, pod labels, name and type in; the policy, the rule and what Envoy
// answers out: GET api/v1/explain with the same parameters (the page is a form over it).
"use strict";

(() => {
  const { el, api, param } = Console;
  const FIELDS = [
    ["namespace", "namespace", "acme"],
    ["labels", "pod labels (k=v,k2=v2)", "app=sleep"],
    ["name", "name", "httpbin.acme.com"],
    ["type", "type", "A"],
  ];

  function form() {
    const inputs = FIELDS.map(([key, label, example]) => el("label", {}, label,
      key === "type"
        ? el("select", { name: key, id: `f-${key}` }, [...new Set(["A", "AAAA", "SRV", "TXT", param(key) || "A"])].map((t) =>
          el("option", { value: t, selected: (param(key) || "A") === t }, t)))
        : el("input", { name: key, id: `f-${key}`, value: param(key) || "", placeholder: example })));
    return el("form", { id: "explain-form", class: "card form", onsubmit: (e) => { e.preventDefault(); run(); } },
      inputs, el("button", { type: "submit", id: "explain-go" }, "Explain"));
  }

  function query() {
    const q = new URLSearchParams();
    for (const [key] of FIELDS) q.set(key, document.getElementById(`f-${key}`).value.trim());
    return q;
  }

  function result(body) {
    const envoy = body.envoy;
    const rows = [
      ["tenant", body.tenant],
      ["policy", body.policy || "none (default view)"],
      ["rule", body.decision.action ? `${body.decision.action}: ${body.decision.rule}` : body.decision.rule],
      ["Envoy answers", `${envoy.rcode}${envoy.records.length ? " " + envoy.records.join(", ") : ""}`],
      ["table entry", envoy.matched],
      ["forwarded to", envoy.forwarded_to.length ? envoy.forwarded_to.join(", ") : null],
      ["tenant resolver", envoy.resolver],
      ["why", body.why],
      ["conflicts", body.conflicts.length ? body.conflicts.join(", ") : null],
    ];
    return el("div", { class: "card", id: "explain-result", dataset: { rcode: envoy.rcode, tenant: body.tenant } },
      el("dl", { class: "policy" }, rows.filter(([, v]) => v).map(([k, v]) =>
        [el("dt", {}, k), el("dd", { dataset: { field: k } }, v)])),
      body.notes.length ? el("ul", { class: "muted" }, body.notes.map((n) => el("li", {}, n))) : null,
      el("details", {}, el("summary", {}, "as JSON (GET api/v1/explain)"),
        el("pre", { id: "explain-json" }, JSON.stringify(body, null, 2))));
  }

  async function run() {
    const q = query();
    history.replaceState(null, "", `?${q}`);
    const out = document.getElementById("explain-out");
    if (!q.get("namespace") || !q.get("name")) {
      out.replaceChildren(el("p", { class: "muted" }, "Give at least a namespace and a name."));
      return;
    }
    try {
      out.replaceChildren(result(await api(`api/v1/explain?${q}`)));
      Console.setStatus(`explained at ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      out.replaceChildren(el("p", { class: "bad", id: "explain-error" }, error.message));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("main").replaceChildren(
      el("h1", {}, "Explain a query"),
      el("p", { class: "muted" }, "Which DnsPolicy applies to a pod, which rule decides the name, and what its Envoy sidecar answers (the same as GET api/v1/explain)."),
      form(), el("div", { id: "explain-out" }));
    if (param("namespace") && param("name")) run(); else Console.setStatus("ready");
  });
})();
