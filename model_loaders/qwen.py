"""Qwen3.5-35B-A3B as the director and the critic: one checkpoint, two roles.

Registers the model family ``qwen3.5``. ``load_qwen(handle)`` loads
``Qwen/Qwen3.5-35B-A3B`` (or a local folder in that layout) with
``AutoProcessor`` and ``AutoModelForImageTextToText`` (or the class the
checkpoint's config declares), safetensors only, no remote code. The object
it returns serves both roles under one residency key:

- ``plan(request) -> {"plan", "warnings", "engine"}``: the director;
- ``critique(frames, portraits, prompt) -> critique``: the critic.

Output is schema-constrained with llguidance (a token mask per decoding step
from the JSON Schema), so it always parses, even from random weights. The
request-fixed fields are then set deterministically and the result is
validated; an invalid answer is re-asked once with the error.

The prompt building, generation schemas, post-processing and validation here
are plain Python shared with the OpenAI-compatible backend
(``openai_compat.py``). Importing this module imports neither torch nor
transformers: they are imported when a model loads.

Handle options (all optional):

==================== ========= ============================================================
option               default   meaning
==================== ========= ============================================================
director_prompt      built-in  path of a system prompt file for the director
critic_prompt        built-in  path of a system prompt file for the critic
max_new_tokens       4096      token budget of one plan (the critic uses critic_max_new_tokens)
critic_max_new_tokens 768      token budget of one critique
temperature          0.0       0 is greedy decoding (deterministic); > 0 samples
top_p                1.0       nucleus sampling, applied after the grammar mask
seed                 0         sampling seed (used when temperature > 0)
critic_frame_size    448       longest side, in pixels, frames and portraits are scaled to
critic_fps           2.0       frame rate the sampled frames are presented at (timestamps)
attn_implementation  None      passed to from_pretrained ("sdpa", "flash_attention_2"...)
revision             None      hub revision when the checkpoint is a hub id
==================== ========= ============================================================
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import model_layouts
from .errors import ModelUnavailable
from .handles import ModelHandle
from .residency import register_family

log = logging.getLogger("cinereel.qwen")

FAMILY = "qwen3.5"
ENGINE = "qwen3.5"
DEFAULT_CHECKPOINT = "Qwen/Qwen3.5-35B-A3B"
PROMPTS_DIR = Path(__file__).with_name("prompts")
DIRECTOR_PROMPT = PROMPTS_DIR / "director.txt"
CRITIC_PROMPT = PROMPTS_DIR / "critic.txt"

DEFAULT_MAX_NEW_TOKENS = 4096
DEFAULT_CRITIC_MAX_NEW_TOKENS = 768
DEFAULT_FRAME_SIZE = 448
DEFAULT_CRITIC_FPS = 2.0
MAX_PLAN_CHARACTERS = 4
# Tokens kept back at the end of the budget to close the JSON: the grammar then prefers tokens that
# end a string, array or object. A shot's required keys and shortest values take about 60 tokens.
PLAN_CLOSE_RESERVE = 96
SHOT_CLOSE_RESERVE = 64
CRITIQUE_CLOSE_RESERVE = 96

# Limits of the strings the model writes, tighter than the plan schema's (which are limits for any
# plan, also hand-edited ones): a bounded answer fits the token budget, and shorter prompts are
# what image and video models read anyway.
GENERATION_LIMITS: dict[str, int] = {
    "title": 80, "locale": 80, "mood": 30, "time_of_day": 30,
    "character.name": 60, "character.description": 300, "character.wardrobe": 80, "character.wardrobe_items": 6,
    "shot.prompt": 700, "shot.negative_prompt": 300, "shot.camera_detail": 160, "shot.narration": 500,
    "critique.notes": 400,
}
# The narration budget is the speaking rate of the voice that will speak each line (speaking_rates.py);
# an answer whose narration does not fit is sent back with the exact budget per shot, at most
# NARRATION_REASKS times, then shortened at a word boundary with a warning. While decoding, narration is
# also bounded to NARRATION_GUARD times the fastest characters a second in the rate table: a guard
# against runaway text from any model, loose enough never to cut a line that fits its budget.
NARRATION_REASKS = 2
NARRATION_GUARD = 1.25
# Top-level and per-shot plan fields the request fixes; the model does not write them.
REQUEST_FIXED_FIELDS = ("version", "sentence", "duration_s", "fps", "width", "height", "reel_seed")
PIPELINE_SHOT_FIELDS = ("id", "duration_s", "seed", "flow_shift", "ref_weight", "locked")


class DirectorError(ModelUnavailable):
    """The language-model director could not produce a valid plan."""


class CriticError(ModelUnavailable):
    """The language-model critic could not produce a valid critique."""


# =============================================================================
# Prompts (shared with the OpenAI-compatible backend)
# =============================================================================

def read_prompt(override: str | os.PathLike[str] | None, default: Path, what: str) -> str:
    """The system prompt: the user's file when ``override`` names one, else the built-in one."""
    path = Path(os.path.expanduser(str(override))) if override else default
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the {what} prompt file {str(path)!r}: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"the {what} prompt file {str(path)!r} is empty")
    return text


