// The live critic board on the Critic Gate node and the keyframe strip on the Keyframes node.
// - cinereel.gate: one event per judged attempt while the gate runs ({attempt: row}), and one when it is done
//   ({rows, attempts}); the board has a row per shot and attempt with its keyframe as thumbnail, the kept attempt
//   marked, and plays an attempt's clip when clicked. It shows what was measured: a technical check's pass as
//   "technical check passed" with its figures, the four axis scores only when a critic model gave them.
// - cinereel.keyframe: one event per finished portrait or keyframe; the strip shows them as thumbnails.
// Text is set with textContent; media comes from ComfyUI's /view.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { fit, nodeById, nodes, panel, row } from "./cinereel.js";

const BOARD_MAX = 420;
const STRIP_MAX = 64;
const THUMB = "height: 36px; width: 64px; object-fit: cover; border-radius: 3px; background: #000; flex: none";
const AXES = [["composition", "composition"], ["motion_coherence", "motion"], ["character_consistency", "character"],
  ["lighting_fidelity", "lighting"]];

function viewURL(ref, bust = true) {
  const params = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder || "", type: ref.type || "output" });
  if (bust) params.set("t", String(ref.version ?? Date.now()));  // a re-render keeps the file name
  return api.apiURL(`/view?${params}`);
}

// The node an event is for: the one it names, else the one executing, else the only node of that class.
function target(detail, comfyClass, executing) {
  for (const id of [detail?.node, executing]) {
    const node = nodeById(id);
    if (node?.comfyClass === comfyClass) return node;
  }
  const all = nodes().filter((n) => n.comfyClass === comfyClass);
  return all.length === 1 ? all[0] : null;
}

// -- the critic board ---------------------------------------------------------------------------------

function board(node) {
  return (node.cinereelBoard ??= { runId: null, attempts: new Map(), playing: null });
}

function verdictOf(a) {
  if (a.verdict) return a.verdict;
  const technical = a.source === "technical" || (a.source == null && a.technical?.length);
  if (technical) return a.technical?.length ? `technical check failed: ${a.technical.join(", ")}` : "technical check passed";
  if (a.scores && a.source !== "technical") return AXES.map(([k, name]) => `${name} ${a.scores[k]}`).join(", ");
  return a.reason ? a.reason.replaceAll("_", " ") : "not judged";
}

function mark(a) {
  if (a.kept) return a.passed ? "✓ kept" : "⚑ kept (best, flagged)";
  return a.passed ? "✓" : "✗";
}

function attemptRow(node, a) {
  const line = document.createElement("div");
  line.dataset.attempt = `${a.shot}@${a.attempt}`;
  line.dataset.kept = a.kept ? "1" : "0";
  line.style.cssText = "display: flex; gap: 6px; align-items: center; padding: 2px; border-radius: 4px; cursor: pointer";
  if (a.kept) line.style.outline = `1px solid ${a.passed ? "#2e7d32" : "#b58b2a"}`;
  if (a.keyframe) {
    const thumb = document.createElement("img");
    thumb.style.cssText = THUMB;
    thumb.alt = `${a.shot} attempt ${a.attempt}`;
    thumb.src = viewURL(a.keyframe);
    line.appendChild(thumb);
  }
  const text = document.createElement("div");
  row(text, `${mark(a)} ${a.shot} · attempt ${a.attempt}${a.of ? `/${a.of}` : ""}`, true);
  row(text, verdictOf(a));
  const why = [a.label, a.remedy && `remedy: ${a.remedy}`].filter(Boolean).join(" · ");
  if (why) row(text, why);
  line.appendChild(text);
  if (a.clip) {
    line.title = "Play this attempt";
    line.addEventListener("click", () => play(node, a));
  }
  return line;
}

function play(node, a) {
  const b = board(node);
  b.playing = `${a.shot}@${a.attempt}`;
  const el = panel(node, "cinereel_scores", BOARD_MAX);
  let video = el.querySelector("video[data-cinereel-player]");
  if (!video) {
    video = document.createElement("video");
    video.dataset.cinereelPlayer = "1";
    video.controls = true;
    video.loop = true;
    video.muted = true;
    video.style.cssText = "width: 100%; max-height: 160px; background: #000";
    el.prepend(video);
  }
  video.dataset.playing = b.playing;
  video.src = viewURL(a.clip);
  video.play().catch(() => {});  // a browser may refuse autoplay: the controls are there
  fit(node);
}

