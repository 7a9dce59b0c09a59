// CineReel's UI: shows what the graph produces where it is made.
// - the shot list on the Director node, with the stages of its run as they finish (cinereel.plan, cinereel.stage)
// - the shot editor on the Director node (cinereel_editor.js), the live critic board on the Critic Gate node and the
//   keyframe strip on the Keyframes node (cinereel_board.js: cinereel.gate, cinereel.keyframe)
// - the keyframe critic's verdict per shot on the Keyframe Gate node (cinereel.keyframe_gate, and the node's output)
// - a "resident" badge on the one loader whose model is resident, and the resident model on Unload nodes
//   (cinereel.residency, matched to the handle each loader reports when it runs)
// - the finished reel playing on the Assemble node
// Every event the server sends (grep send_ui_event) has a listener here, so none is "unhandled".
// Text a model or a user wrote is always set with textContent, never parsed as HTML.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PANEL_MAX = 260;
const PANEL_STYLE = [
  "font: 11px/1.35 ui-monospace, monospace",
  "color: var(--input-text, #ddd)",
  "background: var(--comfy-input-bg, #222)",
  "border-radius: 6px",
  "padding: 6px",
  "overflow: auto",
  `max-height: ${PANEL_MAX}px`,
  "white-space: pre-wrap",
  "box-sizing: border-box",
].join(";");

// The height of what a panel holds, not of the panel: the frontend stretches a panel into the node's free room,
// and a panel that asked for its own (stretched) height would never let its node shrink back.
function contentHeight(element) {
  const shown = [...element.children].filter((child) => child.offsetHeight > 0);
  if (!shown.length) return 0;
  const top = Math.min(...shown.map((child) => child.offsetTop));
  return Math.max(...shown.map((child) => child.offsetTop + child.offsetHeight)) - top;
}

export function panel(node, name, max = PANEL_MAX) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (!widget) {
    const element = document.createElement("div");
    element.style.cssText = PANEL_STYLE;
    element.dataset.cinereelPanel = name;
    // The frontend sizes DOM widgets from these: tall enough for the content, scrolling past PANEL_MAX.
    element.style.maxHeight = `${max}px`;
    const height = () => Math.min(max, Math.max(40, contentHeight(element) + 16));
    widget = node.addDOMWidget(name, "cinereel_panel", element, {
      serialize: false, hideOnZoom: false, getMinHeight: height, getMaxHeight: () => max,
    });
    widget.element = element;
  }
  return widget.element;
}

export function row(parent, text, bold = false) {
  const line = document.createElement("div");
  line.textContent = text;
  if (bold) line.style.fontWeight = "bold";
  parent.appendChild(line);
  return line;
}

// Grow a node to fit its panels once their text is laid out; never shrink it (the shipped workflows reserve
// room for the results, and a node that shrank and grew on every run would jump around).
export function fit(node) {
  requestAnimationFrame(() => {
    const wanted = node.computeSize?.();
    if (wanted) node.setSize?.([Math.max(node.size[0], wanted[0]), Math.max(node.size[1], wanted[1])]);
    node.setDirtyCanvas?.(true, true);
  });
}

export function nodes() {
  return app.graph?._nodes ?? app.graph?.nodes ?? [];
}

export function nodeById(id) {
  return id == null ? null : app.graph?.getNodeById?.(id) ?? null;
}

// -- the Director: plan, shot list, stages --------------------------------------------------

