// bastion live demo: plain JavaScript, no framework, no build step, nothing fetched from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    image: null,        // {gallery: id}, {pixels: [...]} or {png: "data:image/png;base64,..."}
    model: "standard",
    attack: "fgsm",
    eps: 0.1,
    steps: null,
    target: null,
    seed: 0,            // sent as typed; the server checks it (an integer in [0, 2**63))
    models: {},         // key -> model description from the server
    imageLabel: null,   // label of the selected gallery image (null for uploads and drawings)
    attacks: {},        // key -> attack description from the server
    classes: [],
  };
  let seq = 0;          // number of the latest request scheduled
  let inFlight = false; // at most one attack request at a time; later changes are coalesced
  let pending = false;
  let timer = null;

  // ------------------------------------------------------------------ helpers

  async function api(path, options) {
    let resp;
    try {
      resp = await fetch(path, options);
    } catch (e) {
      throw new Error("cannot reach the server (" + e.message + ")");
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const msg = body && body.error ? body.error : "HTTP " + resp.status;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = !msg;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function pct(p) { return (100 * p).toFixed(p >= 0.995 || p < 0.0005 ? 0 : 1) + "%"; }

  // ------------------------------------------------------------------ attack requests

  function schedule(delay) {
    if (!state.image) return;
    seq += 1;
    clearTimeout(timer);
    timer = setTimeout(send, delay === undefined ? 120 : delay);
  }

  function params() {
    const spec = state.attacks[state.attack] || {};
    const p = { model: state.model, attack: state.attack, eps: state.eps, seed: state.seed, image: state.image };
    if (spec.default_steps) p.steps = state.steps || spec.default_steps;
    if (spec.targeted === "required" || (spec.targeted === "optional" && state.target !== null)) {
      p.target = state.target === null ? 0 : state.target;
    }
    return p;
  }

  let retries = 0;     // 503 retries of the current request

  async function send() {
    if (inFlight) { pending = true; return; }
    inFlight = true;
    pending = false;
    const mySeq = seq;
    let delay = 0;
    $("results").classList.add("busy");
    try {
      const res = await api("/api/attack", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params()),
      });
      render(res); // requests are serialized, so a newer result always arrives after an older one
      retries = 0;
      if (mySeq === seq) showError("");
    } catch (e) {
      if (mySeq === seq) showError(e.message);
      if (e.status === 503 && retries < 5) { retries += 1; pending = true; delay = 500; }
    } finally {
      inFlight = false;
      $("results").classList.remove("busy");
      if (pending) setTimeout(send, delay);
    }
  }

  function bars(container, side, cleanPred, advPred) {
    container.replaceChildren();
    for (const t of side.top) {
      const row = el("div", "bar");
      if (t.class === cleanPred) row.classList.add("clean-pred");
      if (t.class === advPred && advPred !== cleanPred) row.classList.add("adv-pred");
      row.dataset.cls = String(t.class);
      row.dataset.p = String(t.p);
      row.append(el("span", "name", t.name));
      const track = el("div", "track");
      const fill = el("div", "fill");
      fill.style.width = (100 * t.p).toFixed(1) + "%";
      track.append(fill);
      row.append(track, el("span", "val", pct(t.p)));
      container.append(row);
    }
  }

  function render(r) {
    const c = r.clean, a = r.adversarial;
    $("img-clean").src = c.image;
    $("img-adv").src = a.image;
    $("img-pert").src = r.perturbation.image;
    $("mag").textContent = r.perturbation.magnification ? "×" + r.perturbation.magnification.toFixed(1) : "(none)";
    $("pred-clean").textContent = c.name + " (" + pct(c.confidence) + ")";
    $("pred-adv").textContent = a.name + " (" + pct(a.confidence) + ")";
    bars($("bars-clean"), c, c.pred, a.pred);
    bars($("bars-adv"), a, c.pred, a.pred);
    $("n-l0").textContent = String(r.norms.l0);
    $("n-l2").textContent = r.norms.l2.toFixed(3);
    $("n-linf").textContent = r.norms.linf.toFixed(3);
    $("n-time").textContent = r.timing_ms.total.toFixed(0) + " ms";
    const camC = $("cam-clean"), camA = $("cam-adv");
    camC.hidden = !c.cam; camA.hidden = !a.cam;
    if (c.cam) camC.src = c.cam;
    if (a.cam) camA.src = a.cam;
    const dl = $("download");
    dl.href = r.download.image;
    dl.download = r.download.filename;
    dl.hidden = false;
    $("download-note").textContent = r.download.note + (r.download.flipped === r.flipped ? "" :
      "; rounded, the prediction is " + r.classes[r.download.pred]);

    const v = $("verdict");
    v.classList.remove("flipped", "held");
    const truth = r.label_name !== null ? " (true label " + r.label_name + ")" : "";
    if (r.flipped) {
      v.classList.add("flipped");
      v.textContent = "Prediction flipped: " + c.name + " → " + a.name + truth;
    } else {
      v.classList.add("held");
      v.textContent = "Prediction held: " + c.name + truth;
    }
    if (r.target !== null && r.target !== undefined) {
      v.textContent += r.success ? " · target " + r.classes[r.target] + " reached" : " · target " + r.classes[r.target] + " not reached";
    }
    const notes = $("notes");
    notes.replaceChildren(...r.notes.map((n) => el("li", "", n)));
    const spec = state.attacks[r.attack] || {};
    $("status").textContent = (spec.label || r.attack) + " on " + r.model + ", " + r.budget_symbol + " = " + r.eps.toFixed(2) +
      (r.steps ? ", " + r.steps + " steps" : "") + ", seed " + r.seed + " · " + r.queries + (r.queries === 1 ? " query" : " queries") +
      (r.draws > 1 ? ", judged over " + r.draws + " draws" : "") + " · attack " + r.timing_ms.attack.toFixed(0) + " ms";
    const res = $("results");
    res.dataset.eps = r.eps.toFixed(2);
    res.dataset.attack = r.attack;
    res.dataset.model = r.model;
    res.dataset.flipped = String(r.flipped);
    res.dataset.seed = String(r.seed);
    res.dataset.gallery = r.gallery === null ? "" : String(r.gallery);
    res.dataset.seq = String(Number(res.dataset.seq || "0") + 1);
  }

  // ------------------------------------------------------------------ accuracy vs eps chart

  const CURVE_COLORS = ["#2754c5", "#c4302b", "#1a7f37"];

  function svg(tag, attrs, text) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawCurve(c) {
    const W = 520, H = 260, L = 44, R = 12, T = 12, B = 36;
    const legendH = 18 * c.lines.length;
    const root = svg("svg", { viewBox: "0 0 " + W + " " + (H + legendH), role: "img",
      "aria-label": "accuracy against " + "\u03b5" + " for " + c.model });
    const maxE = c.eps[c.eps.length - 1] || 1;
    const x = (e) => L + (W - L - R) * e / maxE, y = (a) => T + (H - T - B) * (1 - a);
    for (let i = 0; i <= 4; i++) {
      const a = i / 4;
      root.append(svg("line", { x1: L, x2: W - R, y1: y(a), y2: y(a), class: "grid" }));
      root.append(svg("text", { x: L - 6, y: y(a) + 4, "text-anchor": "end" }, (100 * a).toFixed(0) + "%"));
    }
    for (const e of c.eps) root.append(svg("text", { x: x(e), y: H - B + 16, "text-anchor": "middle" }, e.toFixed(2)));
    root.append(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
    root.append(svg("line", { x1: L, x2: L, y1: T, y2: y(0), class: "axis" }));
    root.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "\u03b5 (Linf)"));
    c.lines.forEach((ln, i) => {
      const color = CURVE_COLORS[i % CURVE_COLORS.length];
      const pts = ln.accuracy.map((a, j) => x(c.eps[j]).toFixed(1) + "," + y(a).toFixed(1)).join(" ");
      root.append(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2.5 }));
      ln.accuracy.forEach((a, j) => root.append(svg("circle", { cx: x(c.eps[j]), cy: y(a), r: 3, fill: color })));
      const ly = H + 14 + 18 * i;
      root.append(svg("line", { x1: L, x2: L + 22, y1: ly - 4, y2: ly - 4, stroke: color, "stroke-width": 3 }));
      root.append(svg("text", { x: L + 30, y: ly, class: "legend" }, ln.label));
    });
    const box = $("curve");
    box.replaceChildren(root);
    box.dataset.model = c.model;
    box.dataset.lines = String(c.lines.length);
    $("curve-info").textContent = c.images + " images" + (c.draws > 1 ? ", each judged over " + c.draws + " draws" : "") +
      ", seed " + c.seed + ", clean accuracy " + pct(c.clean_accuracy) + " · computed in " + c.seconds.toFixed(1) + " s";
    $("curve-notes").replaceChildren(...c.notes.map((n) => el("li", "", n)));
  }

  function clearCurve() {  // a chart of another model would mislead
    $("curve").replaceChildren();
    $("curve").dataset.model = "";
    $("curve-notes").replaceChildren();
  }

  async function computeCurve() {
    const btn = $("curve-btn");
    btn.disabled = true;
    $("curve-info").textContent = "computing…";
    try {
      drawCurve(await api("/api/curve", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: state.model, seed: state.seed }),
      }));
    } catch (e) {
      $("curve-info").textContent = "";
      showError("accuracy curve: " + e.message);
    } finally {
      btn.disabled = false;
    }
  }

  // ------------------------------------------------------------------ inputs

  function selectTab(name) {
    for (const b of document.querySelectorAll(".tab")) {
      const on = b.dataset.tab === name;
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", String(on));
    }
    for (const p of document.querySelectorAll(".tabpane")) p.hidden = p.id !== "tab-" + name;
  }

  // A targeted attack needs a class other than the image's own: move the target off it when they meet.
  function avoidOwnClass() {
    const a = state.attacks[state.attack];
    if (!a || a.targeted === "no" || state.target === null || state.imageLabel === null) return;
    if (state.target === state.imageLabel && state.classes.length > 1) {
      state.target = (state.imageLabel + 1) % state.classes.length;
      $("target").value = String(state.target);
    }
  }

  function selectGallery(id, label) {
    for (const t of document.querySelectorAll(".thumb")) t.classList.toggle("selected", t.dataset.id === String(id));
    state.image = { gallery: id };
    state.imageLabel = label === undefined ? null : label;
    avoidOwnClass();
    schedule(0);
  }

  async function uploadBlob(blob, preview, info) {
    try {
      const res = await api("/api/upload", {
        method: "POST", headers: { "Content-Type": blob.type || "application/octet-stream" }, body: blob,
      });
      preview.src = res.image;
      preview.hidden = false;
      if (info) {
        info.textContent = res.original_size[0] + "×" + res.original_size[1] + " px" + (res.inverted ? ", inverted" : "");
      }
      for (const t of document.querySelectorAll(".thumb")) t.classList.remove("selected");
      // small inputs go back as numbers; large ones (RGB photos) as the lossless PNG of the converted input
      state.image = res.pixels ? { pixels: res.pixels } : { png: res.image }; state.imageLabel = null;
      showError("");
      schedule(0);
    } catch (e) {
      showError("upload refused: " + e.message);
    }
  }

  function setupUpload() {
    const input = $("file-input"), drop = $("drop");
    input.addEventListener("change", () => { if (input.files[0]) uploadBlob(input.files[0], $("upload-preview"), $("upload-info")); input.value = ""; });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer.files[0];
      if (f) uploadBlob(f, $("upload-preview"), $("upload-info"));
    });
  }

  function setupCanvas() {
    const cv = $("draw"), g = cv.getContext("2d");
    const clear = () => { g.fillStyle = "#000"; g.fillRect(0, 0, cv.width, cv.height); };
    clear();
    let drawing = false, last = null, dirty = false;
    const pos = (e) => {
      const r = cv.getBoundingClientRect();
      return [(e.clientX - r.left) * cv.width / r.width, (e.clientY - r.top) * cv.height / r.height];
    };
    cv.addEventListener("pointerdown", (e) => { drawing = true; last = pos(e); cv.setPointerCapture(e.pointerId); stroke(last); });
    cv.addEventListener("pointermove", (e) => { if (drawing) stroke(pos(e)); });
    const end = () => {
      if (!drawing) return;
      drawing = false;
      if (dirty) cv.toBlob((b) => { if (b) uploadBlob(b, $("draw-preview"), null); }, "image/png");
    };
    cv.addEventListener("pointerup", end);
    cv.addEventListener("pointercancel", end);
    function stroke(p) {
      g.strokeStyle = "#fff"; g.lineWidth = 22; g.lineCap = "round"; g.lineJoin = "round";
      g.beginPath(); g.moveTo(last[0], last[1]); g.lineTo(p[0] + 0.01, p[1]); g.stroke();
      last = p; dirty = true;
    }
    $("clear").addEventListener("click", () => { clear(); dirty = false; $("draw-preview").hidden = true; });
  }

  // ------------------------------------------------------------------ models and attacks

  function renderModels(models) {
    const box = $("models");
    box.replaceChildren();
    for (const m of models) {
      state.models[m.key] = m;
      const lab = el("label", "choice" + (m.available ? "" : " disabled"));
      const r = el("input");
      r.type = "radio"; r.name = "model"; r.value = m.key; r.disabled = !m.available;
      r.checked = m.key === state.model && m.available;
      r.addEventListener("change", () => { state.model = m.key; clearCurve(); updateAttackChoices(); schedule(0); });
      lab.append(r, el("span", "name", m.label), el("span", "desc", m.available ? m.description : "unavailable: " + m.reason));
      lab.title = m.available ? m.description : m.reason;
      box.append(lab);
    }
    if (!models.some((m) => m.key === state.model && m.available)) {
      const first = models.find((m) => m.available);
      if (first) { state.model = first.key; box.querySelector('input[value="' + first.key + '"]').checked = true; }
    }
  }

  // Attacks that do not apply to the chosen model are disabled (the adaptive attack needs a randomized one);
  // the default attack for a model is the one that shows its weakness.
  function attackFits(a, m) {
    return a.available && (a.mode !== "adaptive" || (m && m.randomized));
  }

  function updateAttackChoices() {
    const m = state.models[state.model];
    const sel = $("attack");
    for (const o of sel.options) {
      const a = state.attacks[o.value];
      o.disabled = !attackFits(a, m);
      o.title = !a.available ? a.reason : (o.disabled ? "for randomized defended models (BaRT)" : "");
    }
    const cur = state.attacks[state.attack];
    if (!cur || !attackFits(cur, m)) {
      const first = Object.values(state.attacks).find((a) => attackFits(a, m));
      if (first) { state.attack = first.key; sel.value = first.key; updateAttackFields(); }
    }
  }

  function updateAttackFields() {
    const a = state.attacks[state.attack];
    if (!a) return;
    $("attack-desc").textContent = a.description;
    $("eps-label").textContent = a.eps_label;
    $("eps-sym").textContent = a.budget_symbol;
    $("target-row").hidden = a.targeted === "no";
    const tsel = $("target");
    tsel.querySelector('option[value=""]').disabled = a.targeted === "required";
    if (a.targeted === "required" && state.target === null) { state.target = 0; tsel.value = "0"; }
    if (a.targeted === "no") { state.target = null; tsel.value = ""; }
    avoidOwnClass();
    $("steps-row").hidden = !a.default_steps;
    if (a.default_steps) {
      state.steps = a.default_steps;
      $("steps").value = String(a.default_steps);
      $("steps-out").textContent = String(a.default_steps);
    } else {
      state.steps = null;
    }
  }

  function renderAttacks(info) {
    state.classes = info.classes;
    const sel = $("attack");
    sel.replaceChildren();
    for (const a of info.attacks) {
      state.attacks[a.key] = a;
      const o = el("option", "", a.label + (a.available ? "" : " (unavailable)"));
      o.value = a.key; o.disabled = !a.available;
      if (!a.available) o.title = a.reason;
      sel.append(o);
    }
    sel.value = state.attack;
    const tsel = $("target");
    tsel.replaceChildren();
    const none = el("option", "", "none (untargeted)");
    none.value = "";
    tsel.append(none);
    info.classes.forEach((c, i) => { const o = el("option", "", c); o.value = String(i); tsel.append(o); });
    $("steps").max = String(info.limits.max_steps);
    $("max-upload").textContent = (info.limits.max_upload_bytes / (1024 * 1024)).toFixed(0) + " MB";
    if (info.upload_hint) $("upload-hint").textContent = info.upload_hint;
    // drawing a digit only makes sense for a grayscale (MNIST-like) model
    const drawTab = document.querySelector('.tab[data-tab="draw"]');
    if (drawTab && info.input_shape && info.input_shape[0] !== 1) drawTab.hidden = true;
    if (info.input_shape && info.input_shape[0] !== 1) $("lead").textContent =
      "Pick an image, a model and an attack, then move the slider: the attack runs on this machine and the page " +
      "shows what changed, how much, and where the network looks.";
    updateAttackFields();
  }

  function renderGallery(g) {
    const box = $("gallery");
    box.replaceChildren();
    for (const it of g.images) {
      const b = el("button", "thumb");
      b.type = "button";
      b.dataset.id = String(it.id);
      b.title = "test image " + it.id + ", label " + it.name;
      const img = el("img");
      img.src = it.image; img.alt = "image of " + it.name;
      b.append(img);
      b.addEventListener("click", () => selectGallery(it.id, it.label));
      box.append(b);
    }
    $("gallery-source").textContent = g.source;
  }

  function setupControls() {
    for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => selectTab(b.dataset.tab));
    $("attack").addEventListener("change", (e) => { state.attack = e.target.value; updateAttackFields(); schedule(0); });
    $("target").addEventListener("change", (e) => { state.target = e.target.value === "" ? null : Number(e.target.value); schedule(0); });
    const eps = $("eps");
    const onEps = () => { state.eps = Number(eps.value); $("eps-out").textContent = state.eps.toFixed(2); schedule(); };
    eps.addEventListener("input", onEps);
    eps.addEventListener("change", onEps);
    $("curve-btn").addEventListener("click", computeCurve);
    const seed = $("seed");
    seed.addEventListener("change", () => {
      const t = seed.value.trim();
      state.seed = /^-?[0-9]+$/.test(t) ? Number(t) : (t === "" ? 0 : t); // the server says what is wrong with it
      schedule(0);
    });
    const steps = $("steps");
    const onSteps = () => { state.steps = Number(steps.value); $("steps-out").textContent = steps.value; schedule(); };
    steps.addEventListener("input", onSteps);
    steps.addEventListener("change", onSteps);
    state.eps = Number(eps.value);
  }

  async function init() {
    setupControls();
    setupUpload();
    setupCanvas();
    try {
      const [models, attacks, gal] = await Promise.all([api("/api/models"), api("/api/attacks"), api("/api/gallery")]);
      renderModels(models.models);
      renderAttacks(attacks);
      renderGallery(gal);
      updateAttackChoices();
      document.body.dataset.ready = "true";
      // start with the first image selected and attacked: no empty panels, no broken images
      if (gal.images.length && !state.image) selectGallery(gal.images[0].id, gal.images[0].label);
    } catch (e) {
      showError("could not load the demo: " + e.message);
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
