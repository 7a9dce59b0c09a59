// The shot editor on the Director node. After the director has planned, its shots (and characters) are editable in
// place; the edited plan is the Director's plan_edits widget (saved with the workflow, so a shared workflow carries
// it) and is what the next queue renders; "reset to director" clears it. Edits are checked as the user types (the
// schema's limits mirrored in cinereel_plan.js, then the server's POST /cinereel/validate_plan, debounced) with the
// problem beside its field, and a plan with problems blocks the queue. Per shot: re-render (a new seed, then queue)
// and lock (the gate and the stages leave it as it is). Text is always set with textContent or .value.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { fit, nodeById, nodes, panel } from "./cinereel.js";
import {
  MIRROR, TYPE_LABELS, asProblem, checkPlan, clonePlan, newSeed, nextShotId, parsePlan, planText, startEdit,
  syncDuration,
} from "./cinereel_plan.js";

const EDITS = "plan_edits";
const EDITOR_MAX = 320;
const SERVER_CHECK_MS = 400;
const ERROR_COLOUR = "#ff6b6b";
const EDITOR_CSS = `
[data-cinereel-editor] { white-space: normal; }
[data-cinereel-editor] .cr-bar { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-bottom: 4px;
  position: sticky; top: -6px; z-index: 1; padding: 2px 0; background: var(--comfy-input-bg, #222); }
[data-cinereel-editor] .cr-card { border: 1px solid #555; border-radius: 5px; padding: 4px; margin: 4px 0; }
[data-cinereel-editor] .cr-card.cr-locked { border-color: #2e7d32; }
[data-cinereel-editor] .cr-head { display: flex; gap: 4px; align-items: center; flex-wrap: wrap; font-weight: bold; }
[data-cinereel-editor] .cr-grid { display: grid; grid-template-columns: 80px 1fr; gap: 2px 6px; margin-top: 3px; }
[data-cinereel-editor] .cr-grid > label { opacity: 0.8; padding-top: 2px; }
[data-cinereel-editor] input, [data-cinereel-editor] select, [data-cinereel-editor] textarea {
  font: inherit; color: inherit; background: #111; border: 1px solid #555; border-radius: 3px; width: 100%;
  box-sizing: border-box; }
[data-cinereel-editor] textarea { resize: vertical; min-height: 32px; }
[data-cinereel-editor] button { font: inherit; color: inherit; background: #333; border: 1px solid #666;
  border-radius: 3px; padding: 0 5px; cursor: pointer; }
[data-cinereel-editor] .cr-invalid { border-color: ${ERROR_COLOUR}; }
[data-cinereel-editor] [data-problem] { color: ${ERROR_COLOUR}; grid-column: 2; }
[data-cinereel-editor] [data-problem]:empty { display: none; }
`;

// What the editor shows of a shot and of a character: [plan field, label, control, tooltip].
const SHOT_FIELDS = [
  ["prompt", "prompt", "textarea", "What the keyframe shows."],
  ["type", "type", "select", "hero, b-roll or establishing: sets the default flow shift (hero 5, the others 8)."],
  ["camera", "camera", "select", "The camera move."],
  ["camera_detail", "camera detail", "text", "Free-text camera direction on top of the move."],
  ["flow_shift", "flow shift", "number", "1 to 8: lower keeps shapes steadier, higher moves more."],
  ["ref_weight", "reference", "number", "0 to 1: how strongly the character portraits steer the keyframe."],
  ["duration_s", "duration s", "number", "Seconds; the reel's length follows its shots."],
  ["seed", "seed", "text", "The render seed of this shot."],
  ["narration", "narration", "textarea", "The line spoken over this shot."],
];
const CHARACTER_FIELDS = [
  ["name", "name", "text", "The character's name."],
  ["description", "description", "textarea", "Face, age, build: what keeps them the same person."],
  ["wardrobe", "wardrobe", "text", "Clothing, comma-separated."],
];

// -- state ------------------------------------------------------------------------------------------