def director_request(request: dict[str, Any]):
    """``request`` as a validated ``DirectorRequest`` (the rule director's, so both directors take the same input)."""
    from .rules import DirectorRequest

    if not isinstance(request, dict):
        raise TypeError(f"the director request must be a dict, got {type(request).__name__}")
    known = set(DirectorRequest.__dataclass_fields__)
    unknown = sorted(set(request) - known)
    if unknown:
        raise ValueError(f"unknown director request field(s) {unknown}; known: {', '.join(sorted(known))}")
    req = DirectorRequest(**request)
    req.validate()
    return req


def director_user_message(req) -> str:
    """The user turn: the sentence and every number the plan must keep to."""
    from .rules import split_durations
    from .speaking_rates import narration_budget, speaking_rate, speech_window_s
    from .vocabulary.languages import LANGUAGES

    width, height = req.frame_size
    durations = split_durations(req.duration_s, req.shots, req.fps)
    override = req.language_override
    language_line = (f"Narration language: {override} ({LANGUAGES[override].name}), chosen by the user."
                     if override else "Narration language: choose it from the locale.")
    budget_language = override or "en-US"
    rate = speaking_rate(req.voice_engine, budget_language)
    pace = f"the voice speaks {rate.describe()}" if req.voice_engine else \
        f"the voice is not chosen yet, so the slower one's pace: {rate.describe()}"
    if not override:
        pace += "; the narration is checked against the pace of the language you choose"
    lines = [
        f"Sentence: {req.text}",
        f"Reel length: {req.duration_s:g} seconds in exactly {req.shots} shots, {width}x{height} at {req.fps} fps.",
        language_line,
        f"Shots (length; seconds the voice has; the most narration that fits: {pace}):",
    ]
    for i, duration in enumerate(durations):
        budget = narration_budget(duration, budget_language, req.voice_engine)
        lines.append(f"  {i + 1}. {duration:.2f} s; {speech_window_s(duration):.2f} s of speech; "
                     f"at most {budget} {rate.unit}")
    lines.append("Write the plan as one JSON object.")
    return "\n".join(lines)


def narration_reask(plan: dict[str, Any], overruns: Sequence[Any]) -> str:
    """The user turn that sends back an answer whose narration does not fit, with each shot's exact budget."""
    numbers = {shot["id"]: i + 1 for i, shot in enumerate(plan["shots"])}
    lines = [f"That plan's narration is too long for the voice that will speak it ({overruns[0].rate.describe()}). "
             "Answer again with the same plan as one JSON object, with the narration of these shots shortened "
             "to fit (say less, keep the same language):"]
    for o in overruns:
        lines.append(f"  shot {numbers[o.shot_id]} ({o.shot_id}): {o.length} {o.rate.unit}, about {o.needed_s:.1f} s "
                     f"of speech; the shot has {o.window_s:.2f} s: at most {o.budget} {o.rate.unit}")
    return "\n".join(lines)


Answer = tuple[str, dict[str, Any], list[str]]  # the model's text, the plan made from it, its warnings


