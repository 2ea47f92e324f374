// The Switchyard dashboard: draws the snapshot the page was served with
// (else /api/snapshot) at once, then lives on the Server-Sent Events of
// /api/events (a `snapshot` every second, a `change` at once when a node
// comes, goes or drains, or a policy changes).
"use strict";

const STATS_STALE_MS = 3000;    // a node without stats this long is unhealthy
const HIGH_P99_MS = 1000;       // p99 above this raises a latency alert
const IMBALANCE = 2.0;          // a node with this many times the mean share

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid);
  return e;
};
const pct = (used, total) => (total > 0 ? Math.min(100, (100 * used) / total) : 0);
const heat = (p) => (p >= 90 ? "hot" : p >= 70 ? "warm" : "");
const bar = (p, title) => {
  const b = el("div", { class: `bar ${heat(p)}`, title });
  b.append(el("span", { style: `width:${p.toFixed(1)}%` }));
  return b;
};

const charts = {};
let events = [];                  // recent change events, newest first

$("#token").value = localStorage.getItem("switchyard-admin-token") || "";
$("#token").addEventListener("change", (e) => localStorage.setItem("switchyard-admin-token", e.target.value));
let whyChosen = false;            // the user picked the service "why this node" shows
$("#why-service").addEventListener("change", () => { whyChosen = true; if (last) renderWhy(last); });

function render(snap) {
  $("#uptime").textContent = `up ${snap.uptime_s} s · ${snap.nodes.length} nodes · ${snap.services.length} services`;
  renderNodes(snap);
  renderTopology(snap);
  renderServices(snap);
  renderCharts(snap);
  renderShare(snap);
  renderAlerts(snap);
  if (snap.cache) renderCache(snap.cache);
  renderWhy(snap);
}

// The service with the most calls/s (then in flight, then waiting).
const busiest = (services) => services.reduce((best, s) => {
  if (!best) return s;
  const key = (x) => [x.calls_per_s, x.in_flight, x.queue.length];
  const [a, b] = [key(s), key(best)];
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] > b[i] ? s : best;
  return best;
}, null);

// "Why this node": the chosen service's latest decisions from
// /api/decisions (policy, node, reason, the best candidates' scores).
// Until the user picks one, it follows the busiest service (staying on the
// current one while none is strictly busier).
let whyBusy = false;
async function renderWhy(snap) {
  const select = $("#why-service");
  const names = snap.services.map((s) => s.name);
  const current = select.value;
  if ([...select.options].map((o) => o.value).join() !== names.join()) {
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    if (names.includes(current)) select.value = current;
  }
  if (!whyChosen) {
    const top = busiest(snap.services);
    const shown = snap.services.find((s) => s.name === select.value);
    if (top && (!shown || busiest([shown, top]) !== shown)) select.value = top.name;
  }
  if (!select.value || whyBusy) return;
  whyBusy = true;
  try {
    const r = await fetch(`/api/decisions?service=${encodeURIComponent(select.value)}&limit=10`);
    const { decisions } = await r.json();
    const body = $("#why tbody");
    body.replaceChildren(...decisions.map((d) => el("tr", { "data-call": d.call_id },
      el("td", { text: new Date(d.at_unix_ms).toLocaleTimeString() }),
      el("td", { text: d.call_id, title: d.request_id ? `request id ${d.request_id}` : "" }),
      el("td", { text: d.node }),
      el("td", { text: d.policy }),
      el("td", { class: "reason", text: d.reason || "(no reason: the policy does not explain)" }),
      el("td", { text: d.top.map((c) => c.score === null ? c.node : `${c.node} ${+c.score.toFixed(3)}`).join(", ") + ` (of ${d.offered})` }))));
    if (decisions.length === 0) body.append(el("tr", {}, el("td", { colspan: 6, text: "no decisions yet" })));
  } catch (e) {
    console.error("decisions failed", e);
  } finally {
    whyBusy = false;
  }
}

