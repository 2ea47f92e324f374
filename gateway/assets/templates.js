// The dashboard's forms for jobs: "New job" submits POST /api/jobs (a
// service and its payload, or a template and its parameters, with the
// options by name) and shows the new job with its live log; "Templates"
// lists GET /api/templates (clicking one picks it in the job form) and
// saves a template with POST /api/templates (the admin token); "Settings"
// shows and changes the most jobs one node runs at once (GET and PUT
// /api/job-settings, the admin token). Requests go through jobs.js's
// `api`, so they carry the token field as the bearer.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const { api, select, refresh } = window.switchyardJobs;
  const REFRESH_MS = 10000; // the templates table's refresh

  // "key=value" lines (blank ones skipped) to an object.
  function pairs(text) {
    const out = {};
    for (const line of text.split("\n")) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      const cut = trimmed.indexOf("=");
      if (cut <= 0) throw new Error(`"${trimmed}" is not key=value`);
      out[trimmed.slice(0, cut).trim()] = trimmed.slice(cut + 1);
    }
    return out;
  }
  const number = (sel) => {
    const value = $(sel).value.trim();
    return value === "" ? undefined : Number(value);
  };
  const post = (path, body) => api(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

  async function refreshTemplates() {
    let list;
    try {
      list = (await (await api("/templates")).json()).templates;
    } catch (e) {
      return; // jobs.js shows the refusal
    }
    window.lastTemplates = list; // for tests
    const rows = list.map((t) => {
      const tr = document.createElement("tr");
      tr.className = "template";
      tr.dataset.name = t.name;
      const defaults = Object.entries(t.defaults).map(([k, v]) => `${k}=${v}`).join(" ");
      for (const text of [t.name, t.service, t.payload, defaults,
        t.watchdog_s ? `${t.watchdog_s} s` : "", t.source, t.description]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      tr.addEventListener("click", () => {
        $("#job-new-template").value = t.name;
        $("#job-new").open = true;
      });
      return tr;
    });
    $("#templates tbody").replaceChildren(...rows);
    const picker = $("#job-new-template");
    const chosen = picker.value;
    const options = [new Option("none", "")].concat(list.map((t) => new Option(t.name, t.name)));
    picker.replaceChildren(...options);
    picker.value = list.some((t) => t.name === chosen) ? chosen : "";
  }

  async function submitJob(event) {
    event.preventDefault();
    try {
      const template = $("#job-new-template").value;
      const body = template
        ? { template, params: pairs($("#job-new-params").value) }
        : { service: $("#job-new-service").value.trim(), payload: $("#job-new-payload").value };
      body.priority = number("#job-new-priority") || 0;
      body.realtime = $("#job-new-realtime").checked;
      body.idempotent = $("#job-new-idempotent").checked;
      const watchdog = number("#job-new-watchdog");
      if (watchdog !== undefined) body.watchdog_s = watchdog;
      const attempts = number("#job-new-attempts");
      if (attempts !== undefined) body.max_attempts = attempts;
      const job = await (await post("/jobs", body)).json();
      $("#jobs-error").textContent = "";
      await refresh();
      await select(job.id);
    } catch (e) {
      $("#jobs-error").textContent = `submit: ${e.message}`;
    }
  }

  async function saveTemplate(event) {
    event.preventDefault();
    try {
      const body = {
        name: $("#template-name").value.trim(),
        service: $("#template-service").value.trim(),
        payload: $("#template-payload").value,
        defaults: pairs($("#template-defaults").value),
        description: $("#template-description").value,
      };
      const watchdog = number("#template-watchdog");
      if (watchdog !== undefined) body.watchdog_s = watchdog;
      await post("/templates", body);
      $("#jobs-error").textContent = "";
      await refreshTemplates();
    } catch (e) {
      $("#jobs-error").textContent = `template: ${e.message}`;
    }
  }

  async function refreshSettings() {
    try {
      const settings = await (await api("/job-settings")).json();
      window.lastJobSettings = settings; // for tests
      const limit = settings.max_per_node;
      $("#job-settings-now").textContent = limit ? `now ${limit} a node` : "now no limit";
      if (document.activeElement !== $("#job-settings-max")) $("#job-settings-max").value = limit;
    } catch (e) {
      // jobs.js shows the refusal
    }
  }

  async function saveSettings(event) {
    event.preventDefault();
    try {
      const max = number("#job-settings-max");
      if (max === undefined || !Number.isInteger(max) || max < 0) {
        throw new Error("max jobs per node is a whole number, 0 for no limit");
      }
      await api("/job-settings", {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ max_per_node: max }),
      });
      $("#jobs-error").textContent = "";
      await refreshSettings();
    } catch (e) {
      $("#jobs-error").textContent = `settings: ${e.message}`;
    }
  }

  $("#job-form").addEventListener("submit", submitJob);
  $("#template-form").addEventListener("submit", saveTemplate);
  $("#job-settings-form").addEventListener("submit", saveSettings);
  const refreshForms = () => { refreshTemplates(); refreshSettings(); };
  $("#token").addEventListener("change", refreshForms);
  refreshForms();
  setInterval(refreshForms, REFRESH_MS);
})();
