// The sipmesh console: fetches /api/v1 with the operator's bearer token and renders tables.
"use strict";
const API = "/api/v1";
const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("sipmesh-token") || "";

function status(text, error) {
  const el = $("#status");
  el.textContent = text || "";
  el.className = error ? "error" : "";
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(API + path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data && data.message) || res.statusText);
  return data;
}

function formData(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (v === "") continue;
    const input = form.elements[k];
    out[k] = input && input.type === "number" ? Number(v) : v;
  }
  return out;
}

function query(obj) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== "" && v !== undefined) q.append(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// Render rows as a table; `actions` adds a button per row.
function table(el, columns, rows, actions) {
  el.textContent = "";
  const head = el.insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  if (actions) head.appendChild(document.createElement("th"));
  for (const row of rows) {
    const tr = el.insertRow();
    for (const c of columns) {
      const td = tr.insertCell();
      const v = row[c];
      td.textContent = Array.isArray(v) ? v.join(", ") : typeof v === "object" && v ? JSON.stringify(v) : v === undefined ? "" : String(v);
      if (c === "state") td.className = "state-" + stateShort(v);
    }
    if (actions) {
      const td = tr.insertCell();
      for (const [label, fn] of actions) {
        const b = document.createElement("button");
        b.textContent = label;
        b.addEventListener("click", () => run(() => fn(row)));
        td.appendChild(b);
      }
    }
  }
  if (!rows.length) el.insertRow().insertCell().textContent = "(none)";
}

function stateShort(s) {
  return { DISPATCHER_STATE_ACTIVE: "AP", DISPATCHER_STATE_INACTIVE: "IP", DISPATCHER_STATE_PROBING: "TP", DISPATCHER_STATE_DISABLED: "DX" }[s] || "";
}

async function run(fn) {
  try { await fn(); status(""); } catch (e) { status(e.message, true); }
}

const time = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "");

const loaders = {
  async subscribers() {
    const f = formData($("#sub-filter"));
    const data = await api("GET", "/subscribers" + query(f));
    table($("#sub-table"), ["username", "domain", "has_plaintext_password"], data.subscribers, [
      ["Remove", async (r) => { await api("DELETE", `/subscribers/${encodeURIComponent(r.domain)}/${encodeURIComponent(r.username)}`); await loaders.subscribers(); }],
    ]);
  },
  async location() {
    const data = await api("GET", "/location" + query(formData($("#loc-filter"))));
    const rows = data.bindings.map((b) => ({ ...b, expires: b.expires_at ? Math.max(0, Math.round(b.expires_at - Date.now() / 1000)) + " s" : "permanent" }));
    table($("#loc-table"), ["aor", "contact", "expires", "received", "transport", "user_agent", "edge_id"], rows, [
      ["Remove", async (r) => { await api("DELETE", "/location" + query({ aor: r.aor, contact: r.contact })); await loaders.location(); }],
    ]);
  },
  async domains() {
    const data = await api("GET", "/domains");
    table($("#dom-table"), ["domain", "did", "attrs"], data.domains, [
      ["Remove", async (r) => { await api("DELETE", "/domains/" + encodeURIComponent(r.domain)); await loaders.domains(); }],
    ]);
  },
  async dispatcher() {
    const data = await api("GET", "/dispatcher");
    const rows = data.destinations.map((d) => ({ ...d, state: d.state }));
    const set = (state) => async (r) => { await api("PUT", "/dispatcher/state", { setid: r.setid, destination: r.destination, state }); await loaders.dispatcher(); };
    table($("#ds-table"), ["setid", "destination", "priority", "flags", "state", "description"], rows, [
      ["Active", set("DISPATCHER_STATE_ACTIVE")], ["Inactive", set("DISPATCHER_STATE_INACTIVE")], ["Disable", set("DISPATCHER_STATE_DISABLED")],
      ["Remove", async (r) => { await api("DELETE", "/dispatcher" + query({ id: r.id })); await loaders.dispatcher(); }],
    ]);
  },
  async lcr() {
    const data = await api("GET", "/lcr");
    table($("#lcr-gw"), ["id", "lcr_id", "gw_name", "ip_addr", "hostname", "port", "prefix", "defunct"], data.gateways);
    table($("#lcr-rule"), ["id", "lcr_id", "prefix", "from_uri", "request_uri", "stopper", "enabled"], data.rules);
    table($("#lcr-target"), ["id", "lcr_id", "rule_id", "gw_id", "priority", "weight"], data.targets);
  },
  async address() {
    const data = await api("GET", "/address");
    table($("#addr-table"), ["id", "grp", "ip_addr", "mask", "port", "tag"], data.entries, [
      ["Remove", async (r) => { await api("DELETE", "/address" + query({ id: r.id })); await loaders.address(); }],
    ]);
  },
  async bans() {
    const data = await api("GET", "/bans");
    const rows = data.bans.map((b) => ({ ...b, until: b.expires_at ? time(b.expires_at) : "lifted by hand" }));
    table($("#ban-table"), ["ip", "reason", "until"], rows, [
      ["Lift", async (r) => { await api("DELETE", "/bans/" + encodeURIComponent(r.ip)); await loaders.bans(); }],
    ]);
  },
  async accounting() {
    const acc = await api("GET", "/acc" + query(formData($("#acc-filter"))));
    const rows = acc.records.map((r) => ({ ...r, time: time(r.time) }));
    table($("#acc-table"), ["time", "method", "sip_code", "sip_reason", "src_user", "dst_user", "callid", "src_ip"], rows);
    const cdr = await api("GET", "/cdrs" + query(formData($("#cdr-filter"))));
    const crows = cdr.records.map((r) => ({ ...r, start_time: time(r.start_time), duration: r.duration.toFixed(1) + " s" }));
    table($("#cdr-table"), ["start_time", "caller", "callee", "status", "sip_code", "duration", "end_reason", "call_id"], crows);
  },
  async charts() { await sampleStats(); },
  async versions() {
    const v = await api("GET", "/versions");
    table($("#ver-table"), ["instance", "script", "hash", "loaded_at"], v.versions.map((x) => ({ ...x, loaded_at: time(x.loaded_at) })));
    const i = await api("GET", "/instances");
    table($("#inst-table"), ["id", "services", "host", "version", "health", "grpc_address"], i.instances);
    if (v.missing_instances.length) status("not answering: " + v.missing_instances.join(", "), true);
  },
};