function renderNodes(snap) {
  const box = $("#nodes");
  box.replaceChildren();
  for (const n of snap.nodes) {
    const stale = n.last_stats_ms > STATS_STALE_MS;
    const card = el("div", { class: `node${n.draining ? " draining" : ""}${stale ? " stale" : ""}`, "data-node": n.spec.id });
    card.append(el("h3", { text: n.spec.id + (n.draining ? " (draining)" : "") }));
    const jobs = n.jobs_in_flight ? ` · ${n.jobs_in_flight} job${n.jobs_in_flight === 1 ? "" : "s"} running` : "";
    card.append(el("div", { class: "meta", "data-jobs": n.jobs_in_flight || 0, text: `${n.spec.region || "no region"} · ${n.calls_total} calls${jobs} · stats ${n.last_stats_ms} ms ago` }));
    const s = n.stats;
    if (s) {
      card.append(el("div", { class: "meta", text: `CPU ${s.cpu_pct.toFixed(0)}%` }), bar(s.cpu_pct, "CPU"));
      const m = pct(s.mem_used_mib, s.mem_total_mib);
      card.append(el("div", { class: "meta", text: `memory ${s.mem_used_mib}/${s.mem_total_mib} MiB` }), bar(m, "memory"));
      for (const g of s.gpus) {
        card.append(el("div", { class: "meta gpu", text: `GPU ${g.index} ${g.name}: ${g.util_pct.toFixed(0)}%, ${g.mem_used_mib}/${g.mem_total_mib} MiB, ${g.temperature_c.toFixed(0)} °C, ${g.power_w.toFixed(0)} W` }));
        card.append(bar(g.util_pct, "GPU utilisation"), bar(pct(g.mem_used_mib, g.mem_total_mib), "GPU memory"));
      }
      if (s.gpus.length === 0) card.append(el("div", { class: "meta", text: "no GPU (NVML absent)" }));
    }
    const svcs = el("div");
    for (const v of n.services) {
      const out = v.ejected_for_ms > 0 ? ` ejected (${(v.ejected_why || "").replace("_", " ")}) ${(v.ejected_for_ms / 1000).toFixed(0)} s` : "";
      const sick = v.unhealthy ? " unhealthy" : "";
      svcs.append(el("span", { class: `svc${v.loaded ? "" : " unloaded"}${sick}${out ? " ejected" : ""}`, "data-service": v.name, title: `${v.in_flight}/${v.max_concurrent} in flight, ${v.latency_ms.toFixed(1)} ms, ejected ${v.ejections} times${v.unhealthy ? ", failing its health check: no calls" : ""}`, text: `${v.name} ${v.in_flight}/${v.max_concurrent}${sick}${out}` }));
    }
    card.append(svcs);
    // The model servers' own load, per service whose agent scrapes it.
    for (const l of (s && s.model_load) || []) {
      const kv = Math.max(0, Math.min(100, l.kv_cache_pct));
      card.append(el("div", { class: "meta model-load", "data-service": l.service, title: "from the model server's Prometheus endpoint (metrics_url)", text: `${l.service}: ${l.waiting} waiting · ${l.running} running · KV ${kv.toFixed(0)}%` }), bar(kv, "KV cache"));
    }
    for (const slot of n.slots) {
      const state = slot.swapping_to ? `swapping to ${slot.swapping_to}` : `holds ${slot.loaded || "nothing"}`;
      card.append(el("div", { class: "meta", text: `slot ${slot.name}: ${state}; can host ${slot.can_host.join(", ")}${slot.cooldown_left_ms > 0 ? `; cooldown ${(slot.cooldown_left_ms / 1000).toFixed(0)} s` : ""}` }));
    }
    box.append(card);
  }
  if (snap.nodes.length === 0) box.append(el("div", { class: "meta", text: "no node registered" }));
}

