// The plan as the shot editor holds it: parsing and writing plan JSON without losing a 63-bit seed, the
// schema's limits mirrored for checking as the user types (the server's POST /cinereel/validate_plan has the
// last word), and the small edits the editor makes (new seed, new shot id, default flow shift per type).
// No ComfyUI imports here: plain data and functions.

// Mirror of model_loaders/vocabulary/plan.py (tests/test_canvas.py checks it against the schema). Strict JSON.
export const MIRROR = {
  "camera_moves": ["static", "push_in", "pull_out", "pan_left", "pan_right", "tilt_up", "tilt_down"],
  "shot_types": ["hero", "broll", "establishing"],
  "default_flow_shift": {"hero": 5.0, "broll": 8.0, "establishing": 8.0},
  "max_shots": 24,
  "max_reel_seconds": 120.0,
  "shot": {
    "prompt": {"min_length": 1, "max_length": 2000},
    "camera_detail": {"max_length": 300},
    "narration": {"max_length": 1000},
    "duration_s": {"gt": 0, "le": 30},
    "flow_shift": {"ge": 1.0, "le": 8.0},
    "ref_weight": {"ge": 0.0, "le": 1.0},
    "seed": {"ge": 0, "le": "9223372036854775807"}
  },
  "character": {
    "name": {"min_length": 1, "max_length": 80},
    "description": {"min_length": 1, "max_length": 600},
    "wardrobe": {"min_items": 1, "max_items": 12}
  }
};

export const TYPE_LABELS = { hero: "hero", broll: "b-roll", establishing: "establishing" };
const SEED_MAX = BigInt(MIRROR.shot.seed.le);

// Seeds (and the plan's reel_seed) are up to 2**63-1: more than a JS number holds exactly. They live as decimal
// strings in the editor and go back into the JSON as bare integers, so an unedited seed is the number it was.
export function parsePlan(text) {
  const quoted = String(text).replace(/("(?:reel_)?seed"\s*:\s*)(-?\d+)/g, '$1"$2"');
  return JSON.parse(quoted);
}

export function planText(plan) {
  return JSON.stringify(plan).replace(/"((?:reel_)?seed)":"(-?\d+)"/g, '"$1":$2');
}

// An edit starts here: the reel's own seed (portraits, music) is pinned to what it is now, so giving the first
// shot a new seed or moving another shot first re-renders that shot, not every portrait and the music.
export function startEdit(plan) {
  const edit = clonePlan(plan);
  if (edit.reel_seed == null && edit.shots?.length) edit.reel_seed = String(edit.shots[0].seed);
  return edit;
}

export function clonePlan(plan) {
  return parsePlan(planText(plan));
}

export function newSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return ((BigInt(words[0] & 0x7fffffff) << 32n) | BigInt(words[1])).toString();
}

export function nextShotId(plan) {
  const taken = new Set(plan.shots.map((s) => s.id));
  for (let k = plan.shots.length + 1; ; k++) {
    const id = `shot-${String(k).padStart(2, "0")}`;
    if (!taken.has(id)) return id;
  }
}

export function reelSeconds(plan) {
  return plan.shots.reduce((total, s) => total + Number(s.duration_s || 0), 0);
}

// The plan's length follows its shots: the schema wants them to add up, and the editor changes shots.
export function syncDuration(plan) {
  plan.duration_s = Math.round(reelSeconds(plan) * 1e6) / 1e6;
}

// -- checking as the user types ---------------------------------------------------------------

function textProblem(value, rule) {
  const length = String(value ?? "").trim().length;
  if (rule.min_length && length < rule.min_length) return "is required";
  if (rule.max_length != null && length > rule.max_length) return `must have at most ${rule.max_length} characters, has ${length}`;
  return null;
}

function numberProblem(value, rule) {
  const n = typeof value === "number" ? value : Number(String(value).trim());
  if (value === "" || value == null || !Number.isFinite(n)) return "must be a number";
  if (rule.gt != null && !(n > rule.gt)) return `must be > ${rule.gt}, got ${n}`;
  if (rule.ge != null && n < rule.ge) return `must be >= ${rule.ge}, got ${n}`;
  if (rule.le != null && n > rule.le) return `must be <= ${rule.le}, got ${n}`;
  return null;
}

function seedProblem(value) {
  if (!/^\d+$/.test(String(value ?? "").trim())) return "must be a whole number from 0";
  return BigInt(String(value).trim()) > SEED_MAX ? `must be <= ${SEED_MAX}` : null;
}

const SHOT_CHECKS = {
  prompt: (v) => textProblem(v, MIRROR.shot.prompt),
  camera_detail: (v) => textProblem(v, MIRROR.shot.camera_detail),
  narration: (v) => textProblem(v, MIRROR.shot.narration),
  duration_s: (v) => numberProblem(v, MIRROR.shot.duration_s),
  flow_shift: (v) => numberProblem(v, MIRROR.shot.flow_shift),
  ref_weight: (v) => numberProblem(v, MIRROR.shot.ref_weight),
  seed: seedProblem,
  camera: (v) => (MIRROR.camera_moves.includes(v) ? null : `must be one of ${MIRROR.camera_moves.join(", ")}`),
  type: (v) => (MIRROR.shot_types.includes(v) ? null : `must be one of ${MIRROR.shot_types.join(", ")}`),
};

const CHARACTER_CHECKS = {
  name: (v) => textProblem(v, MIRROR.character.name),
  description: (v) => textProblem(v, MIRROR.character.description),
  wardrobe: (v) => {
    const items = Array.isArray(v) ? v.filter((w) => String(w).trim()) : [];
    const rule = MIRROR.character.wardrobe;
    if (items.length < rule.min_items) return "needs at least one item (comma-separated)";
    return items.length > rule.max_items ? `must have at most ${rule.max_items} items` : null;
  },
};

// Problems keyed by field path ("shots.2.flow_shift", the validate route's form); "plan" for the whole plan.
export function checkPlan(plan) {
  const problems = [];
  const add = (path, message) => problems.push({ path, message });
  plan.shots.forEach((shot, i) => {
    for (const [field, check] of Object.entries(SHOT_CHECKS)) {
      const message = check(shot[field]);
      if (message) add(`shots.${i}.${field}`, message);
    }
  });
  (plan.characters || []).forEach((character, i) => {
    for (const [field, check] of Object.entries(CHARACTER_CHECKS)) {
      const message = check(character[field]);
      if (message) add(`characters.${i}.${field}`, message);
    }
  });
  if (!plan.shots.length) add("shots", "a reel needs at least one shot");
  if (plan.shots.length > MIRROR.max_shots) add("shots", `at most ${MIRROR.max_shots} shots`);
  const total = reelSeconds(plan);
  if (total > MIRROR.max_reel_seconds) add("duration_s", `the shots add up to ${total} s, more than ${MIRROR.max_reel_seconds} s`);
  return problems;
}

// A server problem as {path, message}: the route's own form, or a "shots[2].flow_shift must ..." line.
export function asProblem(item) {
  if (item && typeof item === "object") return { path: String(item.path || "plan"), message: String(item.message ?? "") };
  const line = String(item);
  const match = line.match(/^([a-z_]+(?:\[\d+\]|\.[a-z_]+)*)\s+(.*)$/);
  if (!match) return { path: "plan", message: line };
  return { path: match[1].replace(/\[(\d+)\]/g, ".$1"), message: match[2] };
}
