// The dashboard's Cluster panel: the gateways of this gateway's cluster
// (GET /api/cluster, every 2 s) with their addresses, agents and calls in
// flight, and the health of the link to etcd.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const REFRESH_MS = 2000;
  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = text === undefined || text === "" ? "-" : String(text);
    if (cls) td.className = cls;
    return td;
  };

  function etcdBadge(view) {
    const badge = $("#cluster-etcd");
    if (!view.etcd) {
      badge.textContent = "no etcd: a cluster of one";
      badge.className = "badge dim";
      return;
    }
    const endpoints = view.etcd.endpoints.join(", ");
    if (view.etcd.up) {
      badge.textContent = `etcd up · ${endpoints} · lease ${view.etcd.lease_ttl_s} s`;
      badge.className = "badge on";
    } else {
      const since = view.etcd.degraded_since_unix_ms;
      const ago = since ? ` for ${Math.round((Date.now() - since) / 1000)} s` : "";
      badge.textContent = `etcd down${ago}: degraded, last list kept`;
      badge.title = view.etcd.last_error || "";
      badge.className = "badge off";
    }
  }

  function render(view) {
    window.lastCluster = view; // for tests
    etcdBadge(view);
    const body = $("#cluster tbody");
    body.replaceChildren();
    for (const m of view.members) {
      const tr = document.createElement("tr");
      tr.className = m.me ? "member me" : "member";
      tr.append(
        cell(m.me ? `${m.name} (this gateway)` : m.name),
        cell(m.quic), cell(m.http), cell(m.admin),
        cell(m.agents), cell(m.calls_in_flight),
        cell(m.started_unix_ms ? new Date(m.started_unix_ms).toLocaleString() : ""),
      );
      body.append(tr);
    }
  }

  async function refresh() {
    try {
      const r = await fetch("/api/cluster");
      if (r.ok) render(await r.json());
    } catch (_) { /* the gateway is away: the status badge says so */ }
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
