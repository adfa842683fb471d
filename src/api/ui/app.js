/* dagd web UI (docs/ui.md): a page that talks only to the REST API, signed in by a session
 * cookie, with the session's CSRF token in X-CSRF-Token on every request that changes state. */
"use strict";
(function () {
  let csrf = null;
  let timer = null;
  let renderId = 0;
  const POLL_MS = 1500;
  const $ = (id) => document.getElementById(id);

  /* ---- DOM */
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids.flat()) if (c !== null && c !== undefined && c !== false)
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of kids.flat()) if (c) e.appendChild(c);
    return e;
  }
  const enc = encodeURIComponent;
  function say(msg, bad) { const st = $("status"); st.textContent = msg || ""; st.className = "status" + (bad ? " error" : ""); }

  /* ---- API */
  class ApiError extends Error { constructor(status, msg) { super(msg); this.status = status; } }
  async function api(method, path, body, text) {
    const headers = {};
    if (method !== "GET") headers["X-CSRF-Token"] = csrf || "";
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && !path.startsWith("/ui/sign-in")) { showSignIn(); throw new ApiError(401, "signed out"); }
    if (!r.ok) {
      let detail = r.statusText;
      try { const j = await r.json(); detail = j.detail || j.error || detail; } catch (e) { /* not JSON */ }
      throw new ApiError(r.status, detail);
    }
    return text ? r.text() : r.json();
  }
  const A = "/api/v1";
  const dagPath = (d) => A + "/dags/" + enc(d);
  const runPath = (d, r) => dagPath(d) + "/runs/" + enc(r);

  /* ---- formatting */
  function fmtTime(t) { return t ? t.replace("T", " ").replace(/\.\d+Z$|Z$/, "") + " UTC" : "—"; }
  function fmtDur(sec) {
    if (sec === null || sec === undefined || isNaN(sec)) return "";
    if (sec < 60) return sec.toFixed(sec < 10 ? 1 : 0) + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min " + Math.round(sec % 60) + " s";
    return Math.floor(sec / 3600) + " h " + Math.round((sec % 3600) / 60) + " min";
  }
  function runDur(r) {
    if (!r.start_date) return null;
    const end = r.end_date ? Date.parse(r.end_date) : Date.now();
    return (end - Date.parse(r.start_date)) / 1000;
  }
  const DOW = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
  function cronWords(sch) {
    if (!sch) return "manual only";
    const presets = { "@once": "once", "@hourly": "every hour", "@daily": "every day at 00:00",
      "@midnight": "every day at 00:00", "@weekly": "every Sunday at 00:00", "@monthly": "on the 1st of every month at 00:00",
      "@yearly": "every 1 January at 00:00", "@annually": "every 1 January at 00:00" };
    if (presets[sch]) return presets[sch];
    if (/^every /.test(sch)) return sch;
    const f = sch.trim().split(/\s+/);
    if (f.length !== 5) return sch;
    const [mi, ho, dom, mon, dow] = f;
    const num = (x) => /^\d+$/.test(x);
    const hm = num(mi) && num(ho) ? "at " + ho.padStart(2, "0") + ":" + mi.padStart(2, "0") : null;
    if (mi === "*" && ho === "*" && dom === "*" && mon === "*" && dow === "*") return "every minute";
    let m;
    if ((m = /^\*\/(\d+)$/.exec(mi)) && ho === "*" && dom === "*" && mon === "*" && dow === "*") return "every " + m[1] + " minutes";
    if (num(mi) && ho === "*" && dom === "*" && mon === "*" && dow === "*") return "every hour at minute " + mi;
    if (hm && dom === "*" && mon === "*" && dow === "*") return "every day " + hm;
    if (hm && dom === "*" && mon === "*" && num(dow)) return "every " + DOW[+dow % 7] + " " + hm;
    if (hm && dom === "*" && mon === "*" && dow === "1-5") return "every weekday " + hm;
    if (hm && num(dom) && mon === "*" && dow === "*") return "on day " + dom + " of every month " + hm;
    return "cron " + sch;
  }
  function stateBadge(st) { const v = st || "none"; return h("span", { class: "state st-" + v, text: v }); }

  /* ---- routing */
  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter((x) => x !== "").map(decodeURIComponent);
    return parts;
  }
  function link(text, parts, attrs) { return h("a", Object.assign({ href: "#/" + parts.map(enc).join("/") }, attrs || {}), text); }
  function crumbs(items) {
    const c = $("crumbs");
    c.replaceChildren(...items.map((it, i) => i === items.length - 1 ? h("span", { "aria-current": "page", text: it[0] })
                                                                     : link(it[0], it[1])));
  }

  async function render(keepStatus) {
    const id = ++renderId;
    clearTimeout(timer);
    const p = route();
    let fn;
    if (p.length === 0) fn = viewList;
    else if (p[0] === "dag" && p.length === 2) fn = viewGrid;
    else if (p[0] === "dag" && p.length === 3 && p[2] === "trigger") fn = viewTrigger;
    else if (p[0] === "dag" && p.length === 3 && p[2] === "backfill") fn = viewBackfill;
    else if (p[0] === "dag" && p.length === 3 && p[2] === "source") fn = viewSource;
    else if (p[0] === "dag" && p.length === 4 && p[2] === "run") fn = viewGantt;
    else if (p[0] === "dag" && p.length === 6 && p[2] === "run" && p[4] === "task") fn = viewTask;
    else { $("view").replaceChildren(h("p", { text: "No such page." })); return; }
    try {
      const live = await fn(p, id);
      if (id !== renderId) return;
      if (!keepStatus) say("");
      if (live) timer = setTimeout(() => { if (id === renderId) refresh(); }, POLL_MS);
    } catch (e) {
      if (e.status !== 401) say(e.message, true);
      if (id === renderId && e.status !== 401) timer = setTimeout(() => { if (id === renderId) refresh(); }, POLL_MS * 2);
    }
  }
  /* A poll re-renders in place; a view keeps its inputs and focus by reusing stable nodes. */
  let refreshing = false;
  function refresh() { refreshing = true; render(true).finally(() => { refreshing = false; }); }
  function mount(key, build) {
    /* the view's root for this page; kept across polls so that inputs keep their text */
    let root = $("view").firstElementChild;
    if (!root || root.dataset.key !== key) {
      root = h("div", { "data-key": key });
      build(root);
      $("view").replaceChildren(root);
      if (!refreshing) $("main").focus({ preventScroll: true });
    }
    return root;
  }
  function slot(root, name) { return root.querySelector('[data-slot="' + name + '"]'); }

  /* ---- DAG list */
  async function viewList(p, id) {
    crumbs([["DAGs"]]);
    const root = mount("list", (r) => {
      r.append(h("h1", { text: "DAGs" }), h("div", { "data-slot": "errors" }),
        h("div", { class: "toolbar" }, h("label", { for: "search", text: "Search" }),
          h("input", { id: "search", type: "search", placeholder: "id, description or tag", oninput: () => filterList() })),
        h("div", { "data-slot": "table" }));
    });
    const [dags, errs] = await Promise.all([api("GET", A + "/dags?limit=1000"), api("GET", A + "/import-errors")]);
    const runs = await Promise.all(dags.dags.map((d) => api("GET", dagPath(d.dag_id) + "/runs?limit=10").catch(() => ({ dag_runs: [] }))));
    if (id !== renderId) return false;
    const ie = errs.import_errors || [];
    slot(root, "errors").replaceChildren(ie.length ? h("div", { class: "banner", role: "alert", id: "import-errors" },
      h("strong", { text: ie.length + (ie.length === 1 ? " DAG file did not load" : " DAG files did not load") }),
      h("ul", {}, ie.map((e) => h("li", {}, h("code", { text: e.filename + ":" + e.line + ":" + e.col }), ": ", e.message)))) : "");
    const rows = dags.dags.map((d, i) => {
      const rs = (runs[i].dag_runs || []).slice().reverse();
      return h("tr", { "data-dag": d.dag_id, "data-search": [d.dag_id, d.description || "", ...(d.tags || [])].join(" ").toLowerCase() },
        h("td", {}, link(d.dag_id, ["dag", d.dag_id], { class: "dag-link" })),
        h("td", { text: d.description || "" }),
        h("td", {}, (d.tags || []).map((t) => h("span", { class: "tag", text: t }))),
        h("td", {}, h("div", { text: cronWords(d.schedule) }),
          h("div", { class: "muted", text: d.schedule ? "next: " + fmtTime(d.next_run_logical_date) : "" })),
        h("td", {}, h("label", {}, h("input", { type: "checkbox", class: "pause-toggle", checked: d.is_paused,
          "aria-label": "Paused: " + d.dag_id, onchange: (ev) => setPaused(d.dag_id, ev.target.checked) }), " paused")),
        h("td", {}, h("div", { class: "marks", role: "list", "aria-label": "Last runs of " + d.dag_id },
          rs.map((r) => h("a", { role: "listitem", class: "mark st-" + (r.state || "none"), href: "#/dag/" + enc(d.dag_id) + "/run/" + enc(r.dag_run_id),
            title: r.dag_run_id + ": " + r.state + " " + fmtDur(runDur(r)), "aria-label": r.state + ", " + fmtDur(runDur(r)) })))),
        h("td", {}, link("Trigger", ["dag", d.dag_id, "trigger"], { class: "trigger-link", "aria-label": "Trigger " + d.dag_id })));
    });
    slot(root, "table").replaceChildren(h("table", { class: "dags" },
      h("caption", { class: "visually-hidden", text: "DAGs" }),
      h("thead", {}, h("tr", {}, ["DAG", "Description", "Tags", "Schedule", "Paused", "Last runs", ""].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows)));
    filterList();
    return true;
  }
  function filterList() {
    const q = ($("search") || {}).value ? $("search").value.toLowerCase() : "";
    document.querySelectorAll("table.dags tbody tr").forEach((tr) => { tr.hidden = q && !tr.dataset.search.includes(q); });
  }
  async function setPaused(dag, paused) {
    try { await api("PATCH", dagPath(dag), { is_paused: paused }); say(dag + (paused ? " paused" : " unpaused")); }
    catch (e) { say(e.message, true); }
  }

  /* ---- DAG pages */
  function dagTabs(dag, cur) {
    const t = [["Grid", ["dag", dag], "grid"], ["Trigger", ["dag", dag, "trigger"], "trigger"],
               ["Backfill", ["dag", dag, "backfill"], "backfill"], ["Source", ["dag", dag, "source"], "source"]];
    return h("nav", { class: "tabs", "aria-label": "DAG views" },
      t.map(([txt, parts, k]) => link(txt, parts, { "aria-current": k === cur ? "page" : null })));
  }

  async function viewGrid(p, id) {
    const dag = p[1];
    crumbs([["DAGs", []], [dag]]);
    const root = mount("grid:" + dag, (r) => {
      r.append(h("h1", {}, dag), dagTabs(dag, "grid"), h("div", { "data-slot": "head" }),
        h("div", { class: "split" }, h("section", { "aria-label": "Grid", class: "scroll" }, h("h2", { text: "Grid" }), h("div", { "data-slot": "grid" })),
          h("section", { "aria-label": "Graph", class: "scroll" }, h("h2", { "data-slot": "graph-title", text: "Graph" }), h("div", { "data-slot": "graph" }))));
    });
    const [d, runs] = await Promise.all([api("GET", dagPath(dag)), api("GET", dagPath(dag) + "/runs?limit=12")]);
    const rs = runs.dag_runs.slice().reverse();
    const tis = await Promise.all(rs.map((r) => api("GET", runPath(dag, r.dag_run_id) + "/tasks")));
    if (id !== renderId) return false;
    slot(root, "head").replaceChildren(h("p", {}, d.description || "", " ", h("span", { class: "muted", text: cronWords(d.schedule) + (d.is_paused ? " (paused)" : "") })));
    const byRun = tis.map((t) => Object.fromEntries(t.task_instances.map((x) => [x.task_id, x])));
    const taskIds = (d.tasks || []).map((t) => t.task_id);
    const table = h("table", { class: "grid", id: "grid" },
      h("caption", { class: "visually-hidden", text: "Runs by task" }),
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "task" }),
        rs.map((r) => h("th", { scope: "col", class: "run" }, link(r.dag_run_id.replace(/__/, " "), ["dag", dag, "run", r.dag_run_id], { title: r.state, class: "run-link" }))))),
      h("tbody", {},
        h("tr", {}, h("th", { scope: "row", text: "run" }), rs.map((r) => h("td", {}, h("a", { class: "cell run-state st-" + (r.state || "none"),
          href: "#/dag/" + enc(dag) + "/run/" + enc(r.dag_run_id), "data-run": r.dag_run_id, "data-state": r.state || "none",
          "aria-label": "run " + r.dag_run_id + ": " + r.state, title: r.state + " " + fmtDur(runDur(r)) }, "")))),
        taskIds.map((t) => h("tr", {}, h("th", { scope: "row", text: t }), rs.map((r, i) => {
          const ti = byRun[i][t] || { state: null, try_number: 0 };
          const st = ti.state || "none";
          return h("td", {}, h("a", { class: "cell st-" + st, "data-task": t, "data-run": r.dag_run_id, "data-state": st,
            href: "#/dag/" + enc(dag) + "/run/" + enc(r.dag_run_id) + "/task/" + enc(t),
            "aria-label": t + " in " + r.dag_run_id + ": " + st + (ti.try_number ? ", try " + ti.try_number : ""), title: st }, ti.try_number ? String(ti.try_number) : ""));
        })))));
    slot(root, "grid").replaceChildren(rs.length ? table : h("p", { class: "muted", text: "No runs yet." }));
    const last = rs.length ? rs[rs.length - 1] : null;
    slot(root, "graph-title").textContent = last ? "Graph of " + last.dag_run_id : "Graph";
    slot(root, "graph").replaceChildren(graph(dag, d.tasks || [], last ? byRun[rs.length - 1] : {}, last));
    return true;
  }

  /* Left to right, layer = the longest path from a root. */
  function graph(dag, tasks, tis, run) {
    const layer = {};
    const up = Object.fromEntries(tasks.map((t) => [t.task_id, t.upstream || []]));
    const depth = (t, seen) => {
      if (layer[t] !== undefined) return layer[t];
      if (seen.has(t)) return 0;
      seen.add(t);
      const l = up[t].length ? 1 + Math.max(...up[t].map((u) => depth(u, seen))) : 0;
      return (layer[t] = l);
    };
    tasks.forEach((t) => depth(t.task_id, new Set()));
    const cols = [];
    tasks.forEach((t) => { (cols[layer[t.task_id]] = cols[layer[t.task_id]] || []).push(t.task_id); });
    const W = 130, H = 32, GX = 50, GY = 16, pos = {};
    cols.forEach((c, x) => c.forEach((t, y) => { pos[t] = { x: 10 + x * (W + GX), y: 10 + y * (H + GY) }; }));
    const width = 20 + cols.length * (W + GX) - GX, height = 20 + Math.max(1, ...cols.map((c) => c.length)) * (H + GY) - GY;
    const edges = tasks.flatMap((t) => (up[t.task_id] || []).filter((u) => pos[u]).map((u) => {
      const a = pos[u], b = pos[t.task_id];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      return s("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" });
    }));
    const nodes = tasks.map((t) => {
      const st = (tis[t.task_id] && tis[t.task_id].state) || "none";
      const g = s("g", { class: "node st-" + st, "data-task": t.task_id, "data-state": st, tabindex: run ? "0" : "-1", role: run ? "link" : "img",
        "aria-label": t.task_id + ": " + st, transform: `translate(${pos[t.task_id].x},${pos[t.task_id].y})` },
        s("title", { text: t.task_id + ": " + st }), s("rect", { width: W, height: H, rx: 5 }),
        s("text", { x: 8, y: H / 2 + 4, text: t.task_id.length > 17 ? t.task_id.slice(0, 16) + "…" : t.task_id }));
      if (run) {
        const go = () => { location.hash = "#/dag/" + enc(dag) + "/run/" + enc(run.dag_run_id) + "/task/" + enc(t.task_id); };
        g.addEventListener("click", go);
        g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
      }
      return g;
    });
    return s("svg", { id: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": "Task graph" },
      s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
        s("path", { d: "M0,0 L10,5 L0,10 z", class: "edge" }))), edges, nodes);
  }

  /* ---- trigger and backfill */
  async function viewTrigger(p, id) {
    const dag = p[1];
    crumbs([["DAGs", []], [dag, ["dag", dag]], ["Trigger"]]);
    const d = await api("GET", dagPath(dag));
    if (id !== renderId) return false;
    const params = d.params || {};
    const fields = Object.entries(params).map(([k, v]) => {
      const fid = "param-" + k;
      let input;
      if (typeof v === "boolean") input = h("input", { id: fid, type: "checkbox", checked: v, "data-param": k, "data-type": "boolean" });
      else if (typeof v === "number") input = h("input", { id: fid, type: "number", step: "any", value: String(v), "data-param": k, "data-type": "number" });
      else if (typeof v === "string") input = h("input", { id: fid, type: "text", value: v, "data-param": k, "data-type": "string" });
      else input = h("textarea", { id: fid, "data-param": k, "data-type": "json" }, JSON.stringify(v, null, 2));
      return h("div", { class: "row" }, h("label", { for: fid, text: k + " (" + (v === null ? "null" : Array.isArray(v) ? "list" : typeof v) + ")" }), input);
    });
    const err = h("p", { class: "error", role: "alert" });
    const form = h("form", { class: "stack", id: "trigger-form" },
      fields.length ? h("fieldset", {}, h("legend", { text: "Params" }), fields) : h("p", { class: "muted", text: "This DAG has no params." }),
      h("div", { class: "row" }, h("label", { for: "conf", text: "Conf (JSON; overrides the params above)" }), h("textarea", { id: "conf", placeholder: "{}" })),
      h("div", { class: "row" }, h("label", { for: "logical-date", text: "Logical date (UTC; empty: now)" }),
        h("input", { id: "logical-date", type: "datetime-local", step: "1" })),
      h("div", { class: "row" }, h("label", {}, h("input", { id: "rerun", type: "checkbox" }), " rerun the run of that date if there is one")),
      h("div", {}, h("button", { type: "submit", class: "primary", id: "trigger-submit" }, "Trigger")), err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      const conf = {};
      try {
        form.querySelectorAll("[data-param]").forEach((el) => {
          const k = el.dataset.param, t = el.dataset.type;
          if (t === "boolean") conf[k] = el.checked;
          else if (t === "number") { if (el.value === "" || isNaN(+el.value)) throw new Error(k + " must be a number"); conf[k] = +el.value; }
          else if (t === "string") conf[k] = el.value;
          else { try { conf[k] = JSON.parse(el.value); } catch (e) { throw new Error(k + " is not valid JSON"); } }
        });
        const raw = $("conf").value.trim();
        if (raw) {
          let o;
          try { o = JSON.parse(raw); } catch (e) { throw new Error("conf is not valid JSON: " + e.message); }
          if (!o || typeof o !== "object" || Array.isArray(o)) throw new Error("conf must be a JSON object");
          Object.assign(conf, o);
        }
      } catch (e) { err.textContent = e.message; return; }
      const body = { conf };
      const ld = $("logical-date").value;
      if (ld) body.logical_date = (ld.length === 16 ? ld + ":00" : ld) + "Z";
      if ($("rerun").checked) body.rerun = true;
      try {
        const run = await api("POST", dagPath(dag) + "/runs", body);
        say("triggered " + run.dag_run_id);
        location.hash = "#/dag/" + enc(dag);
      } catch (e) { err.textContent = e.message; }
    });
    $("view").replaceChildren(h("div", {}, h("h1", {}, "Trigger ", dag), dagTabs(dag, "trigger"), form));
    return false;
  }

  async function viewBackfill(p, id) {
    const dag = p[1];
    crumbs([["DAGs", []], [dag, ["dag", dag]], ["Backfill"]]);
    const err = h("p", { class: "error", role: "alert" });
    const out = h("div", { role: "status" });
    const form = h("form", { class: "stack", id: "backfill-form" },
      h("div", { class: "row" }, h("label", { for: "bf-from", text: "From (logical date, UTC)" }), h("input", { id: "bf-from", type: "date", required: true })),
      h("div", { class: "row" }, h("label", { for: "bf-to", text: "To (inclusive)" }), h("input", { id: "bf-to", type: "date", required: true })),
      h("div", { class: "row" }, h("label", {}, h("input", { id: "bf-rerun", type: "checkbox" }), " rerun the runs the range has already")),
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Backfill")), err, out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      try {
        const r = await api("POST", dagPath(dag) + "/backfill", { from: $("bf-from").value, to: $("bf-to").value, rerun: $("bf-rerun").checked });
        out.replaceChildren(h("p", { text: `created ${r.created.length}, existing ${r.existing.length}, cleared ${r.cleared.length}` }),
          link("See the grid", ["dag", dag]));
      } catch (e) { err.textContent = e.message; }
    });
    $("view").replaceChildren(h("div", {}, h("h1", {}, "Backfill ", dag), dagTabs(dag, "backfill"), form));
    return false;
  }

  async function viewSource(p, id) {
    const dag = p[1];
    crumbs([["DAGs", []], [dag, ["dag", dag]], ["Source"]]);
    const [d, text] = await Promise.all([api("GET", dagPath(dag)), api("GET", dagPath(dag) + "/source", undefined, true)]);
    if (id !== renderId) return false;
    const lines = text.replace(/\n$/, "").split("\n");
    $("view").replaceChildren(h("div", {}, h("h1", {}, dag, " source"), dagTabs(dag, "source"), h("p", { class: "muted", text: d.file }),
      h("pre", { class: "src", id: "source", tabindex: "0", "aria-label": "DAG file with line numbers" }, h("ol", {}, lines.map((l) => h("li", { text: l }))))));
    return false;
  }

  /* ---- a run: Gantt */
  async function viewGantt(p, id) {
    const [, dag, , run] = p;
    crumbs([["DAGs", []], [dag, ["dag", dag]], [run]]);
    const root = mount("run:" + dag + ":" + run, (r) => {
      r.append(h("h1", {}, "Run ", run), h("div", { "data-slot": "head" }), h("div", { class: "toolbar" },
        h("button", { type: "button", class: "danger", id: "cancel-run", onclick: () => act(api("POST", runPath(dag, run) + "/cancel"), "run cancelled") }, "Cancel run"),
        h("button", { type: "button", id: "clear-failed", onclick: () => act(api("POST", runPath(dag, run) + "/clear", { only_failed: true, downstream: true }), "failed tasks cleared") }, "Clear failed tasks")),
        h("h2", { text: "Gantt" }), h("div", { class: "scroll", "data-slot": "gantt" }));
    });
    const [r, t] = await Promise.all([api("GET", runPath(dag, run)), api("GET", runPath(dag, run) + "/tasks")]);
    if (id !== renderId) return false;
    slot(root, "head").replaceChildren(h("dl", { class: "kv" },
      h("dt", { text: "state" }), h("dd", {}, stateBadge(r.state)), h("dt", { text: "logical date" }), h("dd", { text: fmtTime(r.logical_date) }),
      h("dt", { text: "started" }), h("dd", { text: fmtTime(r.start_date) }), h("dt", { text: "duration" }), h("dd", { text: fmtDur(runDur(r)) }),
      h("dt", { text: "conf" }), h("dd", {}, h("code", { text: JSON.stringify(r.conf) }))));
    slot(root, "gantt").replaceChildren(gantt(dag, run, r, t.task_instances));
    return r.state === "queued" || r.state === "running";
  }
  function gantt(dag, run, r, tis) {
    const now = Date.now();
    const spans = tis.map((ti) => ({ ti, tries: ti.tries && ti.tries.length ? ti.tries :
      ti.start_date ? [{ try_number: ti.try_number, start_date: ti.start_date, running_date: ti.start_date, end_date: ti.end_date, state: ti.state }] : [] }));
    /* from the first try (a cleared run starts again, its earlier tries stay) */
    let t0 = Date.parse(r.start_date || r.logical_date);
    spans.forEach((sp) => sp.tries.forEach((x) => { if (x.start_date) t0 = Math.min(t0, Date.parse(x.start_date)); }));
    let t1 = t0 + 1000;
    spans.forEach((sp) => sp.tries.forEach((x) => { t1 = Math.max(t1, x.end_date ? Date.parse(x.end_date) : now); }));
    const L = 150, W = 560, RH = 24, sc = W / (t1 - t0);
    const rows = spans.map((sp, i) => s("g", { transform: `translate(0,${20 + i * RH})`, "data-task": sp.ti.task_id },
      s("text", { x: 0, y: 15, text: sp.ti.task_id }),
      sp.tries.flatMap((x) => {
        const out = [];
        if (!x.start_date) return out;
        /* a try is queued from its start_date until its container runs (running_date) */
        const q = Date.parse(x.start_date), run = x.running_date ? Date.parse(x.running_date) : null;
        const qe = run || (x.end_date ? Date.parse(x.end_date) : now);
        out.push(s("rect", { class: "queued", "data-try": x.try_number, x: L + (q - t0) * sc, y: 4, width: Math.max(1, (qe - q) * sc), height: RH - 8 },
          s("title", { text: sp.ti.task_id + " try " + x.try_number + " queued " + fmtDur((qe - q) / 1000) })));
        if (!run) return out;
        const a = run, b = x.end_date ? Date.parse(x.end_date) : now;
        out.push(s("g", { class: "node st-" + (x.state || "running"), "data-try": x.try_number }, s("rect", { class: "bar", x: L + (a - t0) * sc, y: 4, width: Math.max(2, (b - a) * sc), height: RH - 8, rx: 2 },
          s("title", { text: sp.ti.task_id + " try " + x.try_number + ": " + (x.state || "") + ", " + fmtDur((b - a) / 1000) })),
          sp.tries.length > 1 ? s("text", { x: L + (a - t0) * sc + 3, y: 15, class: "bar-label", text: String(x.try_number) }) : null));
        return out;
      })));
    const h_ = 30 + spans.length * RH;
    return s("svg", { id: "gantt", width: L + W + 10, height: h_, role: "img", "aria-label": "Gantt chart of the run's tasks" },
      s("line", { class: "axis", x1: L, y1: 14, x2: L + W, y2: 14 }), s("text", { x: L, y: 10, text: "0 s" }),
      s("text", { x: L + W - 50, y: 10, text: fmtDur((t1 - t0) / 1000) }), rows);
  }
  async function act(promise, msg) {
    try { await promise; say(msg); refresh(); } catch (e) { say(e.message, true); }
  }

  /* ---- a task instance */
  let logState = { key: null, text: "", try: null };
  async function viewTask(p, id) {
    const [, dag, , run, , task] = p;
    crumbs([["DAGs", []], [dag, ["dag", dag]], [run, ["dag", dag, "run", run]], [task]]);
    const root = mount("task:" + dag + ":" + run + ":" + task, (r) => {
      logState = { key: null, text: "", try: null };
      r.append(h("h1", {}, task, " ", h("span", { class: "muted", text: "in " + run })), h("div", { "data-slot": "info" }),
        h("div", { class: "toolbar", role: "group", "aria-label": "Actions" },
          h("label", {}, h("input", { type: "checkbox", id: "clear-downstream", checked: true }), " with downstream"),
          h("button", { type: "button", id: "clear-task", onclick: () => act(api("POST", runPath(dag, run) + "/clear", { tasks: [task], downstream: $("clear-downstream").checked }), "cleared") }, "Clear"),
          h("button", { type: "button", id: "mark-success", onclick: () => act(api("PATCH", runPath(dag, run) + "/tasks/" + enc(task), { state: "success" }), "marked success") }, "Mark success"),
          h("button", { type: "button", id: "mark-failed", onclick: () => act(api("PATCH", runPath(dag, run) + "/tasks/" + enc(task), { state: "failed" }), "marked failed") }, "Mark failed"),
          h("button", { type: "button", class: "danger", id: "cancel-run", onclick: () => act(api("POST", runPath(dag, run) + "/cancel"), "run cancelled") }, "Cancel run")),
        h("h2", { text: "Log" }),
        h("div", { class: "toolbar" }, h("label", { for: "try-select", text: "Try" }), h("select", { id: "try-select", onchange: () => { logState.key = null; refresh(); } }),
          h("label", { for: "log-search", text: "Search the log" }), h("input", { id: "log-search", type: "search", oninput: () => paintLog() }),
          h("span", { class: "muted", "data-slot": "log-info" })),
        h("pre", { class: "log", id: "log", tabindex: "0", "aria-label": "Log of the selected try", "aria-live": "off" }));
    });
    const ti = await api("GET", runPath(dag, run) + "/tasks/" + enc(task));
    if (id !== renderId) return false;
    const live = ti.state === "running" || ti.state === "queued" || ti.state === "scheduled" || ti.state === "up_for_retry";
    const last = (ti.tries || []).length ? ti.tries[ti.tries.length - 1] : null;
    slot(root, "info").replaceChildren(h("dl", { class: "kv", id: "ti-info" },
      h("dt", { text: "state" }), h("dd", {}, stateBadge(ti.state)),
      h("dt", { text: "try" }), h("dd", { text: ti.try_number + " of " + ti.max_tries }),
      h("dt", { text: "exit code" }), h("dd", { id: "exit-code", text: ti.exit_code === null ? "—" : String(ti.exit_code) }),
      (ti.tries || []).length ? [h("dt", { text: "tries" }), h("dd", {}, h("ul", {}, ti.tries.map((x) => h("li", { text: "try " + x.try_number + ": " + (x.state || "") + ", exit " + (x.exit_code ?? "—") }))))] : null,
      h("dt", { text: "started" }), h("dd", { text: fmtTime(ti.start_date) }), h("dt", { text: "duration" }), h("dd", { text: fmtDur(ti.duration) }),
      h("dt", { text: "container" }), h("dd", { text: ti.container_name || "—" }), h("dt", { text: "image" }), h("dd", { text: ti.image || "—" }),
      last && last.entrypoint ? [h("dt", { text: "entrypoint" }), h("dd", {}, h("code", { text: JSON.stringify(last.entrypoint) }))] : null,
      last && last.command ? [h("dt", { text: "command" }), h("dd", {}, h("code", { id: "ti-command", text: JSON.stringify(last.command) }))] : null,
      last && last.env ? [h("dt", { text: "env" }), h("dd", {}, h("pre", { id: "ti-env", class: "env" }, Object.entries(last.env).map(([k, v]) => k + "=" + v).join("\n") || "(none)"))] : null,
      h("dt", { text: "output (XCom)" }), h("dd", {}, h("code", { id: "ti-output", text: ti.output ?? "—" })),
      ti.message ? [h("dt", { text: "message" }), h("dd", { text: ti.message })] : null));
    const sel = $("try-select");
    const n = ti.try_number || 0;
    if (sel.options.length !== n) {
      const cur = sel.value;
      sel.replaceChildren(...Array.from({ length: n }, (_, i) => h("option", { value: String(i + 1), text: "try " + (i + 1) })));
      sel.value = cur && +cur <= n && logState.try !== null && +cur !== n - 1 ? cur : String(n);
    }
    const tr = sel.value;
    const info = slot(root, "log-info");
    if (!tr) { logState.text = ""; info.textContent = "no try yet"; paintLog(); return live; }
    try {
      logState.text = await api("GET", runPath(dag, run) + "/tasks/" + enc(task) + "/logs/" + tr + "?streams=1&header=1", undefined, true);
      info.textContent = live && +tr === n ? "following (live)" : "";
    } catch (e) {
      if (e.status !== 404) throw e;
      logState.text = ""; info.textContent = "no log yet";
    }
    if (id !== renderId) return false;
    logState.try = tr;
    paintLog();
    return live;
  }
  function paintLog() {
    const pre = $("log");
    if (!pre) return;
    const q = ($("log-search") || {}).value || "";
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const lines = logState.text.replace(/\n$/, "").split("\n");
    const ql = q.toLowerCase();
    pre.replaceChildren(...lines.map((l) => {
      const m = /^(stderr|stdout|dagd|-)\t/.exec(l);
      return { stream: m && m[1] !== "-" ? m[1] : "", body: m ? l.slice(m[0].length) : l };
    }).filter((x) => !q || x.body.toLowerCase().includes(ql)).map((x) => {
      const line = h("span", { class: "line " + x.stream });
      if (x.stream === "stderr") line.append(h("span", { class: "visually-hidden", text: "stderr: " }));
      const i = q ? x.body.toLowerCase().indexOf(ql) : -1;
      if (i >= 0) line.append(x.body.slice(0, i), h("mark", { text: x.body.slice(i, i + q.length) }), x.body.slice(i + q.length));
      else line.append(x.body || "\u200b");
      return line;
    }));
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  /* ---- sign in and out */
  function showSignIn() {
    clearTimeout(timer);
    renderId++;
    csrf = null;
    $("sign-in-view").hidden = false;
    $("view").replaceChildren();
    $("sign-out").hidden = true;
    $("crumbs").replaceChildren();
    $("token").focus();
  }
  function signedIn(sess) {
    csrf = sess.csrf_token;
    $("sign-in-view").hidden = true;
    $("sign-out").hidden = false;
    render();
  }
  async function start() {
    $("sign-in-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("sign-in-error").textContent = "";
      try {
        const sess = await api("POST", "/ui/sign-in", { token: $("token").value.trim() });
        $("token").value = "";
        signedIn(sess);
      } catch (e) { $("sign-in-error").textContent = e.status === 401 ? "That is not the API token." : e.message; }
    });
    $("sign-out").addEventListener("click", async () => {
      try { await api("POST", "/ui/sign-out"); } catch (e) { /* signed out anyway */ }
      showSignIn();
    });
    window.addEventListener("hashchange", () => { if (csrf) render(); });
    try {
      const r = await fetch("/ui/session", { credentials: "same-origin" });
      if (r.ok) return signedIn(await r.json());
    } catch (e) { /* not signed in */ }
    showSignIn();
  }
  start();
})();
