// The homeowner's page. Vanilla JS, no build step, no inline script (the CSP forbids it).
// Every picture comes from the hub's own redacted output; zones are drawn here as SVG over it.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  let csrf = null;
  const cams = new Map(); // camera id -> editor state
  let pollTimer = null;

  const $ = (sel, root) => (root || document).querySelector(sel);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };
  const round4 = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;

  async function api(method, path, body) {
    const opts = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (method !== "GET" && csrf) opts.headers["X-CSRF-Token"] = csrf;
    const r = await fetch(path, opts);
    let doc = {};
    try { doc = await r.json(); } catch (e) { doc = {}; }
    return { status: r.status, doc };
  }

  function showLogin(message) {
    csrf = null;
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    $("#app").hidden = true;
    $("#logout").hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = message || "";
    $("#password").focus();
  }

  function showApp() {
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#logout").hidden = false;
    refresh();
    if (!pollTimer) pollTimer = setInterval(refresh, 1000);
  }

  async function start() {
    $("#login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await api("POST", "/api/login", { password: $("#password").value });
      $("#password").value = "";
      if (r.status === 200) { csrf = r.doc.csrf; showApp(); } else { showLogin(r.doc.error || "login failed"); }
    });
    $("#logout").addEventListener("click", async () => {
      await api("POST", "/api/logout", {});
      cams.clear();
      $("#cameras").textContent = "";
      showLogin("logged out");
    });
    const r = await api("GET", "/api/session");
    if (r.status === 200) { csrf = r.doc.csrf; showApp(); } else { showLogin(""); }
  }

  // -- status ------------------------------------------------------------------------

  async function refresh() {
    const r = await api("GET", "/api/state");
    if (r.status === 401) { showLogin("your session ended: log in again"); return; }
    if (r.status !== 200) return;
    const s = r.doc;
    $("#mode").textContent = s.mode;
    $("#mode-note").textContent = s.mode_note;
    const audit = s.audit || {};
    $("#audit").textContent = `${audit.summary || ""}${audit.entries ? ` (${audit.entries} entries)` : ""}`;
    $("#audit").className = audit.ok === false ? "error" : "";
    const probs = $("#audit-problems");
    probs.textContent = "";
    for (const p of (audit.problems || []).concat(audit.warnings || [])) probs.appendChild(el("li", {}, p));
    const pend = $("#pending");
    pend.textContent = "";
    if (!s.mqtt) pend.appendChild(el("li", {}, "no broker configured: requests cannot arrive"));
    else if (!s.pending.length) pend.appendChild(el("li", {}, "none"));
    for (const p of s.pending) {
      const when = `${new Date(p.from_ms).toLocaleString()} to ${new Date(p.to_ms).toLocaleString()}`;
      pend.appendChild(el("li", {}, `${p.requester} (${p.role}${p.enrolled ? "" : ", unverified"}) asks for ` +
        `${p.cameras.join(", ") || "clips"}, ${when}; ${p.approvals} approvals; expires in ${p.expires_in_s} s`));
    }
    $("#pending-note").textContent = s.pending_note;
    for (const cam of s.cameras) updateCamera(cam);
  }

  // -- one camera ----------------------------------------------------------------------

  function updateCamera(cam) {
    let st = cams.get(cam.id);
    if (!st) st = makeCamera(cam);
    st.server = cam;
    if (!st.dirty) { st.zones = cam.zones.map((z) => ({ ...z, points: z.points.map((p) => p.slice()), was: z.name })); }
    $(".cam-name", st.root).textContent = cam.name;
    const badge = $(".badge", st.root);
    badge.textContent = cam.restart_needed ? "withheld: restart needed" : cam.state;
    badge.className = `badge ${cam.state}`;
    $(".reasons", st.root).textContent = cam.reasons.length ? `why: ${cam.reasons.join(", ")}` : "";
    const notice = $(".withheld", st.root);
    if (cam.state === "released") {
      notice.hidden = true;
      if (cam.frame_index !== st.shownIndex) {
        st.shownIndex = cam.frame_index;
        $(".frame", st.root).src = `/api/cameras/${encodeURIComponent(cam.id)}/frame.png?i=${cam.frame_index}`;
      }
    } else {
      notice.hidden = false;
      notice.textContent = cam.state === "withheld"
        ? `WITHHELD: no frame leaves the hub (${cam.reasons.join(", ") || "withheld"})`
        : `${cam.state}`;
      if (cam.state === "withheld") $(".frame", st.root).removeAttribute("src");
    }
    const tb = $(".counters tbody", st.root);
    tb.textContent = "";
    for (const [k, v] of Object.entries(cam.counters || {})) {
      if (k === "reasons") continue;
      const tr = el("tr");
      tr.appendChild(el("td", {}, k.replace("_", " ")));
      tr.appendChild(el("td", {}, String(v)));
      tb.appendChild(tr);
    }
    draw(st);
  }

  function makeCamera(cam) {
    const root = $("#camera-tpl").content.firstElementChild.cloneNode(true);
    root.dataset.camera = cam.id;
    $("#cameras").appendChild(root);
    const st = { id: cam.id, root, zones: [], proposals: [], selected: -1, dirty: false, drag: null, shownIndex: null };
    cams.set(cam.id, st);
    const rx = $(".ruler-x", root), ry = $(".ruler-y", root);
    for (let k = 0; k <= 10; k++) {
      const v = (k / 10).toFixed(1);
      // CSSOM, not a style attribute: the CSP allows no inline style.
      const sx = el("span", {}, v); sx.style.left = `${k * 10}%`; rx.appendChild(sx);
      const sy = el("span", {}, v); sy.style.top = `${k * 10}%`; ry.appendChild(sy);
    }
    $(".preview", root).href = `/api/cameras/${encodeURIComponent(cam.id)}/preview.png`;
    const svg = $(".overlay", root);
    svg.addEventListener("pointerdown", (ev) => onPointerDown(st, ev));
    svg.addEventListener("pointermove", (ev) => onPointerMove(st, ev));
    svg.addEventListener("pointerup", (ev) => { if (st.drag) { st.drag = null; svg.releasePointerCapture(ev.pointerId); } });
    $(".new-zone", root).addEventListener("click", () => newZone(st));
    $(".save", root).addEventListener("click", () => save(st));
    $(".revert", root).addEventListener("click", () => { st.dirty = false; st.selected = -1; updateCamera(st.server); note(st, "", []); });
    $(".z-name", root).addEventListener("input", (ev) => edit(st, (z) => { z.name = ev.target.value; }));
    $(".z-action", root).addEventListener("change", (ev) => edit(st, (z) => { z.action = ev.target.value; }));
    $(".z-style", root).addEventListener("change", (ev) => edit(st, (z) => { z.style = ev.target.value; }));
    $(".z-undo", root).addEventListener("click", () => edit(st, (z) => { z.points.pop(); }));
    $(".z-delete", root).addEventListener("click", () => {
      if (st.selected < 0) return;
      st.zones.splice(st.selected, 1);
      st.selected = -1;
      st.dirty = true;
      draw(st);
    });
    $(".z-done", root).addEventListener("click", () => { st.selected = -1; draw(st); });
    $(".discover", root).addEventListener("click", () => discover(st));
    return st;
  }

  function edit(st, fn) {
    const z = st.zones[st.selected];
    if (!z) return;
    fn(z);
    st.dirty = true;
    draw(st);
  }

  function newZone(st) {
    const names = new Set(st.zones.map((z) => z.name));
    let n = st.zones.length + 1;
    while (names.has(`zone-${n}`)) n++;
    st.zones.push({ name: `zone-${n}`, points: [], action: "mask", style: "solid", was: null });
    st.selected = st.zones.length - 1;
    st.dirty = true;
    draw(st);
  }

  function relPoint(svg, ev) {
    const r = svg.getBoundingClientRect();
    return [round4((ev.clientX - r.left) / r.width), round4((ev.clientY - r.top) / r.height)];
  }

  function onPointerDown(st, ev) {
    if (ev.button !== 0) return;
    const svg = ev.currentTarget;
    const t = ev.target;
    if (t.classList.contains("handle")) {
      st.selected = Number(t.dataset.zone);
      st.drag = { zone: Number(t.dataset.zone), point: Number(t.dataset.point) };
      svg.setPointerCapture(ev.pointerId);
      ev.preventDefault();
      draw(st);
      return;
    }
    // While a zone is selected every click is one of its points, also over another zone.
    if (st.selected < 0 && t.tagName === "polygon" && t.dataset.zone !== undefined) {
      st.selected = Number(t.dataset.zone);
      draw(st);
      return;
    }
    if (st.selected < 0) newZone(st);
    st.zones[st.selected].points.push(relPoint(svg, ev));
    st.dirty = true;
    draw(st);
  }

  function onPointerMove(st, ev) {
    if (!st.drag) return;
    const z = st.zones[st.drag.zone];
    if (!z) return;
    z.points[st.drag.point] = relPoint(ev.currentTarget, ev);
    st.dirty = true;
    draw(st);
  }

  function draw(st) {
    const svg = $(".overlay", st.root);
    svg.textContent = "";
    const grid = svgEl("g", { class: "grid" });
    for (let k = 1; k < 10; k++) {
      grid.appendChild(svgEl("line", { x1: k / 10, y1: 0, x2: k / 10, y2: 1 }));
      grid.appendChild(svgEl("line", { x1: 0, y1: k / 10, x2: 1, y2: k / 10 }));
    }
    svg.appendChild(grid);
    st.zones.forEach((z, i) => {
      const g = svgEl("g", { class: `zone ${z.action}${i === st.selected ? " selected" : ""}` });
      const pts = z.points.map((p) => `${p[0]},${p[1]}`).join(" ");
      if (z.points.length >= 3) g.appendChild(svgEl("polygon", { points: pts, "data-zone": i }));
      else if (z.points.length) g.appendChild(svgEl("polyline", { points: pts }));
      svg.appendChild(g);
    });
    for (const p of st.proposals) {
      const g = svgEl("g", { class: "proposal" });
      g.appendChild(svgEl("polygon", { points: p.points.map((q) => `${q[0]},${q[1]}`).join(" ") }));
      svg.appendChild(g);
    }
    // Handles last, so they are on top; sized in screen pixels despite the 0..1 viewBox.
    const r = svg.getBoundingClientRect();
    const rx = r.width ? 6 / r.width : 0.01, ry = r.height ? 6 / r.height : 0.01;
    st.zones.forEach((z, i) => {
      if (i !== st.selected) return;
      z.points.forEach((p, j) => {
        svg.appendChild(svgEl("ellipse", { class: "handle", cx: p[0], cy: p[1], rx, ry, "data-zone": i, "data-point": j }));
      });
    });
    const list = $(".zone-list", st.root);
    list.textContent = "";
    st.zones.forEach((z, i) => {
      const b = el("button", { type: "button", class: i === st.selected ? "selected" : "" },
        `${z.name}: ${z.action}, ${z.style} (${z.points.length} points)`);
      b.addEventListener("click", () => { st.selected = i; draw(st); });
      list.appendChild(b);
    });
    const form = $(".zone-form", st.root);
    const z = st.zones[st.selected];
    form.hidden = !z;
    if (z) {
      const name = $(".z-name", st.root);
      if (document.activeElement !== name) name.value = z.name;
      $(".z-action", st.root).value = z.action;
      $(".z-style", st.root).value = z.style;
    }
  }

  function note(st, text, errors) {
    $(".save-note", st.root).textContent = text;
    const ul = $(".save-errors", st.root);
    ul.textContent = "";
    for (const e of errors) ul.appendChild(el("li", {}, e));
  }

  async function save(st) {
    const body = { zones: st.zones.map((z) => ({ name: z.name, points: z.points, action: z.action, style: z.style, was: z.was })) };
    note(st, "saving…", []);
    const r = await api("POST", `/api/cameras/${encodeURIComponent(st.id)}/zones`, body);
    if (r.status === 200) {
      st.dirty = false;
      st.selected = -1;
      note(st, r.doc.note, []);
      refresh();
    } else if (r.status === 401) {
      showLogin("your session ended: log in again");
    } else {
      note(st, r.doc.error || `not saved (HTTP ${r.status})`, r.doc.errors || []);
    }
  }

  // -- proposals from `zones discover` -----------------------------------------------------

  async function discover(st) {
    const noteEl = $(".discover-note", st.root);
    noteEl.textContent = "looking for private objects (beds, toilets, sinks)…";
    const r = await api("POST", `/api/cameras/${encodeURIComponent(st.id)}/discover`, {});
    if (r.status === 401) { showLogin("your session ended: log in again"); return; }
    if (r.status !== 200) { noteEl.textContent = r.doc.error || `failed (HTTP ${r.status})`; return; }
    st.proposals = r.doc.proposals;
    const skipped = r.doc.skipped.length ? `; not proposed: ${r.doc.skipped.join(", ")}` : "";
    noteEl.textContent = `${st.proposals.length} proposal(s)${skipped}`;
    showProposals(st);
  }

  function showProposals(st) {
    const ul = $(".proposals", st.root);
    ul.textContent = "";
    st.proposals.forEach((p, i) => {
      const li = el("li", {}, `${p.name}: ${p.label}, seen in ${p.seen} frames (${p.action})`);
      const ok = el("button", { type: "button", class: "accept" }, "Accept");
      const no = el("button", { type: "button", class: "reject" }, "Reject");
      ok.addEventListener("click", () => {
        // One click: the zone joins the camera's zones and is saved (validated, written, applied).
        st.zones.push({ name: p.name, points: p.points, action: p.action, style: "solid", was: null });
        st.proposals.splice(i, 1);
        st.dirty = true;
        showProposals(st);
        save(st);
      });
      no.addEventListener("click", () => { st.proposals.splice(i, 1); showProposals(st); draw(st); });
      li.appendChild(ok);
      li.appendChild(no);
      ul.appendChild(li);
    });
    draw(st);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