function showPlan(node) {
  const state = node.cinereel ?? {};
  const el = panel(node, "cinereel_shots");
  el.replaceChildren();
  const plan = state.plan;
  if (plan) {
    const parts = [plan.run_id, plan.locale, plan.language, plan.mood, plan.time_of_day].filter((p) => p);
    row(el, parts.join(" · "), true);
    for (const warning of plan.warnings || []) row(el, `⚠ ${warning}`);
    if (plan.estimate) row(el, plan.estimate);
  }
  if (state.stages?.length) row(el, `done: ${state.stages.join(" → ")}`);
  // the shots themselves are on show, editable, in the shot editor below (cinereel_editor.js)
  const shots = state.shots || [];
  if (shots.length) {
    const seconds = shots.reduce((total, s) => total + Number(s.duration_s || 0), 0);
    row(el, `${shots.length} shot(s), ${seconds.toFixed(1)} s: ${shots.map((s) => s.id).join(", ")}`);
  }
  fit(node);
}

const directorOfRun = new Map(); // run_id -> Director node id, from the cinereel.plan event

function onPlan(node, runId, shots, summary) {
  node.cinereel = { ...(node.cinereel ?? {}), shots };
  if (summary) node.cinereel.plan = summary;
  if (runId) {
    directorOfRun.set(runId, node.id);
    if (node.cinereel.runId !== runId) node.cinereel.stages = [];
    node.cinereel.runId = runId;
  }
  showPlan(node);
}

// -- Assemble and plain text ----------------------------------------------------------------

function showVideo(node, file) {
  const el = panel(node, "cinereel_video");
  el.replaceChildren();
  const params = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder || "", type: file.type || "output" });
  const video = document.createElement("video");
  video.controls = true;
  video.loop = true;
  video.preload = "auto";
  video.style.width = "100%";
  video.style.maxHeight = `${PANEL_MAX - 40}px`;
  video.addEventListener("loadedmetadata", () => fit(node));
  video.src = api.apiURL(`/view?${params}`);
  el.appendChild(video);
  row(el, `${file.subfolder}/${file.filename}`);
  fit(node);
}

// The Keyframe Gate's verdict per shot: a critic model judged each keyframe, so its scores are shown as given.
function showKeyframeScores(node, rows) {
  const el = panel(node, "cinereel_scores");
  el.replaceChildren();
  for (const r of rows) {
    const mark = r.passed ? "✓" : r.flagged ? "⚑" : "✗";
    const mean = r.mean == null ? "unjudged" : `mean ${Number(r.mean).toFixed(1)}`;
    row(el, `${mark} ${r.shot}  keyframe ${r.attempt}/${r.of}  ${mean}  ${r.label || r.reason || ""}`, true);
    if (r.scores) {
      row(el, `  composition ${r.scores.composition}  motion ${r.scores.motion_coherence}  ` +
        `character ${r.scores.character_consistency}  lighting ${r.scores.lighting_fidelity}`);
    }
  }
  fit(node);
}

function showText(node, lines) {
  const el = panel(node, "cinereel_status");
  el.replaceChildren();
  for (const line of lines) row(el, String(line));
  fit(node);
}

// -- the resident model ------------------------------------------------------------------------

let resident = { key: null, label: null }; // what the server last said is resident

function isLoader(node) {
  return node.comfyClass?.startsWith("CineReel") && node.comfyClass.endsWith("Loader");
}

function isUnload(node) {
  return node.comfyClass === "CineReelUnloadModels";
}

// Exactly one loader wears the badge: the one whose handle (reported in its output when it ran) is the
// resident one. Its key (checkpoint, dtype, device, options) decides; the label (family:checkpoint) only when
// no loader's key matches. Unload nodes show what is resident, whatever it is.
function updateBadges() {
  const loaders = nodes().filter(isLoader);
  let wearer = resident.key ? loaders.find((n) => n.cinereelHandle?.key === resident.key) : null;
  if (!wearer && resident.label) wearer = loaders.find((n) => n.cinereelHandle?.label === resident.label);
  for (const node of loaders) node.cinereelResident = node === wearer ? resident.label : null;
  for (const node of nodes().filter(isUnload)) {
    node.cinereelResident = resident.label ? `resident: ${resident.label}` : "nothing resident";
  }
  app.graph?.setDirtyCanvas?.(true, true);
}