// Gateway → nodes → services, each service coloured by load (in flight /
// max): the fleet drawn as a tree.
function renderTopology(snap) {
  const ns = "http://www.w3.org/2000/svg";
  const rows = snap.nodes.map((n) => n.services.length).reduce((a, b) => a + Math.max(b, 1), 0);
  const h = Math.max(60, rows * 22 + 20);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "100%"); svg.setAttribute("height", h); svg.setAttribute("viewBox", `0 0 720 ${h}`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e); return e;
  };
  const gy = h / 2;
  add("circle", { cx: 40, cy: gy, r: 14, fill: "#58a6ff", class: "gateway" });
  add("text", { x: 20, y: gy + 30 }, "gateway");
  let y = 20;
  for (const n of snap.nodes) {
    const span = Math.max(n.services.length, 1) * 22;
    const ny = y + span / 2 - 11;
    add("line", { x1: 54, y1: gy, x2: 250, y2: ny, stroke: "#2d3643" });
    add("rect", { x: 250, y: ny - 10, width: 150, height: 20, rx: 4, fill: n.draining ? "#d29922" : "#243042", class: "topo-node", "data-node": n.spec.id });
    add("text", { x: 258, y: ny + 4 }, n.spec.id);
    n.services.forEach((s, i) => {
      const sy = y + i * 22;
      const load = s.max_concurrent > 0 ? s.in_flight / s.max_concurrent : 0;
      const colour = !s.loaded ? "#39414d" : load >= 0.9 ? "#f85149" : load >= 0.5 ? "#d29922" : "#3fb950";
      add("line", { x1: 400, y1: ny, x2: 470, y2: sy, stroke: "#2d3643" });
      add("rect", { x: 470, y: sy - 9, width: 230, height: 18, rx: 4, fill: colour, class: "topo-service" });
      add("text", { x: 476, y: sy + 4 }, `${s.name} ${s.in_flight}/${s.max_concurrent}${s.loaded ? "" : " (not loaded)"}`);
    });
    y += span;
  }
  $("#topology").replaceChildren(svg);
}

function renderServices(snap) {
  const body = $("#services tbody");
  const focused = document.activeElement && document.activeElement.tagName === "SELECT";
  if (focused) return; // do not yank a menu the user is using
  body.replaceChildren();
  const names = snap.policies.policies.map((p) => p.name);
  for (const s of snap.services) {
    const select = el("select", { "data-service": s.name });
    for (const name of names) {
      const o = el("option", { value: name, text: name });
      if (name === s.policy) o.selected = true;
      select.append(o);
    }
    if (!names.includes(s.policy)) select.prepend(el("option", { value: s.policy, text: s.policy, selected: "" }));
    select.addEventListener("change", () => setPolicy(s.name, select.value));
    body.append(el("tr", { "data-service": s.name },
      el("td", { text: s.name }), el("td", {}, select),
      el("td", { text: s.nodes_loaded.join(", ") || "-" }),
      el("td", { text: s.in_flight }), el("td", { text: `${s.queue.length}/${s.queue.capacity}` }),
      el("td", { text: `${s.queue.oldest_wait_ms} ms` }),
      el("td", { text: s.calls_per_s.toFixed(2) }),
      tenantsCell(s.tenants || []),
      el("td", { text: s.p50_ms.toFixed(1) }), el("td", { text: s.p99_ms.toFixed(1) })));
  }
}

// Each tenant's calls/s over the last minute, busiest first:
// "team-a 3.20/s · team-b 0.50/s" (errors/s too when some failed).
function tenantsCell(tenants) {
  const td = el("td", { class: "tenants" });
  tenants.forEach((t, i) => {
    if (i > 0) td.append(" · ");
    const errors = t.errors_per_s > 0 ? ` (${t.errors_per_s.toFixed(2)} err/s)` : "";
    td.append(el("span", {
      class: `tenant${t.errors_per_s > 0 ? " failing" : ""}`, "data-tenant": t.tenant,
      title: `${t.tenant}: ${t.calls_per_s.toFixed(2)} calls/s, ${t.errors_per_s.toFixed(2)} errors/s over the last minute (or since the gateway started)`,
      text: `${t.tenant} ${t.calls_per_s.toFixed(2)}/s${errors}`,
    }));
  });
  if (tenants.length === 0) td.textContent = "-";
  return td;
}