def plan_answerer(req: Any, ask_valid: Callable[[list[dict[str, Any]], Callable[[str], dict[str, Any]]],
                                                dict[str, Any]]) -> Callable[[list[dict[str, Any]]], Answer]:
    """``answer(messages)`` for ``plan_that_fits``: the plan ``ask_valid(messages, accept)`` accepts, with the
    answer's text and the warnings its validation raised (both backends ask differently, accept alike)."""
    def answer(msgs: list[dict[str, Any]]) -> Answer:
        accepted: dict[str, Any] = {}

        def accept(text: str) -> dict[str, Any]:
            warnings: list[str] = []
            plan = plan_from_answer(text, req, warnings)
            accepted.update(text=text, warnings=warnings)
            return plan

        plan = ask_valid(msgs, accept)
        return accepted["text"], plan, accepted["warnings"]

    return answer


def plan_that_fits(answer: Callable[[list[dict[str, Any]]], Answer], messages: list[dict[str, Any]],
                   req) -> tuple[dict[str, Any], list[str]]:
    """The plan from ``answer(messages)``, asked again (at most NARRATION_REASKS times) while its narration
    does not fit the voice of ``req``; what still does not fit is shortened at a word boundary, with a warning."""
    from .speaking_rates import plan_overruns

    text, plan, warnings = answer(messages)
    for _ in range(NARRATION_REASKS):
        overruns = plan_overruns(plan, req.voice_engine)
        if not overruns:
            return plan, warnings
        log.warning("director narration too long, asking again: %s", "; ".join(o.describe() for o in overruns))
        messages = [*messages, {"role": "assistant", "content": text},
                    {"role": "user", "content": narration_reask(plan, overruns)}]
        text, plan, warnings = answer(messages)
    return shortened_to_fit(plan, req.voice_engine, warnings), warnings


def shortened_to_fit(plan: dict[str, Any], voice_engine: str | None, warnings: list[str]) -> dict[str, Any]:
    """``plan`` with every narration that does not fit cut to its budget at a word boundary; one warning each."""
    from .speaking_rates import plan_overruns, shorten

    cut = {o.shot_id: o for o in plan_overruns(plan, voice_engine)}
    shots = []
    for shot in plan["shots"]:
        o = cut.get(shot["id"])
        if o is not None:
            short = shorten(shot["narration"], o.budget, plan["language"])
            warnings.append(f"the director's narration for {o.shot_id} was still too long after {NARRATION_REASKS} "
                            f"requests to shorten it ({o.describe()}); it was cut at a word boundary to "
                            f"{short!r}")
            shot = {**shot, "narration": short}
        shots.append(shot)
    return {**plan, "shots": shots}


# =============================================================================
# Generation schemas
# =============================================================================

def _resolve_refs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                return walk(copy.deepcopy(defs[name]))
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _strip_annotations(node: Any) -> Any:
    """Drop keys that only annotate (titles, descriptions, defaults): they do not constrain decoding."""
    if isinstance(node, dict):
        return {k: ({name: _strip_annotations(sub) for name, sub in v.items()} if k == "properties"
                    else _strip_annotations(v))
                for k, v in node.items() if k not in ("title", "description", "default")}
    if isinstance(node, list):
        return [_strip_annotations(v) for v in node]
    return node


def narration_char_limit(req) -> int:
    """The decoding bound on any shot's narration characters: NARRATION_GUARD times the fastest characters a
    second in the rate table over the longest shot's voice window, at most ``GENERATION_LIMITS['shot.narration']``.
    A guard, not the budget (``plan_that_fits`` holds each shot to its voice's budget)."""
    from .rules import split_durations
    from .speaking_rates import fastest_characters_per_second, speech_window_s

    window = speech_window_s(max(split_durations(req.duration_s, req.shots, req.fps)))
    limit = math.floor(window * fastest_characters_per_second() * NARRATION_GUARD)
    return max(0, min(GENERATION_LIMITS["shot.narration"], limit))


