// CineReel's UI: shows what the graph produces where it is made.
// - the shot list on the Director node
// - the critic's scores per shot on the Critic Gate node
// - the resident model on every CineReel loader and Unload node
// - the finished reel playing on the Assemble node
// Text a model wrote is always set with textContent, never parsed as HTML.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PANEL_STYLE = [
  "font: 11px/1.35 ui-monospace, monospace",
  "color: var(--input-text, #ddd)",
  "background: var(--comfy-input-bg, #222)",
  "border-radius: 6px",
  "padding: 6px",
  "overflow: auto",
  "max-height: 260px",
  "white-space: pre-wrap",
].join(";");

function panel(node, name) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (!widget) {
    const element = document.createElement("div");
    element.style.cssText = PANEL_STYLE;
    // The frontend sizes DOM widgets from these: tall enough for the content, scrolling past 260 px.
    const height = () => Math.min(260, Math.max(40, element.scrollHeight + 8));
    widget = node.addDOMWidget(name, "cinereel_panel", element, {
      serialize: false, hideOnZoom: false, getMinHeight: height, getMaxHeight: () => 260,
    });
    widget.element = element;
  }
  return widget.element;
}

function row(parent, text, bold = false) {
  const line = document.createElement("div");
  line.textContent = text;
  if (bold) line.style.fontWeight = "bold";
  parent.appendChild(line);
  return line;
}

function showShots(node, shots, plan) {
  const el = panel(node, "cinereel_shots");
  el.replaceChildren();
  if (plan) {
    row(el, `${plan.run_id} · ${plan.locale} · ${plan.language} · ${plan.mood} · ${plan.time_of_day}`, true);
    for (const warning of plan.warnings || []) row(el, `⚠ ${warning}`);
  }
  for (const s of shots) {
    row(el, `${s.id}  ${s.type}  ${Number(s.start_s).toFixed(1)}s +${Number(s.duration_s).toFixed(1)}s  ${s.camera}`, true);
    if (s.narration) row(el, `  “${s.narration}”`);
  }
}

function showScores(node, rows) {
  const el = panel(node, "cinereel_scores");
  el.replaceChildren();
  for (const r of rows) {
    const mark = r.passed ? "✓" : r.flagged ? "⚑" : "✗";
    row(el, `${mark} ${r.shot}  attempt ${r.attempt}  mean ${Number(r.mean).toFixed(1)}  ${r.label || r.reason || ""}`, true);
    if (r.scores) {
      row(el, `  composition ${r.scores.composition}  motion ${r.scores.motion_coherence}  ` +
        `character ${r.scores.character_consistency}  lighting ${r.scores.lighting_fidelity}`);
    }
  }
}

function showVideo(node, file) {
  const el = panel(node, "cinereel_video");
  el.replaceChildren();
  const params = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder || "", type: file.type || "output" });
  const video = document.createElement("video");
  video.controls = true;
  video.loop = true;
  video.style.width = "100%";
  video.src = api.apiURL(`/view?${params}`);
  el.appendChild(video);
  row(el, `${file.subfolder}/${file.filename}`);
}

function showText(node, lines) {
  const el = panel(node, "cinereel_status");
  el.replaceChildren();
  for (const line of lines) row(el, String(line));
}

const residentListeners = new Set();

app.registerExtension({
  name: "CineReel.ui",
  async setup() {
    api.addEventListener("cinereel.residency", ({ detail }) => {
      for (const node of residentListeners) {
        const text = detail?.resident ? `resident: ${detail.resident}` : "resident: none";
        showText(node, [text]);
        node.setDirtyCanvas?.(true, true);
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("CineReel")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      if (output?.cinereel_shots) showShots(this, output.cinereel_shots, output.cinereel_plan?.[0]);
      if (output?.cinereel_scores) showScores(this, output.cinereel_scores);
      if (output?.cinereel_video?.[0]) showVideo(this, output.cinereel_video[0]);
      if (output?.text) showText(this, output.text);
      requestAnimationFrame(() => {  // after the panel's text is laid out, so scrollHeight is known
        this.setSize?.([Math.max(this.size[0], 360), this.computeSize()[1]]);
        this.setDirtyCanvas?.(true, true);
      });
    };
    if (nodeData.name.endsWith("Loader") || nodeData.name === "CineReelUnloadModels") {
      const onAdded = nodeType.prototype.onAdded;
      nodeType.prototype.onAdded = function () {
        onAdded?.apply(this, arguments);
        residentListeners.add(this);
      };
      const onRemoved = nodeType.prototype.onRemoved;
      nodeType.prototype.onRemoved = function () {
        onRemoved?.apply(this, arguments);
        residentListeners.delete(this);
      };
    }
  },
});