function drawBadge(node, ctx, text, color) {
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.font = "bold 11px sans-serif";
  const room = Math.max(40, node.size[0] * 0.55);
  let shown = text;
  while (shown.length > 4 && ctx.measureText(shown).width > room - 12) shown = shown.slice(0, -2);
  if (shown !== text) shown = `${shown.slice(0, -1)}…`;
  const w = ctx.measureText(shown).width + 12;
  const h = 18;
  const x = node.size[0] - w - 8;
  const y = -title + (title - h) / 2;
  ctx.fillStyle = color;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(x, y, w, h, 9);
  else ctx.rect(x, y, w, h);
  ctx.fill();
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(shown, x + 6, y + h / 2 + 0.5);
  ctx.restore();
}

app.registerExtension({
  name: "CineReel.ui",
  async setup() {
    let executing = null;
    api.addEventListener("executing", ({ detail }) => {
      executing = typeof detail === "object" && detail !== null ? detail.node ?? null : detail;
    });
    api.addEventListener("execution_start", () => {
      for (const node of nodes()) {
        if (node.comfyClass === "CineReelDirector" && node.cinereel?.stages?.length) {
          node.cinereel.stages = [];
          showPlan(node);
        }
      }
    });
    api.addEventListener("cinereel.plan", ({ detail }) => {
      const node = nodeById(executing);
      if (node?.comfyClass === "CineReelDirector" && Array.isArray(detail?.shots)) {
        onPlan(node, detail.run_id, detail.shots, null);
      }
    });
    api.addEventListener("cinereel.stage", ({ detail }) => {
      const node = nodeById(directorOfRun.get(detail?.run_id));
      if (!node?.cinereel || !detail?.stage) return;
      const stages = (node.cinereel.stages ??= []);
      if (!stages.includes(detail.stage)) stages.push(detail.stage);
      showPlan(node);
    });
    api.addEventListener("cinereel.keyframe_gate", ({ detail }) => {
      const node = nodeById(executing);
      if (node?.comfyClass === "CineReelKeyframeGate" && Array.isArray(detail?.rows)) showKeyframeScores(node, detail.rows);
    });
    api.addEventListener("cinereel.residency", ({ detail }) => {
      resident = { key: detail?.resident_key ?? null, label: detail?.resident ?? null };
      updateBadges();
    });
    try {
      const now = await api.fetchApi("/cinereel/residency");
      if (now.ok) {
        const body = await now.json();
        resident = { key: body.resident_key ?? null, label: body.resident ?? null };
      }
    } catch {
      // an older pack server without the route: badges appear with the first residency event
    }
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("CineReel")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      if (output?.cinereel_shots) onPlan(this, output.cinereel_plan?.[0]?.run_id, output.cinereel_shots, output.cinereel_plan?.[0]);
      if (output?.cinereel_video?.[0]) showVideo(this, output.cinereel_video[0]);
      if (output?.cinereel_scores && this.comfyClass === "CineReelKeyframeGate") showKeyframeScores(this, output.cinereel_scores);
      if (output?.text) showText(this, output.text);
      if (output?.cinereel_handle?.[0]) {
        this.cinereelHandle = output.cinereel_handle[0];
        updateBadges();
      }
    };
    if (nodeData.name.endsWith("Loader") || nodeData.name === "CineReelUnloadModels") {
      const unload = nodeData.name === "CineReelUnloadModels";
      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        onDrawForeground?.apply(this, arguments);
        if (this.flags?.collapsed || !this.cinereelResident) return;
        if (unload) drawBadge(this, ctx, this.cinereelResident, "#555");
        else drawBadge(this, ctx, "● resident", "#2e7d32");
      };
      const onAdded = nodeType.prototype.onAdded;
      nodeType.prototype.onAdded = function () {
        onAdded?.apply(this, arguments);
        if (unload) this.cinereelResident = resident.label ? `resident: ${resident.label}` : "nothing resident";
      };
    }
  },
});