def plan_generation_schema(shots: int, language: str | None = None,
                           narration_chars: int | None = None) -> dict[str, Any]:
    """The part of ``plan_json_schema()`` the model writes, for constrained decoding.

    Derived from the plan schema itself (so a new field or limit shows up here), then:

    - the fields the request fixes (``REQUEST_FIXED_FIELDS``) and the per-shot fields the
      pipeline computes (``PIPELINE_SHOT_FIELDS``: id, duration, seed, flow shift by shot type,
      reference weight) are removed: post-processing writes them, so they are always right;
    - ``$ref`` is inlined and annotations dropped;
    - ``shots`` has exactly ``shots`` items; ``characters`` at most ``MAX_PLAN_CHARACTERS``;
    - ``language`` is an enum of the known language codes (or the user's override alone): the
      plan schema checks it with a Python validator that JSON Schema cannot express;
    - every string the model writes gets a ``maxLength`` (``GENERATION_LIMITS``; narration
      ``narration_chars`` when given, see ``narration_char_limit``) and every field is required,
      so an answer is bounded and complete even from random weights.
    """
    from .vocabulary.languages import LANGUAGES
    from .vocabulary.plan import plan_json_schema

    schema = _strip_annotations(_resolve_refs(plan_json_schema()))
    props = schema["properties"]
    for name in REQUEST_FIXED_FIELDS:
        props.pop(name, None)
    props["language"] = {"enum": [language] if language else list(LANGUAGES)}
    for name in ("title", "locale", "mood", "time_of_day"):
        props[name] = {**props[name], "type": "string", "minLength": 1, "maxLength": GENERATION_LIMITS[name]}
    character = props["characters"]["items"]
    cprops = character["properties"]
    cprops["name"]["maxLength"] = GENERATION_LIMITS["character.name"]
    cprops["description"]["maxLength"] = GENERATION_LIMITS["character.description"]
    cprops["wardrobe"]["maxItems"] = GENERATION_LIMITS["character.wardrobe_items"]
    cprops["wardrobe"]["items"] = {"type": "string", "minLength": 1, "maxLength": GENERATION_LIMITS["character.wardrobe"]}
    character["required"] = list(cprops)
    character["additionalProperties"] = False
    props["characters"] = {"type": "array", "items": character, "maxItems": MAX_PLAN_CHARACTERS}
    shot = props["shots"]["items"]
    sprops = shot["properties"]
    for name in PIPELINE_SHOT_FIELDS:
        sprops.pop(name, None)
    for name in ("prompt", "negative_prompt", "camera_detail", "narration"):
        sprops[name] = {"type": "string", "maxLength": GENERATION_LIMITS[f"shot.{name}"],
                        **({"minLength": 1} if name == "prompt" else {})}
    if narration_chars is not None:
        sprops["narration"]["maxLength"] = min(narration_chars, GENERATION_LIMITS["shot.narration"])
    sprops["characters"] = {"type": "array", "maxItems": MAX_PLAN_CHARACTERS,
                            "items": {"type": "string", "pattern": cprops["id"]["pattern"]}}
    shot["required"] = list(sprops)
    shot["additionalProperties"] = False
    props["shots"] = {"type": "array", "items": shot, "minItems": shots, "maxItems": shots}
    schema["required"] = list(props)
    schema["additionalProperties"] = False
    return schema


def critique_generation_schema() -> dict[str, Any]:
    """``critique_json_schema()`` closed (no extra keys) with ``notes`` required and bounded."""
    from .vocabulary.critique import critique_json_schema

    schema = copy.deepcopy(critique_json_schema())
    schema["properties"]["notes"] = {"type": "string", "maxLength": GENERATION_LIMITS["critique.notes"]}
    schema["required"] = ["scores", "label", "notes"]
    schema["additionalProperties"] = False
    return schema


# =============================================================================
# Post-processing and validation (shared with the OpenAI-compatible backend)
# =============================================================================

def _unique_id(base: str, used: set[str], fallback: str) -> str:
    from .rules import slug

    candidate = slug(base) or fallback
    if candidate not in used:
        return candidate
    for n in range(2, 100):
        alt = f"{candidate[:36]}-{n}"
        if alt not in used:
            return alt
    raise DirectorError(f"cannot make a unique id from {base!r}")


