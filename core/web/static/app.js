// worldflow web UI: live refresh, local times, and the action buttons.
// Everything from a run is put in the page with textContent, never innerHTML.
"use strict";

(function () {
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : null;
  };
  const token = meta("wf-token");
  const refresh = parseFloat(meta("wf-refresh") || "0");

  function toast(text, isError) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = isError ? "show error" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.className = isError ? "error" : ""; }, isError ? 8000 : 3000);
  }

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }

  function localTime(iso) {
    const d = new Date(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      t.title = t.textContent;
      t.textContent = localTime(t.getAttribute("datetime"));
    });
  }

  function short(x) {
    const t = x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0);
    return t.includes(".") ? t.replace(/0+$/, "").replace(/\.$/, "") : t;
  }

  // The same forms as worldflow's format_duration: 850µs, 12ms, 1.5s, 2m 05s, 3h 04m, 3d 2h.
  function formatDuration(s) {
    if (s <= 0) return "0s";
    if (s < 1e-3) return short(s * 1e6) + "µs";
    if (s < 1) return short(s * 1e3) + "ms";
    if (s < 60) return short(s) + "s";
    let t = Math.round(s);
    if (t < 3600) return `${Math.floor(t / 60)}m ${pad(t % 60)}s`;
    t = Math.round(s / 60);
    if (t < 1440) return `${Math.floor(t / 60)}h ${pad(t % 60)}m`;
    t = Math.round(s / 3600);
    return `${Math.floor(t / 24)}d ${t % 24}h`;
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Worldflow-Token": token },
      body: JSON.stringify(body === undefined ? {} : body),
      credentials: "same-origin",
    });
    let doc = {};
    try { doc = await response.json(); } catch (e) { doc = { error: response.statusText }; }
    if (!response.ok) throw new Error(doc.error || `HTTP ${response.status}`);
    return doc;
  }

  // -- the runs page: rebuild the rows from /api/runs ------------------------------
  function cell(tr, child, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (child !== null) td.append(child);
    tr.append(td);
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function badge(status) {
    const s = document.createElement("span");
    s.className = "status status-" + status;
    s.textContent = status;
    return s;
  }

  function runRow(run) {
    const tr = document.createElement("tr");
    tr.dataset.id = run.id;
    cell(tr, link("/runs/" + encodeURIComponent(run.id), run.id), "id");
    cell(tr, link("/?workflow=" + encodeURIComponent(run.workflow), run.workflow));
    cell(tr, badge(run.status));
    const t = document.createElement("time");
    t.textContent = localTime(run.created_at * 1000);
    t.title = new Date(run.created_at * 1000).toISOString();
    cell(tr, t);
    const end = run.ended_at === null ? Date.now() / 1000 : run.ended_at;
    cell(tr, formatDuration(end - run.created_at) + (run.ended_at === null ? "…" : ""), "num");
    return tr;
  }

  function liveRuns(table) {
    const box = document.getElementById("live");
    const tick = async () => {
      if (!box.checked || document.hidden) return;
      try {
        const response = await fetch(table.dataset.api, { credentials: "same-origin" });
        if (!response.ok) return;
        const doc = await response.json();
        const body = table.tBodies[0];
        if (doc.runs.length === 0) {
          const tr = document.createElement("tr");
          tr.className = "empty";
          cell(tr, "No runs").colSpan = 5;
          body.replaceChildren(tr);
        } else {
          body.replaceChildren(...doc.runs.map(runRow));
        }
        table.dataset.refreshed = String(Date.now());
      } catch (e) { /* the server is restarting: try again next tick */ }
    };
    if (refresh > 0) setInterval(tick, refresh * 1000);
  }

  // -- the run page: reload when the log grows ------------------------------------
  function liveRun(section) {
    const key = "wf-open:" + location.pathname;
    try {
      const open = JSON.parse(sessionStorage.getItem(key) || "[]");
      open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
    } catch (e) { /* nothing saved */ }
    if (!(refresh > 0)) return;
    setInterval(async () => {
      if (document.hidden) return;
      try {
        const response = await fetch(section.dataset.api + "?summary=1", { credentials: "same-origin" });
        if (!response.ok) return;
        const doc = await response.json();
        if (String(doc.last_seq) !== section.dataset.seq) reload();
      } catch (e) { /* try again next tick */ }
    }, refresh * 1000);
  }

  function reload() {
    const open = [...document.querySelectorAll("details[id][open]")].map((d) => d.id);
    try { sessionStorage.setItem("wf-open:" + location.pathname, JSON.stringify(open)); } catch (e) { /* private mode */ }
    location.reload();
  }

  function wireActions() {
    document.querySelectorAll("button.action[data-url]").forEach((button) => {
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
          const doc = await post(button.dataset.url, body);
          if (doc.url) { location.assign(doc.url); return; }
          toast(button.textContent + ": done");
          setTimeout(reload, 700);
        } catch (e) {
          toast(button.textContent + " failed: " + e.message, true);
          button.disabled = false;
        }
      });
    });
    document.querySelectorAll("form.resume").forEach((form) => {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        let payload;
        try {
          payload = JSON.parse(form.elements.payload.value);
        } catch (e) {
          toast("The payload is not valid JSON: " + e.message, true);
          return;
        }
        try {
          await post("/api/hooks/resume", { token: form.dataset.token, payload: payload });
          toast("Hook resumed");
          setTimeout(reload, 700);
        } catch (e) {
          toast("Resume failed: " + e.message, true);
        }
      });
    });
  }

  // A big run's page leaves step details and the event log out: fetch each
  // when it is first opened. The fragment is HTML this server rendered and
  // escaped, exactly as the page itself.
  function wireFragments() {
    document.querySelectorAll("details[data-fragment]").forEach((details) => {
      const load = async () => {
        if (!details.open || details.dataset.loaded) return;
        details.dataset.loaded = "1";
        const slot = details.querySelector(".fragment");
        try {
          const response = await fetch(details.dataset.fragment, { credentials: "same-origin" });
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          const holder = document.createElement("div");
          holder.innerHTML = await response.text();
          localize(holder);
          slot.replaceWith(...holder.childNodes);
        } catch (e) {
          slot.textContent = "could not load: " + e.message;
          delete details.dataset.loaded;
        }
      };
      details.addEventListener("toggle", load);
      load();
    });
  }

  // A step's lane links to its details: open them when followed.
  function openTarget() {
    const el = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (el && el.tagName === "DETAILS") el.open = true;
  }

  // A run's streams: each panel follows its stream over Server-Sent Events (the
  // browser resumes after the last chunk it had if the connection drops).
  function liveStreams() {
    document.querySelectorAll("pre[data-stream]").forEach((pre) => {
      const count = pre.closest("details").querySelector("[data-count]");
      const source = new EventSource(pre.dataset.stream);
      let n = 0;
      source.addEventListener("chunk", (event) => {
        const value = JSON.parse(event.data);
        pre.textContent += typeof value === "string" ? value : JSON.stringify(value) + "\n";
        n = parseInt(event.lastEventId, 10) + 1;
        if (count) count.textContent = String(n);
      });
      source.addEventListener("end", () => source.close());
      source.addEventListener("problem", (event) => {
        toast("stream: " + JSON.parse(event.data), true);
        source.close();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    liveStreams();
    localize(document);
    wireFragments();
    openTarget();
    window.addEventListener("hashchange", openTarget);
    const runs = document.getElementById("runs");
    if (runs) liveRuns(runs);
    const run = document.getElementById("run");
    if (run) liveRun(run);
    wireActions();
  });
})();