function editsWidget(node) {
  return node.widgets?.find((w) => w.name === EDITS) ?? null;
}

function state(node) {
  return (node.cinereelEditor ??= { base: null, edit: null, problems: [], serverTimer: null, checked: "" });
}

function shownPlan(node) {
  const s = state(node);
  return s.edit ?? s.base;
}

// The edit, started from the plan on show the first time the user changes something.
function editable(node) {
  const s = state(node);
  if (!s.edit && s.base) s.edit = startEdit(s.base);
  return s.edit;
}

function storeEdit(node) {
  const widget = editsWidget(node);
  const s = state(node);
  if (widget) widget.value = s.edit ? planText(s.edit) : "";
  app.graph?.change?.();
}

// -- building the editor ----------------------------------------------------------------------------

function element(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else el[key] = value;
  }
  el.append(...children);
  return el;
}

function installStyle() {
  if (document.querySelector("style[data-cinereel-editor-style]")) return;
  const style = element("style", { text: EDITOR_CSS });
  style.dataset.cinereelEditorStyle = "1";
  document.head.appendChild(style);
}

function control(node, path, value, kind, options = {}) {
  let input;
  if (kind === "select") {
    input = element("select");
    for (const choice of options.values) {
      input.appendChild(element("option", { value: choice, text: options.labels?.[choice] ?? choice }));
    }
    input.value = value;
  } else if (kind === "textarea") {
    input = element("textarea", { rows: options.rows ?? 2, text: value ?? "" });
  } else {
    input = element("input", { type: "text", inputMode: kind === "number" ? "decimal" : "text" });
    input.value = value ?? "";
  }
  input.dataset.field = path;
  input.title = options.tooltip ?? "";
  const event = kind === "select" ? "change" : "input";
  input.addEventListener(event, () => onInput(node, path, input.value));
  return input;
}

function field(grid, node, label, path, value, kind, options) {
  grid.append(element("label", { text: label, title: options?.tooltip ?? "" }), control(node, path, value, kind, options),
    element("div", { dataset: { problem: path } }));
}

function shotCard(node, plan, shot, index) {
  const card = element("div", { className: "cr-card", dataset: { shot: shot.id } });
  if (shot.locked) card.classList.add("cr-locked");
  const lock = element("input", { type: "checkbox", checked: Boolean(shot.locked),
    title: "Lock: never re-rendered, never sent back by the gate" });
  lock.dataset.action = "lock";
  lock.addEventListener("change", () => setLocked(node, index, lock.checked));
  const button = (action, text, title, run) => {
    const b = element("button", { text, title, type: "button" });
    b.dataset.action = action;
    b.addEventListener("click", (e) => { e.stopPropagation(); run(); });
    return b;
  };
  const start = plan.shots.slice(0, index).reduce((t, s) => t + Number(s.duration_s || 0), 0);
  card.appendChild(element("div", { className: "cr-head" },
    element("span", { text: `${shot.id} · ${start.toFixed(1)}s` }),
    button("up", "↑", "Move this shot earlier", () => moveShot(node, index, -1)),
    button("down", "↓", "Move this shot later", () => moveShot(node, index, 1)),
    button("add", "+", "Add a shot after this one (a copy with its own seed)", () => addShot(node, index)),
    button("delete", "✕", "Delete this shot", () => deleteShot(node, index)),
    button("rerender", "re-render", "Render this shot again from a new seed, and queue", () => rerenderShot(node, index)),
    element("label", { title: lock.title }, lock, element("span", { text: " lock" }))));
  const grid = element("div", { className: "cr-grid" });
  for (const [name, label, kind, tooltip] of SHOT_FIELDS) {
    const options = { tooltip, rows: name === "prompt" ? 3 : 2 };
    if (name === "type") Object.assign(options, { values: MIRROR.shot_types, labels: TYPE_LABELS });
    if (name === "camera") options.values = MIRROR.camera_moves;
    field(grid, node, label, `shots.${index}.${name}`, shot[name], kind, options);
  }
  card.appendChild(grid);
  return card;
}