async function setPolicy(service, policy) {
  const r = await fetch(`/api/services/${encodeURIComponent(service)}/policy`, {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: `Bearer ${$("#token").value}` },
    body: JSON.stringify({ policy }),
  });
  if (!r.ok) alert(`policy change refused: ${(await r.json()).error.message}`);
}

function lineChart(id, series, data) {
  const node = document.getElementById(id);
  const width = Math.max(300, node.clientWidth || 420);
  const key = series.map((s) => s.label).join("|");
  if (charts[id] && charts[id].key === key) {
    charts[id].plot.setData(data);
    return;
  }
  if (charts[id]) charts[id].plot.destroy();
  const palette = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf"];
  const opts = {
    width, height: 200,
    scales: { x: { time: false } },
    axes: [{ stroke: "#8a94a6", label: "s" }, { stroke: "#8a94a6" }],
    series: [{ label: "t" }, ...series.map((s, i) => ({ label: s.label, stroke: palette[i % palette.length], dash: s.dash, width: 2 }))],
  };
  charts[id] = { key, plot: new uPlot(opts, data, node) };
}

function renderCharts(snap) {
  const names = Object.keys(snap.series);
  const ts = names.length ? snap.series[names[0]].map((p) => p.t) : [snap.uptime_s];
  lineChart("chart-rate", names.map((n) => ({ label: n })), [ts, ...names.map((n) => snap.series[n].map((p) => p.calls))]);
  const lat = [];
  const latSeries = [];
  for (const n of names) {
    latSeries.push({ label: `${n} p50` }, { label: `${n} p99`, dash: [6, 4] });
    lat.push(snap.series[n].map((p) => (p.calls ? p.p50_ms : null)), snap.series[n].map((p) => (p.calls ? p.p99_ms : null)));
  }
  lineChart("chart-latency", latSeries, [ts, ...lat]);
  // Queue depth over the same window, sampled by the gateway (the deepest
  // queues apart, the rest as "(other)"; none while nothing waited).
  const queues = snap.queue_series || {};
  const qNames = Object.keys(queues);
  const qt = qNames.length ? queues[qNames[0]].map((p) => p.t) : ts;
  lineChart("chart-queue", qNames.map((n) => ({ label: n })), [qt, ...qNames.map((n) => queues[n].map((p) => p.depth))]);
}

function renderShare(snap) {
  const total = Object.values(snap.node_share).reduce((a, b) => a + b, 0);
  const box = $("#share");
  box.replaceChildren();
  for (const [node, calls] of Object.entries(snap.node_share)) {
    const p = total ? (100 * calls) / total : 0;
    box.append(el("div", { class: "share-row", "data-node": node }, el("span", { class: "label", text: `${node} ${p.toFixed(0)}%` }), bar(p, `${calls} calls`)));
  }
  if (total === 0) box.append(el("div", { class: "meta", text: "no calls in the last minute" }));
}