def finish_plan(draft: Any, req, warnings: list[str]) -> dict[str, Any]:
    """The plan dict from the model's ``draft``: request-fixed fields set, ids, durations and seeds
    written by the same rules as the rule director, shot character references checked.

    Deterministic; does not validate (``validate_plan`` does).
    """
    from .rules import shot_seed, split_durations

    if not isinstance(draft, dict):
        raise ValueError(f"the answer must be a JSON object, got {type(draft).__name__}")
    shots = draft.get("shots")
    if not isinstance(shots, list) or not shots:
        raise ValueError("shots must be a non-empty list")
    if len(shots) != req.shots:
        warnings.append(f"the model wrote {len(shots)} shots for {req.shots} requested; "
                        f"{'the extra ones were dropped' if len(shots) > req.shots else 'the last one was repeated'}")
        shots = (shots + [shots[-1]] * req.shots)[: req.shots]
    width, height = req.frame_size
    durations = split_durations(req.duration_s, req.shots, req.fps)

    characters, renamed, used = [], {}, set()
    for i, character in enumerate(draft.get("characters") or []):
        if not isinstance(character, dict):
            raise ValueError(f"characters[{i}] must be an object")
        original = str(character.get("id", ""))
        new_id = _unique_id(original or str(character.get("name", "")), used, f"character-{i + 1}")
        used.add(new_id)
        renamed.setdefault(original, new_id)
        characters.append({**character, "id": new_id})

    plan_shots = []
    for i, shot in enumerate(shots):
        if not isinstance(shot, dict):
            raise ValueError(f"shots[{i}] must be an object")
        kind = shot.get("type")
        in_frame = []
        for ref in shot.get("characters") or []:
            cid = renamed.get(ref, ref)
            if cid in used and cid not in in_frame:
                in_frame.append(cid)
            elif cid not in used:
                warnings.append(f"shots[{i}] named character {ref!r}, which the plan does not define; dropped")
        extra = {k: shot[k] for k in shot if k not in ("characters",) + PIPELINE_SHOT_FIELDS}
        plan_shots.append({
            **extra,
            "id": f"shot-{i + 1:02d}",
            "duration_s": durations[i],
            "characters": in_frame,
            "seed": shot_seed(req.seed, i),
            "flow_shift": req.flow_shift_for(kind),
            "ref_weight": req.ref_weight,
        })
    plan = {k: v for k, v in draft.items() if k not in REQUEST_FIXED_FIELDS + ("characters", "shots")}
    if req.language_override:
        if plan.get("language") not in (None, req.language_override):
            warnings.append(f"the model chose language {plan.get('language')!r}; the user's "
                            f"{req.language_override!r} is kept")
        plan["language"] = req.language_override
    plan.update({
        "sentence": req.text,
        "duration_s": float(req.duration_s),
        "fps": req.fps,
        "width": width,
        "height": height,
        "characters": characters,
        "shots": plan_shots,
    })
    return plan


def parse_json_answer(text: str) -> Any:
    """The JSON value in a model's answer (a fenced block or surrounding prose is tolerated)."""
    text = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            return json.loads(text[start:end + 1])
        raise


def plan_from_answer(text: str, req, warnings: list[str]) -> dict[str, Any]:
    """Parse, finish and validate one answer; raise ValueError naming what is wrong."""
    from .vocabulary.plan import validate_plan

    try:
        draft = parse_json_answer(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at character {exc.pos})") from None
    return validate_plan(finish_plan(draft, req, warnings)).model_dump(mode="json")


def critique_from_answer(text: str) -> dict[str, Any]:
    from .vocabulary.critique import validate_critique

    try:
        data = parse_json_answer(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at character {exc.pos})") from None
    return validate_critique(data)


def with_one_reask(ask: Callable[[list[dict[str, Any]]], str], messages: list[dict[str, Any]],
                   accept: Callable[[str], Any], error: type[Exception], what: str) -> Any:
    """``accept(ask(messages))``; on a ValueError, ask once more with the error, then raise ``error``."""
    answer = ask(messages)
    try:
        return accept(answer)
    except ValueError as first:
        log.warning("%s answer rejected, asking again: %s", what, first)
        retry = [*messages, {"role": "assistant", "content": answer},
                 {"role": "user", "content": f"That answer was rejected: {first}. Answer again with one corrected "
                                             "JSON object that follows the schema."}]
        answer = ask(retry)
        try:
            return accept(answer)
        except ValueError as second:
            raise error(f"the {what} answered twice with an unusable {what.split()[-1]} output: first {first}; "
                        f"then {second}") from None


# =============================================================================
# Images (plain numpy in, PIL out)
# =============================================================================