function characterCard(node, character, index) {
  const card = element("div", { className: "cr-card", dataset: { character: character.id } });
  card.appendChild(element("div", { className: "cr-head", text: `character ${character.id}` }));
  const grid = element("div", { className: "cr-grid" });
  for (const [name, label, kind, tooltip] of CHARACTER_FIELDS) {
    const value = name === "wardrobe" ? (character.wardrobe || []).join(", ") : character[name];
    field(grid, node, label, `characters.${index}.${name}`, value, kind, { tooltip });
  }
  card.appendChild(grid);
  return card;
}

function render(node) {
  const plan = shownPlan(node);
  if (!plan?.shots) {  // edits discarded before this page saw the director's plan: it comes with the next run
    const shown = node.widgets?.find((w) => w.name === "cinereel_editor")?.element;
    shown?.replaceChildren(element("div", { text: "edits discarded: the next queue renders the director's plan" }));
    return;
  }
  installStyle();
  const root = panel(node, "cinereel_editor", EDITOR_MAX);
  if (!root.dataset.cinereelEditor) {
    root.dataset.cinereelEditor = "1";
    // The frontend forwards keys to the canvas unless typed into a text field: Delete on a focused choice
    // would delete the selected nodes.
    root.addEventListener("keydown", (e) => {
      if (e.target.tagName === "SELECT" && !e.ctrlKey && !e.metaKey && !e.altKey) e.stopPropagation();
    });
  }
  const s = state(node);
  const status = element("span", { dataset: { status: "1" } });
  const reset = element("button", { text: "reset to director", type: "button",
    title: "Discard the edits: the next queue renders the director's plan" });
  reset.dataset.action = "reset";
  reset.disabled = !s.edit;
  reset.addEventListener("click", () => resetEdits(node));
  const children = [element("div", { className: "cr-bar" }, status, reset), element("div", { dataset: { problem: "plan" } })];
  (plan.characters || []).forEach((c, i) => children.push(characterCard(node, c, i)));
  plan.shots.forEach((shot, i) => children.push(shotCard(node, plan, shot, i)));
  root.replaceChildren(...children);
  showProblems(node);
  fit(node);
}

function showProblems(node) {
  const root = node.widgets?.find((w) => w.name === "cinereel_editor")?.element;
  if (!root) return;
  const s = state(node);
  const byPath = new Map();
  for (const p of s.problems) byPath.set(p.path, [...(byPath.get(p.path) ?? []), p.message]);
  const loose = [];
  for (const [path, messages] of byPath) {
    if (!root.querySelector(`[data-problem="${CSS.escape(path)}"]`)) loose.push(`${path}: ${messages.join("; ")}`);
  }
  for (const slot of root.querySelectorAll("[data-problem]")) {
    const messages = slot.dataset.problem === "plan" ? loose : byPath.get(slot.dataset.problem) ?? [];
    slot.textContent = messages.join("; ");
  }
  for (const input of root.querySelectorAll("[data-field]")) input.classList.toggle("cr-invalid", byPath.has(input.dataset.field));
  const reset = root.querySelector("[data-action=reset]");
  if (reset) reset.disabled = !s.edit;
  const status = root.querySelector("[data-status]");
  if (status) {
    status.textContent = !s.edit && s.resetPending ? "edits discarded: the next queue renders the director's plan"
      : !s.edit ? "director's plan (edit any field to change it)"
      : s.problems.length ? `edited plan: ${s.problems.length} problem(s), the queue is blocked`
        : "edited plan: the next queue renders it";
    status.style.color = s.problems.length ? ERROR_COLOUR : "";
  }
}

// -- edits ------------------------------------------------------------------------------------------

const NUMBERS = new Set(["duration_s", "flow_shift", "ref_weight"]);