function showBoard(node) {
  const b = board(node);
  const el = panel(node, "cinereel_scores", BOARD_MAX);
  const player = el.querySelector("video[data-cinereel-player]");
  const sorted = [...b.attempts.values()].sort((x, y) => (x.shot < y.shot ? -1 : x.shot > y.shot ? 1 : x.attempt - y.attempt));
  el.replaceChildren(...(player ? [player] : []), ...sorted.map((a) => attemptRow(node, a)));
  fit(node);
}

function addAttempts(node, runId, attempts, replace = false) {
  const b = board(node);
  if (replace || (runId && b.runId && runId !== b.runId)) b.attempts.clear();
  if (runId) b.runId = runId;
  for (const a of attempts) {
    if (a?.shot == null || a.attempt == null) continue;
    if (a.kept) for (const other of b.attempts.values()) if (other.shot === a.shot) other.kept = false;
    b.attempts.set(`${a.shot}@${a.attempt}`, { ...a });
  }
  showBoard(node);
}

// The gate's final rows (one per shot: the kept attempt), merged into what the live events showed.
function rowsAsAttempts(rows) {
  return rows.map((r) => ({ ...r, kept: true }));
}

// -- the keyframe strip -------------------------------------------------------------------------------

function strip(node) {
  return (node.cinereelStrip ??= { runId: null, pictures: new Map() });
}

function showStrip(node) {
  const s = strip(node);
  const el = panel(node, "cinereel_strip", STRIP_MAX);
  el.style.display = "flex";
  el.style.flexWrap = "wrap";
  el.style.gap = "3px";
  el.style.padding = "3px";
  const thumbs = [...s.pictures.entries()].map(([name, ref]) => {
    const img = document.createElement("img");
    img.style.cssText = "height: 27px; width: 48px; object-fit: cover; border-radius: 2px; background: #000";
    img.dataset.picture = name;
    img.alt = name;
    img.title = name;
    img.src = viewURL(ref);
    return img;
  });
  el.replaceChildren(...thumbs);
  fit(node);
}

function addPicture(node, detail) {
  const s = strip(node);
  if (detail.run_id && s.runId && detail.run_id !== s.runId) s.pictures.clear();
  s.runId = detail.run_id ?? s.runId;
  s.pictures.set(detail.name ?? detail.image.filename, { ...detail.image, version: Date.now() });
  // portraits first, then keyframes, each in the order they came
  s.pictures = new Map([...s.pictures].sort(([a], [b]) => (a.startsWith("portrait") ? 0 : 1) - (b.startsWith("portrait") ? 0 : 1)));
  showStrip(node);
}

app.registerExtension({
  name: "CineReel.board",
  async setup() {
    let executing = null;
    api.addEventListener("executing", ({ detail }) => {
      executing = typeof detail === "object" && detail !== null ? detail.node ?? null : detail;
      const node = nodeById(executing);
      // a node that runs again starts its board or strip afresh (a cached one keeps what it showed)
      if (node?.comfyClass === "CineReelCriticGate") board(node).attempts.clear();
      if (node?.comfyClass === "CineReelKeyframes") strip(node).pictures.clear();
    });
    api.addEventListener("cinereel.gate", ({ detail }) => {
      const node = target(detail, "CineReelCriticGate", executing);
      if (!node) return;
      if (detail?.attempt) addAttempts(node, detail.run_id, [detail.attempt]);
      else if (Array.isArray(detail?.attempts)) addAttempts(node, detail.run_id, detail.attempts, true);
      else if (Array.isArray(detail?.rows)) addAttempts(node, detail.run_id, rowsAsAttempts(detail.rows));
    });
    api.addEventListener("cinereel.keyframe", ({ detail }) => {
      const node = target(detail, "CineReelKeyframes", executing);
      if (node && detail?.image?.filename) addPicture(node, detail);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "CineReelCriticGate") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      if (Array.isArray(output?.cinereel_attempts)) addAttempts(this, null, output.cinereel_attempts, true);
      else if (Array.isArray(output?.cinereel_scores)) addAttempts(this, null, rowsAsAttempts(output.cinereel_scores));
    };
  },
});
