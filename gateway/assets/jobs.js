// The dashboard's jobs page: the table of /api/jobs (filters by state and
// service, refreshed every second), a job's detail (history, result) and
// its log tailing live, with Cancel / Restart / Delete. Every request sends
// the header token field (admin token or a tenant's API key) as the bearer.
// The live log reads the SSE of /api/jobs/{id}/log?follow=1 through fetch,
// not EventSource: EventSource cannot send an Authorization header.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  const REFRESH_MS = 1000;     // the table's refresh
  const PAGE = 50;             // jobs shown
  const MAX_LOG_CHARS = 1 << 20; // the log view keeps its last 1 MiB

  const auth = () => {
    const token = $("#token").value.trim();
    return token ? { authorization: `Bearer ${token}` } : {};
  };
  async function api(path, options = {}) {
    const r = await fetch(`/api${path}`, { ...options, headers: { ...auth(), ...(options.headers || {}) } });
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try { message = (await r.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return r;
  }
  const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
  const duration = (job) => {
    if (!job.started_ms) return "";
    const end = job.finished_ms || Date.now();
    return `${((end - job.started_ms) / 1000).toFixed(1)} s`;
  };

  let selected = null;   // the job shown in the detail
  let follow = null;     // the log follow's AbortController
  let lastSeq = 0;       // the last log line shown

  async function refresh() {
    const query = new URLSearchParams({ limit: String(PAGE) });
    const state = $("#jobs-state").value;
    const service = $("#jobs-service").value.trim();
    if (state) query.set("state", state);
    if (service) query.set("service", service);
    try {
      const page = await (await api(`/jobs?${query}`)).json();
      window.lastJobs = page.jobs; // for tests
      renderTable(page.jobs);
      $("#jobs-error").textContent = "";
    } catch (e) {
      $("#jobs-error").textContent = e.message;
    }
    if (selected) refreshDetail().catch((e) => { $("#jobs-error").textContent = e.message; });
  }

  function renderTable(jobs) {
    const rows = jobs.map((job) => {
      const tr = el("tr", undefined, `job state-${job.state}`);
      tr.dataset.id = job.id;
      if (job.id === selected) tr.classList.add("selected");
      for (const text of [job.id, job.service, job.state, job.node || "", String(job.attempt),
        time(job.created_ms), duration(job)]) {
        tr.append(el("td", text));
      }
      tr.addEventListener("click", () => select(job.id));
      return tr;
    });
    if (rows.length === 0) {
      const tr = el("tr");
      tr.append(el("td", "no jobs", "dim"));
      rows.push(tr);
    }
    $("#jobs tbody").replaceChildren(...rows);
  }

  async function select(id) {
    if (follow) follow.abort();
    selected = id;
    lastSeq = 0;
    $("#job-log").textContent = "";
    $("#job-result").textContent = "";
    $("#job-detail").hidden = false;
    await refreshDetail();
    tail(id);
  }

  async function refreshDetail() {
    const id = selected;
    const job = await (await api(`/jobs/${encodeURIComponent(id)}`)).json();
    if (id !== selected) return;
    $("#job-title").textContent = `${job.id} · ${job.service} · ${job.state}` +
      (job.error ? ` · ${job.error}` : "");
    $("#job-show-result").disabled = job.result_len == null;
    const rows = job.history.map((t) => {
      const tr = el("tr");
      for (const text of [time(t.at_ms), t.state, String(t.attempt), t.node || "", t.note || ""]) {
        tr.append(el("td", text));
      }
      return tr;
    });
    $("#job-history tbody").replaceChildren(...rows);
  }

  function appendLog(text) {
    const pre = $("#job-log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    let all = pre.textContent + text;
    if (all.length > MAX_LOG_CHARS) all = all.slice(all.length - MAX_LOG_CHARS);
    pre.textContent = all;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  // Follows the log: `data:` events are lines, `end` ends it.
  async function tail(id) {
    const controller = new AbortController();
    follow = controller;
    try {
      const r = await api(`/jobs/${encodeURIComponent(id)}/log?follow=1&after=${lastSeq}`,
        { signal: controller.signal });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length === 0 || id !== selected) continue;
          if (event === "end") { appendLog("— job ended —\n"); refreshDetail().catch(() => {}); continue; }
          if (event === "error") { appendLog(`— ${data.join("\n")} —\n`); continue; }
          const entry = JSON.parse(data.join("\n"));
          lastSeq = entry.seq;
          appendLog(entry.stream === "stdout" ? `${entry.line}\n` : `[${entry.stream}] ${entry.line}\n`);
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") appendLog(`— log: ${e.message} —\n`);
    }
  }

  async function act(what) {
    if (!selected) return;
    const id = encodeURIComponent(selected);
    try {
      if (what === "delete") {
        await api(`/jobs/${id}`, { method: "DELETE" });
        if (follow) follow.abort();
        selected = null;
        $("#job-detail").hidden = true;
      } else {
        await api(`/jobs/${id}/${what}`, { method: "POST" });
        if (what === "restart") { appendLog("— restarted —\n"); tail(selected); }
      }
      await refresh();
    } catch (e) {
      $("#jobs-error").textContent = `${what}: ${e.message}`;
    }
  }

  async function showResult() {
    try {
      const r = await api(`/jobs/${encodeURIComponent(selected)}/result`);
      const blob = await r.blob();
      const link = $("#job-result");
      link.href = URL.createObjectURL(blob);
      link.download = `${selected}.result`;
      link.textContent = `download (${blob.size} bytes, ${blob.type || "bytes"})`;
      $("#job-result-text").textContent = (await blob.slice(0, 65536).text());
    } catch (e) {
      $("#jobs-error").textContent = `result: ${e.message}`;
    }
  }

  $("#job-cancel").addEventListener("click", () => act("cancel"));
  $("#job-restart").addEventListener("click", () => act("restart"));
  $("#job-delete").addEventListener("click", () => act("delete"));
  $("#job-show-result").addEventListener("click", showResult);
  $("#jobs-state").addEventListener("change", refresh);
  $("#jobs-service").addEventListener("change", refresh);
  $("#token").addEventListener("change", refresh);
  window.selectJob = select; // for tests
  // For templates.js: the same requests, and showing a job it submitted.
  window.switchyardJobs = { api, select, refresh };
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