function setValue(plan, path, raw) {
  const [section, index, name] = path.split(".");
  const item = plan[section][Number(index)];
  if (name === "wardrobe") item[name] = raw.split(",").map((w) => w.trim()).filter(Boolean);
  else if (NUMBERS.has(name)) item[name] = raw.trim() !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  else if (name === "seed") item[name] = raw.trim();
  else item[name] = raw;
  return item;
}

function onInput(node, path, raw) {
  const plan = editable(node);
  if (!plan) return;
  state(node).resetPending = false;
  const item = setValue(plan, path, raw);
  const [, index, name] = path.split(".");
  if (name === "type") {  // the type sets the default flow shift
    item.flow_shift = MIRROR.default_flow_shift[item.type] ?? item.flow_shift;
    const input = node.widgets?.find((w) => w.name === "cinereel_editor")?.element
      ?.querySelector(`[data-field="shots.${index}.flow_shift"]`);
    if (input) input.value = item.flow_shift;
  }
  if (name === "duration_s") syncDuration(plan);
  changed(node, false);
}

function changed(node, rebuild) {
  storeEdit(node);
  validate(node);
  if (rebuild) render(node);
  else showProblems(node);
}

function moveShot(node, index, by) {
  const plan = editable(node);
  const to = index + by;
  if (!plan || to < 0 || to >= plan.shots.length) return;
  [plan.shots[index], plan.shots[to]] = [plan.shots[to], plan.shots[index]];
  changed(node, true);
}

function addShot(node, index) {
  const plan = editable(node);
  if (!plan || plan.shots.length >= MIRROR.max_shots) return;
  const copy = { ...clonePlan({ shots: [plan.shots[index]] }).shots[0], id: nextShotId(plan), seed: newSeed(),
    locked: false };
  plan.shots.splice(index + 1, 0, copy);
  syncDuration(plan);
  changed(node, true);
}

function deleteShot(node, index) {
  const plan = editable(node);
  if (!plan || plan.shots.length <= 1) return;
  plan.shots.splice(index, 1);
  syncDuration(plan);
  changed(node, true);
}

function setLocked(node, index, locked) {
  const plan = editable(node);
  if (!plan) return;
  plan.shots[index].locked = locked;
  changed(node, true);
}

async function rerenderShot(node, index) {
  const plan = editable(node);
  if (!plan) return;
  plan.shots[index].seed = newSeed();
  plan.shots[index].locked = false;
  changed(node, true);
  await app.queuePrompt(0, 1);
}

function resetEdits(node) {
  const s = state(node);
  s.edit = null;
  s.problems = [];
  s.resetPending = true;
  storeEdit(node);
  render(node);
}

// -- checking ---------------------------------------------------------------------------------------

function mergeProblems(local, server) {
  const seen = new Set(local.map((p) => p.path));
  return [...local, ...server.filter((p) => !seen.has(p.path))];
}

// The engine that will speak the narration: the voice loader wired to the Director's voice_model, if any
// (null: the server sizes for the slower voice, as the Director does).
function voiceEngine(node) {
  const slot = node.inputs?.findIndex((input) => input.name === "voice_model") ?? -1;
  const link = slot >= 0 ? node.getInputLink?.(slot) ?? app.graph?.links?.[node.inputs[slot].link] : null;
  const loader = link ? nodeById(link.origin_id) : null;
  const checkpoint = loader?.widgets?.[0]?.value;
  if (typeof checkpoint !== "string") return null;
  return checkpoint.startsWith("preview") ? "espeak-ng" : "kokoro";
}

// The server's answer for a plan text: its problems, or [] when the route is missing (an older pack server).
async function serverProblems(node, text) {
  try {
    const response = await api.fetchApi("/cinereel/validate_plan", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ plan: text, voice_engine: voiceEngine(node) }),
    });
    if (!response.ok) return [];
    const body = await response.json();
    return (body.problems || []).map(asProblem);
  } catch {
    return [];
  }
}

