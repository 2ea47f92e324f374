// The dashboard's Gateways panel: the tree of gateways below this one, as
// an echo wave finds it (GET /api/topology, every 3 s): each gateway with
// its queue, its nodes coloured by load (calls in flight over capacity),
// and its child gateways; a branch that did not answer in time is drawn
// missing and the panel says the answer is partial.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const REFRESH_MS = 3000;
  const WAVE_MS = 1500;

  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // Green below half, amber below 90 %, red above: as the node tree.
  function colour(load) {
    return load >= 0.9 ? "#f85149" : load >= 0.5 ? "#d29922" : "#3fb950";
  }

  function gateway(g) {
    const li = el("li", { class: g.missing ? "tree-gateway missing" : "tree-gateway", "data-id": g.id });
    if (g.missing) {
      li.append(el("span", { class: "label" }, `${g.id} — missing: ${g.missing}`));
      return li;
    }
    const capacity = g.nodes.reduce((a, n) => a + n.capacity, 0);
    const inFlight = g.nodes.reduce((a, n) => a + n.in_flight, 0);
    li.append(el("span", { class: "label" },
      `${g.id} · ${g.nodes.length} nodes · ${inFlight}/${capacity} in flight · ${g.queued} queued`));
    const list = el("ul");
    for (const n of g.nodes) {
      const load = n.capacity > 0 ? n.in_flight / n.capacity : 0;
      const node = el("li", {
        class: n.draining ? "tree-node draining" : "tree-node",
        "data-id": n.id,
        "data-load": load.toFixed(2),
        style: `background:${colour(load)}`,
        title: `${n.services.join(", ")} · CPU ${n.cpu_pct.toFixed(0)}%`,
      }, `${n.id} ${n.in_flight}/${n.capacity}${n.draining ? " (drained)" : ""}`);
      list.append(node);
    }
    for (const c of g.children) list.append(gateway(c));
    li.append(list);
    return li;
  }

  function render(view) {
    window.lastTopology = view; // for tests
    const badge = $("#tree-status");
    badge.textContent = `${view.gateways} gateways · ${view.took_ms.toFixed(1)} ms${view.partial ? " · partial" : ""}`;
    badge.className = view.partial ? "badge off" : "badge on";
    const root = el("ul", { class: "gw-tree" });
    root.append(gateway(view.tree));
    $("#tree").replaceChildren(root);
  }

  async function refresh() {
    try {
      const r = await fetch(`/api/topology?timeout_ms=${WAVE_MS}`);
      if (r.ok) render(await r.json());
    } catch (_) { /* the gateway is away: the status badge says so */ }
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