// Live charts: counters become per-second rates between two samples.
const HISTORY = 60;
const history = { regs: {}, rps: {}, tx: {}, replies: {} };
let previous = null;

function sum(values, prefix) {
  let total = 0;
  for (const [k, v] of Object.entries(values)) if (k === prefix || k.startsWith(prefix + "{")) total += v;
  return total;
}

function push(chart, name, value) {
  const series = (history[chart][name] = history[chart][name] || []);
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

async function sampleStats() {
  const now = Date.now() / 1000;
  const data = await api("GET", "/stats");
  const current = {};
  for (const inst of data.instances) {
    const v = inst.values;
    const classes = {};
    for (const [k, x] of Object.entries(v)) {
      const m = k.match(/^core:rcv_replies\{.*class_=(\w+)/);
      if (m) classes[m[1]] = (classes[m[1]] || 0) + x;
    }
    current[inst.instance] = { requests: sum(v, "core:rcv_requests"), classes };
    push("regs", inst.instance, sum(v, "usrloc:registered_contacts"));
    push("tx", inst.instance, sum(v, "tmx:active_transactions"));
    if (previous && previous.values[inst.instance]) {
      const dt = Math.max(0.001, now - previous.time);
      const before = previous.values[inst.instance];
      push("rps", inst.instance, Math.max(0, (current[inst.instance].requests - before.requests) / dt));
      for (const [cls, x] of Object.entries(classes)) {
        push("replies", inst.instance + " " + cls, Math.max(0, (x - (before.classes[cls] || 0)) / dt));
      }
    }
  }
  previous = { time: now, values: current };
  SipmeshChart.draw($("#chart-regs"), history.regs, HISTORY);
  SipmeshChart.draw($("#chart-rps"), history.rps, HISTORY);
  SipmeshChart.draw($("#chart-tx"), history.tx, HISTORY);
  SipmeshChart.draw($("#chart-replies"), history.replies, HISTORY);
  $("#chart-legend").textContent = data.missing_instances.length ? "not answering: " + data.missing_instances.join(", ") : data.instances.length + " instance(s)";
}

function current() {
  return (location.hash || "#subscribers").slice(1);
}

function show() {
  const name = current();
  for (const s of document.querySelectorAll("main section")) s.classList.toggle("shown", s.id === name);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.section === name);
  if (token && loaders[name]) run(loaders[name]);
}

function submit(id, fn) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(() => fn(ev.target));
  });
}

submit("#login", async () => {
  token = $("#token").value.trim();
  sessionStorage.setItem("sipmesh-token", token);
  await api("GET", "/ping");
  $("#who").textContent = "token accepted";
  show();
});
submit("#sub-add", async (f) => { await api("POST", "/subscribers", formData(f)); f.reset(); status("subscriber added"); await loaders.subscribers(); });
submit("#sub-filter", () => loaders.subscribers());
submit("#loc-filter", () => loaders.location());
submit("#dom-add", async (f) => { await api("POST", "/domains", formData(f)); f.reset(); await loaders.domains(); });
submit("#ds-add", async (f) => { await api("POST", "/dispatcher", formData(f)); f.reset(); await loaders.dispatcher(); });
submit("#addr-add", async (f) => { await api("POST", "/address", formData(f)); await loaders.address(); });
submit("#ban-add", async (f) => { await api("POST", "/bans", formData(f)); f.reset(); await loaders.bans(); });
submit("#acc-filter", () => loaders.accounting());
submit("#cdr-filter", () => loaders.accounting());
$("#reload").addEventListener("click", () => run(async () => {
  const r = await api("POST", "/reload", { what: "all" });
  status("reloaded on " + r.results.length + " instance(s)" + (r.missing_instances.length ? "; not answering: " + r.missing_instances.join(", ") : ""));
  await loaders.versions();
}));
window.addEventListener("hashchange", show);
setInterval(() => {
  const name = current();
  if (token && (name === "location" || name === "charts")) run(loaders[name]);
}, 2000);
if (token) $("#who").textContent = "token set";
show();