function validate(node) {
  const s = state(node);
  if (!s.edit) {
    s.problems = [];
    return;
  }
  s.problems = checkPlan(s.edit);
  clearTimeout(s.serverTimer);
  const text = planText(s.edit);
  s.serverTimer = setTimeout(async () => {
    const found = await serverProblems(node, text);
    if (!s.edit || planText(s.edit) !== text) return;  // typed on meanwhile: a newer check is coming
    s.problems = mergeProblems(checkPlan(s.edit), found);
    showProblems(node);
  }, SERVER_CHECK_MS);
}

// Everything wrong with a Director's stored edits, checked now (client rules, then the server), for the queue.
async function problemsNow(node) {
  const text = editsWidget(node)?.value;
  if (!text || !String(text).trim()) return [];
  let plan;
  try {
    plan = parsePlan(text);
  } catch (error) {
    return [{ path: "plan", message: `plan_edits is not valid JSON: ${error.message}` }];
  }
  const local = plan?.shots ? checkPlan(plan) : [{ path: "plan", message: "plan_edits holds no shots" }];
  return mergeProblems(local, await serverProblems(node, String(text)));
}

function toast(summary, detail) {
  const manager = app.extensionManager?.toast;
  if (manager?.add) manager.add({ severity: "error", summary, detail, life: 12000 });
  else alert(`${summary}\n${detail}`);
}

// Every queue (Run button, shortcut, auto-queue) goes through app.queuePrompt: refuse while an edit is invalid.
function guardQueue() {
  const queue = app.queuePrompt.bind(app);
  app.queuePrompt = async function (...args) {
    const blocked = [];
    for (const node of nodes().filter((n) => n.comfyClass === "CineReelDirector" && n.mode === 0)) {
      const found = await problemsNow(node);
      if (!found.length) continue;
      const s = state(node);
      if (s.edit) {
        s.problems = found;
        showProblems(node);
      }
      blocked.push(`${node.title} #${node.id}: ${found.map((p) => `${p.path} ${p.message}`).join("; ")}`);
    }
    if (blocked.length) {
      toast("CineReel: the edited plan has problems, nothing was queued",
        `${blocked.join("\n")}\nFix the fields marked in red on the Director node, or press "reset to director".`);
      return false;
    }
    return queue(...args);
  };
}

// -- the plan on show -------------------------------------------------------------------------------

async function fetchPlan(runId) {
  const params = new URLSearchParams({ filename: "plan.json", subfolder: `cinereel/${runId}`, type: "output" });
  const response = await api.fetchApi(`/view?${params}`, { cache: "no-store" });
  if (!response.ok) throw new Error(`plan.json of run ${runId}: HTTP ${response.status}`);
  return parsePlan(await response.text());
}

function hideEditsWidget(node) {
  const widget = editsWidget(node);
  if (!widget) return;
  // The editor is its face; the value still saves and queues. Hidden widgets still get laid out (frontend 1.27):
  // no height either, so the node keeps the size the shipped workflows were measured at.
  widget.hidden = true;
  widget.computeSize = () => [0, -4];
}

function loadEdits(node) {
  const text = editsWidget(node)?.value;
  const s = state(node);
  if (!text || !String(text).trim()) {
    s.edit = null;
    return;
  }
  try {
    s.edit = parsePlan(text);
  } catch {
    s.edit = null;
    s.problems = [{ path: "plan", message: "plan_edits is not valid JSON: reset to director, or fix it" }];
    return;
  }
  validate(node);
}

app.registerExtension({
  name: "CineReel.shotEditor",
  async setup() {
    guardQueue();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "CineReelDirector") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const made = onNodeCreated?.apply(this, arguments);
      hideEditsWidget(this);
      return made;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const done = onConfigure?.apply(this, arguments);
      hideEditsWidget(this);
      loadEdits(this);
      if (state(this).edit) render(this);
      return done;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const runId = output?.cinereel_plan?.[0]?.run_id;
      if (!runId) return;
      fetchPlan(runId).then((plan) => {
        state(this).base = plan;
        state(this).resetPending = false;
        render(this);
      }).catch((error) => console.warn(`CineReel shot editor: ${error.message}`));
    };
  },
});