def to_pil(image: Any, max_side: int) -> Any:
    """A PIL RGB image from an (H, W, 3) uint8 / float array or a PIL image, scaled so its longest side <= max_side."""
    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"an image must be (H, W, 3), got shape {array.shape}")
        if array.dtype != np.uint8:
            array = (np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        image = Image.fromarray(array[..., :3])
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(32, round(image.width * scale)), max(32, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    if min(image.size) < 32:  # the vision tower needs at least one 2x2 group of 16 px patches
        image = image.resize((max(32, image.width), max(32, image.height)), Image.Resampling.BICUBIC)
    return image


def check_frames(frames: Any) -> Any:
    import numpy as np

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got shape {frames.shape}")
    return frames


def critic_user_text(prompt: str, portraits: int, frames: int) -> tuple[str, str, str]:
    """The text around the portraits and the clip in the critic's user turn."""
    who = (f"Reference portrait{'s' if portraits > 1 else ''} of the character{'s' if portraits > 1 else ''} "
           "who should appear:" if portraits else "No character should appear in this shot.")
    still = frames == 1  # the keyframe gate: one still, judged before the clip is animated from it
    what = "The shot's keyframe, a still image the clip will be animated from:" if still else \
        f"The clip, {frames} frames sampled in order:"
    shot = f"Shot prompt: {prompt.strip() or '(none)'}\n{what}"
    ask = ("Score the keyframe as a still (motion_coherence: bodies and objects are physically plausible) and "
           "answer with the JSON object." if still else "Score the clip and answer with the JSON object.")
    return who, shot, ask


# =============================================================================
# Constrained decoding with llguidance
# =============================================================================

def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


class _GrammarMask:
    """A transformers ``LogitsProcessor``: llguidance's token mask for the JSON Schema at every step.

    Masked tokens get -inf, so greedy decoding and sampling alike can only write text the schema
    accepts; when the grammar is complete only EOS is allowed, which ends generation. When the
    budget runs low (``close_after`` tokens written) it prefers, among the allowed tokens, those
    that close a string, array or object, so the answer completes before ``max_new_tokens``.
    Top-p, when asked, is applied here after masking (transformers' own warpers run before
    custom processors and could keep only masked tokens).
    """

    def __init__(self, matcher: Any, prompt_len: int, vocab: int, closers: Any, close_after: int, top_p: float):
        self.matcher = matcher
        self.prompt_len = prompt_len
        self.vocab = vocab
        self.closers = closers
        self.close_after = close_after
        self.top_p = top_p
        self.consumed = 0

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch

        written = input_ids.shape[1] - self.prompt_len
        if written > self.consumed:
            token = int(input_ids[0, -1])
            if not self.matcher.consume_token(token):
                raise RuntimeError(f"constrained decoding: token {token} was refused: {self.matcher.get_error()}")
            self.consumed = written
        if self.matcher.is_error():
            raise RuntimeError(f"constrained decoding failed: {self.matcher.get_error()}")
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: self.vocab].astype(bool)
        if written >= self.close_after:
            closing = allowed & self.closers[: len(allowed)]
            if closing.any():
                allowed = closing
        mask = torch.from_numpy(np.concatenate([~allowed, np.ones(max(0, scores.shape[-1] - len(allowed)), bool)]))
        scores = scores.masked_fill(mask.to(scores.device)[: scores.shape[-1]].unsqueeze(0), float("-inf"))
        if self.top_p < 1.0:
            ordered, index = torch.sort(scores, descending=True, dim=-1)
            cumulative = ordered.float().softmax(-1).cumsum(-1)
            drop = cumulative - ordered.float().softmax(-1) > self.top_p
            scores = scores.scatter(-1, index, ordered.masked_fill(drop, float("-inf")))
        return scores


# =============================================================================
# The model
# =============================================================================

class QwenDirectorCritic:
    """Qwen3.5 serving both roles: ``plan`` (director) and ``critique`` (critic). Plain data in and out."""

    engine = ENGINE

    def __init__(self, model: Any, processor: Any, handle: ModelHandle, folder: Path):
        self.model = model
        self.processor = processor
        self.handle = handle
        self.folder = folder
        self._ll_tokenizer = None
        self._closers = None

    # -- director -----------------------------------------------------------
    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        req = director_request(request)
        system = read_prompt(self.handle.option("director_prompt"), DIRECTOR_PROMPT, "director")
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": director_user_message(req)}]
        schema = plan_generation_schema(req.shots, req.language_override, narration_char_limit(req))
        budget = int(self.handle.option("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))

        def ask(msgs: list[dict[str, Any]]) -> str:
            return self._generate(msgs, schema, budget, images=None, video=None,
                                  reserve=PLAN_CLOSE_RESERVE + SHOT_CLOSE_RESERVE * req.shots)

        answer = plan_answerer(req, lambda msgs, accept: with_one_reask(ask, msgs, accept, DirectorError,
                                                                          "qwen3.5 director plan"))
        plan, warnings = plan_that_fits(answer, messages, req)
        return {"plan": plan, "warnings": warnings, "engine": self.engine}

    # -- critic -------------------------------------------------------------
    def critique(self, frames: Any, portraits: Sequence[Any], prompt: str) -> dict[str, Any]:
        frames = check_frames(frames)
        size = int(self.handle.option("critic_frame_size", DEFAULT_FRAME_SIZE))
        clip = [to_pil(frame, size) for frame in frames]
        first = clip[0].size
        clip = [frame if frame.size == first else frame.resize(first) for frame in clip]
        if len(clip) < 2:  # the vision tower groups frames in pairs
            clip = clip * 2
        refs = [to_pil(p, size) for p in portraits or []]
        who, shot, ask_text = critic_user_text(str(prompt or ""), len(refs), len(frames))
        content: list[dict[str, Any]] = [{"type": "text", "text": who}]
        content += [{"type": "image"} for _ in refs]
        content += [{"type": "text", "text": shot}, {"type": "video"}, {"type": "text", "text": ask_text}]
        system = read_prompt(self.handle.option("critic_prompt"), CRITIC_PROMPT, "critic")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        schema = critique_generation_schema()
        budget = int(self.handle.option("critic_max_new_tokens", DEFAULT_CRITIC_MAX_NEW_TOKENS))

        def ask(msgs: list[dict[str, Any]]) -> str:
            return self._generate(msgs, schema, budget, images=refs or None, video=clip,
                                  reserve=CRITIQUE_CLOSE_RESERVE)

        return with_one_reask(ask, messages, critique_from_answer, CriticError, "qwen3.5 critic critique")

    # -- generation ---------------------------------------------------------
    def _llg_tokenizer(self):
        if self._ll_tokenizer is None:
            import numpy as np
            from llguidance import LLTokenizer

            tokenizer = self.processor.tokenizer
            backend = getattr(tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise RuntimeError(f"constrained decoding needs a fast (tokenizers) tokenizer; "
                                   f"{type(tokenizer).__name__} is not one")
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            self._ll_tokenizer = LLTokenizer(backend.to_str(), n_vocab=vocab, eos_token=self._eos_ids()[0])
            closers = np.zeros(vocab, dtype=bool)
            for token_id in range(min(vocab, len(tokenizer))):
                text = tokenizer.decode([token_id])
                closers[token_id] = any(c in text for c in '"]}')
            self._closers = closers
        return self._ll_tokenizer

    def _eos_ids(self) -> list[int]:
        tokenizer = self.processor.tokenizer
        ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
            ids.append(tokenizer.eos_token_id)
        return [i for i in ids if isinstance(i, int) and i >= 0]

    def _generate(self, messages: list[dict[str, Any]], schema: dict[str, Any], max_new_tokens: int,
                  images: list[Any] | None, video: list[Any] | None, reserve: int) -> str:
        """One constrained answer. ``reserve``: tokens kept back for closing the JSON (see ``_GrammarMask``)."""
        import torch
        from llguidance import LLMatcher
        from transformers import GenerationConfig, LogitsProcessorList

        processor = self.processor
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             enable_thinking=False)
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if video is not None:
            from transformers.video_utils import VideoMetadata

            fps = float(self.handle.option("critic_fps", DEFAULT_CRITIC_FPS))
            kwargs["videos"] = [video]
            kwargs["video_metadata"] = [VideoMetadata(total_num_frames=len(video), fps=fps,
                                                      frames_indices=list(range(len(video))))]
            kwargs["do_sample_frames"] = False  # the caller sampled them
            if hasattr(processor.video_processor, "cap_pixels_per_frame"):
                kwargs["cap_pixels_per_frame"] = True  # the reference (qwen-vl-utils) per-frame pixel cap
        inputs = processor(**kwargs).to(self.model.device)
        inputs.pop("token_type_ids", None)

        tokenizer = self._llg_tokenizer()
        grammar = LLMatcher.grammar_from_json_schema(schema, overrides={"whitespace_flexible": False})
        matcher = LLMatcher(tokenizer, grammar, log_level=1)
        if matcher.is_error():
            raise RuntimeError(f"the generation schema does not compile: {matcher.get_error()}")
        prompt_len = int(inputs["input_ids"].shape[1])
        temperature = float(self.handle.option("temperature", 0.0))
        reserve = min(max_new_tokens // 2, reserve)
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        mask = _GrammarMask(matcher, prompt_len, vocab, self._closers, max_new_tokens - reserve,
                            float(self.handle.option("top_p", 1.0)) if temperature > 0 else 1.0)
        eos = self._eos_ids()
        # Every sampling knob explicit: a None would be filled from the checkpoint's generation_config.json
        # (Qwen's top_k=20, top_p=0.8), and those warpers run before the grammar mask.
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                  temperature=temperature if temperature > 0 else 1.0, top_k=0, top_p=1.0, min_p=None,
                                  repetition_penalty=1.0, num_beams=1,
                                  eos_token_id=eos, pad_token_id=processor.tokenizer.pad_token_id or eos[0])
        if temperature > 0:
            torch.manual_seed(int(self.handle.option("seed", 0)))
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList([mask]))
        new_tokens = output[0, prompt_len:].tolist()
        while new_tokens and new_tokens[-1] in eos:
            new_tokens.pop()
        answer = processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        if not matcher.is_accepting():
            log.warning("the constrained answer did not complete within %d tokens", max_new_tokens)
        return answer


# =============================================================================
# Loading
# =============================================================================

def resolve_checkpoint(handle: ModelHandle) -> Path:
    """The complete checkpoint folder of ``handle``: a local folder, or a hub id in the hub cache (downloaded
    only when the loader's allow_download is on)."""
    return model_layouts.resolve(FAMILY, handle.checkpoint or DEFAULT_CHECKPOINT,
                                 bool(handle.option("allow_download", False)), handle.option("revision"))


def validate_checkpoint(folder: Path) -> dict[str, Any]:
    """Check ``folder`` holds a loadable Qwen3.5 checkpoint before any weight is read; return its config.

    Raises FileNotFoundError naming every missing file and the folder it looked in.
    """
    model_layouts.check_folder(FAMILY, folder)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from None
    if "vision_config" not in config:
        raise ValueError(f"{config_path} has no vision_config: the critic role needs a vision-language checkpoint "
                         f"(model_type {config.get('model_type')!r})")
    return config


def _model_class(config: dict[str, Any]):
    import transformers

    for name in config.get("architectures") or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModelForImageTextToText


def _device_map(device: str):
    import torch

    if device == "auto":
        return "auto" if torch.cuda.is_available() else {"": "cpu"}
    return {"": device}


def load_qwen(handle: ModelHandle) -> QwenDirectorCritic:
    """Load the Qwen3.5 director/critic named by ``handle`` (validated first; safetensors only, no remote code)."""
    folder = resolve_checkpoint(handle)
    config = validate_checkpoint(folder)
    from transformers import AutoProcessor

    cls = _model_class(config)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(handle.dtype), "device_map": _device_map(handle.device),
                              "use_safetensors": True, "trust_remote_code": False, "local_files_only": True}
    if handle.option("attn_implementation"):
        kwargs["attn_implementation"] = handle.option("attn_implementation")
    model = cls.from_pretrained(folder, **kwargs).eval()
    log.info("loaded %s (%s) from %s as %s on %s", handle.checkpoint, cls.__name__, folder, handle.dtype,
             model.device)
    return QwenDirectorCritic(model, processor, handle, folder)


def unload_qwen(model: QwenDirectorCritic) -> None:
    """Drop the weights so the residency manager's collection frees them."""
    model.model = None
    model.processor = None
    model._ll_tokenizer = None
    model._closers = None


register_family(FAMILY, load_qwen, unload_qwen)