// Alert rules: unhealthy node, load imbalance, high latency;
// plus queues that build up and drained nodes.
function renderAlerts(snap) {
  const alerts = [];
  for (const n of snap.nodes) {
    if (n.last_stats_ms > STATS_STALE_MS) alerts.push(["bad", `node ${n.spec.id} unhealthy: no stats for ${(n.last_stats_ms / 1000).toFixed(1)} s`]);
    if (n.draining) alerts.push(["warn", `node ${n.spec.id} is draining`]);
    for (const v of n.services) {
      if (v.ejected_for_ms > 0) alerts.push(["bad", `node ${n.spec.id} ejected from ${v.name} (${(v.ejected_why || "").replace("_", " ")}) for ${(v.ejected_for_ms / 1000).toFixed(0)} s more`]);
    }
  }
  const shares = Object.entries(snap.node_share);
  const total = shares.reduce((a, [, c]) => a + c, 0);
  if (shares.length > 1 && total >= 20) {
    const mean = total / snap.nodes.length;
    for (const [node, calls] of shares) if (calls > IMBALANCE * mean) alerts.push(["warn", `load imbalance: ${node} served ${calls} of ${total} calls in the last minute`]);
  }
  for (const s of snap.services) {
    if (s.p99_ms > HIGH_P99_MS) alerts.push(["warn", `high latency: ${s.name} p99 ${s.p99_ms.toFixed(0)} ms`]);
    if (s.queue.length > 0 && s.queue.oldest_wait_ms > 5000) alerts.push(["warn", `queue building: ${s.name} has ${s.queue.length} waiting, oldest ${(s.queue.oldest_wait_ms / 1000).toFixed(1)} s`]);
  }
  for (const e of events.slice(0, 5)) alerts.push(["info", `${new Date(e.at_unix_ms).toLocaleTimeString()} ${e.kind}: ${e.detail}`]);
  const list = $("#alerts");
  list.replaceChildren(...(alerts.length ? alerts : [["ok", "none"]]).map(([level, text]) => el("li", { class: level, text })));
}

// Cache hit ratio per cached service: calls no node had to run (stored hits
// and single-flight followers) over all calls of the service.
function renderCache(cache) {
  $("#cache-section").hidden = false;
  const box = $("#cache");
  box.replaceChildren(el("div", { class: "meta", text: `${cache.entries} entries, ${(cache.total_bytes / 1048576).toFixed(1)} of ${(cache.max_bytes / 1048576).toFixed(0)} MiB` }));
  for (const s of cache.services) {
    const all = s.hits + s.coalesced + s.misses;
    const ratio = all ? (100 * (s.hits + s.coalesced)) / all : 0;
    box.append(el("div", { class: "share-row cache-row", "data-service": s.service },
      el("span", { class: "label", text: `${s.service} ${ratio.toFixed(0)}%` }),
      bar(ratio, `${s.hits} hits, ${s.coalesced} coalesced, ${s.misses} misses, ${s.entries} entries, TTL ${s.ttl_s} s`)));
  }
  if (cache.services.length === 0) box.append(el("div", { class: "meta", text: "no service is cached (set cache_ttl_s)" }));
}

let last = null; // the latest snapshot (also window.lastSnapshot, for tests)
// The snapshot the page was served with, drawn before anything else loads
// (window.firstSnapshot, for tests); /api/snapshot when there is none.
function embedded() {
  try {
    return JSON.parse(document.getElementById("snapshot").textContent);
  } catch (e) {
    console.error("no snapshot in the page", e);
    return null;
  }
}
function drawFirst(snap) {
  last = snap;
  window.lastSnapshot = window.firstSnapshot = snap;
  render(snap);
  if ($("#status").textContent !== "live") {
    $("#status").textContent = "snapshot";
    $("#status").title = "drawn from a snapshot; live once the event stream opens";
  }
}
const first = embedded();
if (first) drawFirst(first);
async function start() {
  if (!first) {
    try {
      drawFirst(await (await fetch("/api/snapshot")).json());
    } catch (e) {
      console.error("snapshot failed", e);
    }
  }
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { $("#status").textContent = "live"; $("#status").className = "badge on"; });
  source.addEventListener("error", () => { $("#status").textContent = "reconnecting…"; $("#status").className = "badge off"; });
  source.addEventListener("snapshot", (e) => { last = JSON.parse(e.data); window.lastSnapshot = last; render(last); });
  source.addEventListener("change", (e) => {
    events.unshift(JSON.parse(e.data));
    events = events.slice(0, 20);
    if (last) renderAlerts(last);
  });
}
start();
