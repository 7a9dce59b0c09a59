"""One settings file for a headless run: ``cinereel --config cinereel.toml "sentence"``.

Every command-line option and every loader option has a key, grouped per stage (``[pipeline]``, ``[llm]``,
``[keyframes]``, ``[motion]``, ``[voice]``, ``[music]``, ``[gate]``, ``[mix]``). Four layers, the later
winning: the defaults, the file, ``CINEREEL_<SECTION>_<KEY>`` environment variables (for deployments), the
command line's flags. ``resolve()`` returns every effective value with the layer it came from; the CLI, and
later ``cinereel batch`` or a Ray runner, build their runs from that one object (``Resolved.namespace``),
and ``report.json`` records it (``Resolved.report``).

The reference pipeline's template (a ``pipeline`` / ``models`` / ``optimization`` / ``memory_management``
YAML file) is read as it is: each of its keys that maps onto a CineReel setting is translated through
``REFERENCE_KEYS``; keys that do not apply here (another vendor's hardware flags, switches CineReel always
has on) are reported once as ignored, with the reason; any other key is an error naming the nearest known
key. Files are TOML (the standard library's ``tomllib``; the ``tomli`` backport on Python 3.10) or YAML
when PyYAML is installed. Relative paths in a file are relative to that file.

Values are checked for their type here and against their ranges by the preflight rules (``preflight.py``,
``option_problem``, ``DirectorRequest.validate``), all before any model loads.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...model_loaders.rules import REF_WEIGHT
from ...model_loaders.vocabulary.frames import ASPECTS, RESOLUTIONS, frame_size
from ...model_loaders.vocabulary.plan import DEFAULT_FLOW_SHIFT, MAX_FLOW_SHIFT
from .backends import STAGES, option_problem
from .preflight import PreflightError

ENV_PREFIX = "CINEREEL_"
CONFIG_ENV = "CINEREEL_CONFIG"  # the settings file, when --config is not given
DEFAULT_FILE = "cinereel.toml"
SOURCES = ("default", "file", "environment", "flag")


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    help: str
    kind: Any  # "float", "int", "bool", "str", "path", a tuple of choices, or a loader option's declaration
    dest: str = ""  # the argparse destination; "" for a loader option (handles_from_args reads those)
    flag: str = ""  # the command-line spelling, for show and for messages
    optional: bool = False  # "" in a file means "not set" (None on the command line)

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section}_{self.key}".upper()

    @property
    def loader_option(self) -> bool:
        return not self.dest


STAGE_TITLES = {"llm": "director and critic (one checkpoint, two roles)", "keyframes": "keyframe model",
                "motion": "motion model", "voice": "narration voice", "music": "music model"}
SECTION_NOTES = {
    "pipeline": "The run: length, frame, language, seed, output folder, precision and device.",
    "llm": "Director and critic: one checkpoint in two roles. checkpoint: preview, a hub id, a folder, or "
           "openai (an OpenAI-compatible server at base_url).",
    "keyframes": "Keyframes: FLUX.2 klein with a master portrait per character.",
    "motion": "Motion: Wan2.2 I2V (two experts), BF16 (pipeline.dtype); FP8 compute is refused for it.",
    "voice": "Narration: Kokoro, or eSpeak NG for the languages Kokoro lacks (preview: eSpeak NG).",
    "music": "Music: ACE-Step 1.5 turbo; it follows the plan's mood.",
    "gate": "Critic gate: score every clip, re-render failures with a fix for their label.",
    "mix": "Mix & master: music ducked under speech, then normalised.",
}


def _run_settings() -> list[Setting]:
    p = "pipeline"
    return [
        Setting(p, "duration", 30.0, "reel length in seconds", "float", "duration", "--duration"),
        Setting(p, "shots", 6, "number of shots", "int", "shots", "--shots"),
        Setting(p, "aspect", "16:9", "16:9 is 1280x720, 9:16 is 720x1280 (at 720p)", tuple(ASPECTS), "aspect",
                "--aspect"),
        Setting(p, "resolution", "720p", "720p (1280x720) or 480p (832x480, drafts)", tuple(RESOLUTIONS),
                "resolution", "--resolution"),
        Setting(p, "language", None, "narration language code; \"\" = from the place in the sentence", "str",
                "language", "--language", optional=True),
        Setting(p, "seed", 0, "seed for the plan and every render", "int", "seed", "--seed"),
        Setting(p, "out", "output", "output folder (relative to this file); runs go to <out>/cinereel/<run id>/",
                "path", "out", "--out"),
        Setting(p, "run_id", None, "run folder name; \"\" = derived from the inputs (same inputs resume)", "str",
                "run_id", "--run-id", optional=True),
        Setting(p, "plan", None, "a plan JSON file to render instead of the director's (relative to this file)",
                "path", "plan", "--plan", optional=True),
        Setting(p, "plan_only", False, "write and print the plan, render nothing", "bool", "plan_only",
                "--plan-only"),
        Setting(p, "wait", False, "wait for another process working on the same run folder", "bool", "wait",
                "--wait"),
        Setting(p, "json", False, "print a JSON summary instead of the reel's path", "bool", "json", "--json"),
        Setting(p, "keep", "all", "what stays once the reel is made: all, best or final",
                ("all", "best", "final"), "keep", "--keep"),
        Setting(p, "allow_download", False, "let every loader download a missing hub checkpoint (tens of GB)",
                "bool", "allow_download", "--allow-download"),
        Setting(p, "dtype", "bfloat16", "weight precision of the real models (BF16: the tested setting, and the "
                "motion model's)", ("bfloat16", "float16", "float32"), "dtype", "--dtype"),
        Setting(p, "device", "auto", "auto (CUDA when present), cuda, cpu or mps", "str", "device", "--device"),
        Setting(p, "benchmark", False, "make the reel in a temporary folder and print each stage's share", "bool",
                "benchmark", "--benchmark"),
        Setting(p, "benchmark_rounds", None, "with benchmark: measured rounds; \"\" = 3 when no backend holds "
                "weights, else 1", "int", "benchmark_rounds", "--benchmark-rounds", optional=True),
        Setting(p, "benchmark_warmup", None, "with benchmark: uncounted rounds first; \"\" = 1 when no backend "
                "holds weights, else 0", "int", "benchmark_warmup", "--benchmark-warmup", optional=True),
    ]


def _stage_settings(stage: str) -> list[Setting]:
    extra = {"llm": " or openai"}.get(stage, "")
    found = [
        Setting(stage, "checkpoint", "preview", f"preview, a hub id or a checkpoint folder{extra}", "str", stage,
                f"--{stage}"),
        Setting(stage, "residency", "auto", "auto, in_process or subprocess (a worker process killed on "
                "eviction; auto: the Qwen director runs so)", ("auto", "in_process", "subprocess")),
        Setting(stage, "unload_comfy_models", True, "ComfyUI only: unload ComfyUI's own models first", "bool"),
    ]
    found += [Setting(stage, name, declaration[1].get("default"), declaration[1]["tooltip"], declaration)
              for name, declaration in STAGES[stage].options]
    if stage == "keyframes":
        found.append(Setting(stage, "ref_weight", REF_WEIGHT, "reference strength every shot starts with "
                             "(0: unreferenced; CHARACTER_DRIFT raises it per shot)", "float", "ref_weight",
                             "--ref-weight"))
    if stage == "motion":
        found += [
            Setting(stage, "flow_shift_hero", DEFAULT_FLOW_SHIFT["hero"], "flow shift of hero shots "
                    f"(never above {MAX_FLOW_SHIFT:g}: the cap; 12 gave plastic skin)", "float", "flow_shift_hero",
                    "--flow-shift-hero"),
            Setting(stage, "flow_shift_broll", DEFAULT_FLOW_SHIFT["broll"], "flow shift of b-roll and "
                    f"establishing shots (at most {MAX_FLOW_SHIFT:g})", "float", "flow_shift_broll",
                    "--flow-shift-broll"),
        ]
    return found


def _settings() -> list[Setting]:
    found = _run_settings()
    for stage in STAGES:
        found += _stage_settings(stage)
    g = "gate"
    found += [
        Setting(g, "enabled", False, "run the critic gate after the motion stage", "bool", "gate", "--gate"),
        Setting(g, "threshold", 7.0, "a clip passes when the mean of its four scores (1-10) reaches this",
                "float", "threshold", "--threshold"),
        Setting(g, "max_retries", 3, "re-renders allowed per shot after the first attempt", "int", "max_retries",
                "--max-retries"),
        Setting(g, "technical_check", True, "fail black, blank, still or flickering clips before the critic",
                "bool", "technical_check", "--no-technical-check"),
        Setting(g, "keyframe_gate", None, "the critic judges every keyframe before motion and redraws image "
                "failures (same threshold and retries); \"\" = on with the gate and a real critic, off with the "
                "preview critic", "bool", "keyframe_gate", "--keyframe-gate", optional=True),
        Setting("mix", "target_lufs", -18.0, "integrated loudness of the master (-14 social, -23 EBU R128)",
                "float", "target_lufs", "--target-lufs"),
    ]
    return found


_SETTINGS: dict[str, Setting] | None = None


def settings() -> dict[str, Setting]:
    """Every setting by ``section.key``, in template order."""
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = {s.name: s for s in _settings()}
    return _SETTINGS


def sections() -> list[str]:
    return list(dict.fromkeys(s.section for s in settings().values()))


# -- the reference pipeline's keys ------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """How one key of the reference pipeline's template becomes CineReel settings: ``convert(value)`` returns
    ``{setting name: value}``, or raises ValueError; ``ignored`` (a reason) when it does not apply here."""

    convert: Callable[[Any], dict[str, Any]] | None = None
    ignored: str = ""


def _to(name: str, transform: Callable[[Any], Any] = lambda v: v) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: transform(value)}


PRECISIONS = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
              "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}


def _precision(value: Any) -> str:
    name = str(value).strip().lower().replace("torch.", "")
    if name in PRECISIONS:
        return PRECISIONS[name]
    if "fp8" in name or "float8" in name:
        raise ValueError(f"precision {value!r}: FP8 compute is refused (the I2V motion model segfaulted in "
                         "cross-attention); keep bf16, and use keyframes.fp8_storage for FP8 weight storage")
    raise ValueError(f"precision {value!r} is not one of bf16, fp16, fp32")


def _resolution(value: Any) -> dict[str, Any]:
    """``1280x720``, ``[1280, 720]``, ``{width: 1280, height: 720}`` or ``720p`` as resolution and aspect."""
    if isinstance(value, str) and value in RESOLUTIONS:
        return {"pipeline.resolution": value}
    if isinstance(value, Mapping):
        size = (value.get("width"), value.get("height"))
    elif isinstance(value, (list, tuple)):
        size = tuple(value)
    else:
        size = tuple(re.split(r"\s*[x×,]\s*", str(value).strip().lower()))
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        width = height = -1
    for resolution in RESOLUTIONS:
        for aspect in ASPECTS:
            if frame_size(aspect, resolution) == (width, height):
                return {"pipeline.resolution": resolution, "pipeline.aspect": aspect}
    sizes = ", ".join(f"{w}x{h}" for w, h in (frame_size(a, r) for r in RESOLUTIONS for a in ASPECTS))
    raise ValueError(f"output_resolution {value!r} is not a size CineReel renders ({sizes}; Wan2.2's trained sizes)")


def _subprocess(value: Any) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return {"llm.residency": "subprocess" if value else "in_process"}


def _compile_target(value: Any) -> dict[str, Any]:
    if value in (None, False, "", "none", "off"):
        return {"motion.compile_transformer_2": False}
    if value in ("transformer_2", "low_noise", "transformer_2_only"):
        return {"motion.compile_transformer_2": True}
    raise ValueError(f"compile_target {value!r}: only transformer_2 (the low-noise expert) can be compiled; a "
                     "full-graph compile of both experts breaks Dynamo tracing")


def _fbcache(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):  # {enabled: true, threshold: 0.05}
        if not value.get("enabled", True):
            return {"motion.first_block_cache": 0.0}
        value = value.get("threshold", value.get("residual_diff_threshold", 0.05))
    if isinstance(value, bool):
        return {"motion.first_block_cache": 0.05 if value else 0.0}
    return {"motion.first_block_cache": value}


ALWAYS_ON = ("CineReel always does this: the residency manager drops every reference, runs gc.collect() and "
             "torch.cuda.empty_cache() on every eviction")
HARDWARE = ("another vendor's hardware setting (ROCm/AMD); CineReel uses the GPU that PyTorch's build provides: "
            "set such variables in the environment of a ROCm build instead")
CHECKPOINT_KEYS = ("model_id", "checkpoint", "model", "path", "model_path")
MODEL_BLOCKS = {"director": "llm", "critic": "llm", "keyframe": "keyframes", "keyframes": "keyframes",
                "motion": "motion", "video": "motion", "music": "music", "voice": "voice", "tts": "voice"}

# The reference template's keys by their full path (``block.key`` or ``models.<model>.key``).
REFERENCE_KEYS: dict[str, Reference] = {
    "pipeline.device": Reference(_to("pipeline.device")),
    "pipeline.precision": Reference(_to("pipeline.dtype", _precision)),
    "pipeline.output_resolution": Reference(_resolution),
    "models.director.subprocess": Reference(_subprocess),
    "models.critic.subprocess": Reference(_subprocess),
    "models.motion.precision": Reference(_to("pipeline.dtype", _precision)),
    "models.music.mood_mapping": Reference(ignored="recognised, not applied: CineReel's music stage turns the "
                                           "plan's mood into its prompt itself; a custom mood table is not a "
                                           "setting yet"),
    "models.voice.languages": Reference(ignored="CineReel takes the language from the place in the sentence "
                                        "(or pipeline.language); Kokoro's nine languages are fixed and the others "
                                        "fall back to eSpeak NG with a warning"),
    "optimization.magcache": Reference(ignored="MagCache's calibration never triggers on two-expert schedules; "
                                       "CineReel uses the first-block cache (paraattention_fbcache)"),
    "optimization.channels_last": Reference(ignored="never on rank-5 video tensors"),
    "optimization.torch_compile": Reference(ignored="the compile target decides (models.motion.compile_target)"),
    "memory_management.gc_collect": Reference(ignored=ALWAYS_ON),
    "memory_management.gc": Reference(ignored=ALWAYS_ON),
    "memory_management.empty_cache": Reference(ignored=ALWAYS_ON),
    "memory_management.empty_cuda_cache": Reference(ignored=ALWAYS_ON),
    "memory_management.subprocess_isolation": Reference(_subprocess),
}
for _model, _stage in MODEL_BLOCKS.items():
    for _key in CHECKPOINT_KEYS:
        REFERENCE_KEYS[f"models.{_model}.{_key}"] = Reference(_to(f"{_stage}.checkpoint"))
# Keys the reference moved between blocks over its versions: recognised by name anywhere in its blocks.
REFERENCE_LEAVES: dict[str, Reference] = {
    "quality_threshold": Reference(_to("gate.threshold")),
    "max_retries": Reference(_to("gate.max_retries")),
    "flow_shift_hero": Reference(_to("motion.flow_shift_hero")),
    "flow_shift_broll": Reference(_to("motion.flow_shift_broll")),
    "compile_target": Reference(_compile_target),
    "paraattention_fbcache": Reference(_fbcache),
    "fbcache_threshold": Reference(_fbcache),
    "ref_weight": Reference(_to("keyframes.ref_weight")),
    "lufs_target": Reference(_to("mix.target_lufs")),
}
REFERENCE_BLOCKS = ("pipeline", "models", "optimization", "memory_management")
HARDWARE_KEY = re.compile(r"^(hip|rocm|miopen|hsa|amd|rccl|pytorch_rocm|gfx|xnack|hipblaslt)", re.I)


def reference_for(path: tuple[str, ...]) -> Reference | None:
    if not path or path[0] not in REFERENCE_BLOCKS:
        return None
    return REFERENCE_KEYS.get(".".join(path)) or REFERENCE_LEAVES.get(path[-1])


# -- reading a file ------------------------------------------------------------------------

@dataclass
class Layer:
    """One layer's values by setting name, where each came from, what it ignored, and what is wrong."""

    source: str
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # setting -> the key (or variable, flag) that set it
    ignored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    base: Path | None = None  # the folder relative paths are resolved against (the file's)

    def put(self, name: str, value: Any, origin: str) -> None:
        if name in self.values and self.values[name] != value:
            self.problems.append(f"{origin} = {value!r} contradicts {self.origins[name]} = {self.values[name]!r} "
                                 f"(both set {name})")
            return
        self.values[name] = value
        self.origins[name] = origin


def read_file(path: Path) -> dict[str, Any]:
    """The file's data: TOML, or YAML when PyYAML is installed; ValueError naming what is wrong."""
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"settings file {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"settings file {path} is YAML, which needs PyYAML (pip install pyyaml); or use a "
                             f".toml file (cinereel config init {path.with_suffix('.toml').name})") from None
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"settings file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
        data = {} if data is None else data
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10: the backport pyproject.toml declares there
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"settings file {path} is not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"settings file {path} must hold sections of keys, not a {type(data).__name__}")
    return data


def _known_paths() -> list[str]:
    names = list(settings()) + list(REFERENCE_KEYS)
    names += [f"{block}.{leaf}" for block in ("pipeline", "models", "optimization") for leaf in REFERENCE_LEAVES]
    return names


def _unknown(path: tuple[str, ...], where: str) -> str:
    dotted = ".".join(path)
    candidates = _known_paths()
    if len(path) > 1:  # the same section's keys first: 'motion.steps' for 'motion.stpes'
        near = difflib.get_close_matches(dotted, [c for c in candidates if c.startswith(path[0] + ".")], 1, 0.6)
        near = near or difflib.get_close_matches(dotted, candidates, 1, 0.6)
    else:  # a section, or a key written outside its section ('seed = 3' for '[pipeline] seed = 3')
        near = difflib.get_close_matches(dotted, sections() + list(REFERENCE_BLOCKS), 1, 0.6)
        near = near or [name for name in settings() if name.endswith("." + dotted)][:1]
    hint = f"; did you mean {near[0]!r}?" if near else f"; the sections are {', '.join(sections())}"
    return f"{where}: unknown key {dotted!r}{hint}"


def file_layer(path: Path) -> Layer:
    """The settings in ``path``: native keys, then the reference template's, everything else a problem."""
    layer = Layer("file", base=path.resolve().parent)
    try:
        data = read_file(path)
    except ValueError as exc:
        layer.problems.append(str(exc))
        return layer
    where = path.name
    known = settings()

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*prefix, str(key))
            dotted = ".".join(here)
            if dotted in known:
                layer.put(dotted, _file_value(known[dotted], value), dotted)
                continue
            if HARDWARE_KEY.match(str(key)):
                layer.ignored.append(f"{dotted}: {HARDWARE}")
                continue
            reference = reference_for(here)
            if reference is not None:
                if reference.ignored:
                    layer.ignored.append(f"{dotted}: {reference.ignored}")
                    continue
                try:
                    for name, converted in reference.convert(value).items():
                        layer.put(name, _file_value(known[name], converted), dotted)
                except ValueError as exc:
                    layer.problems.append(f"{where}: {dotted}: {exc}")
                continue
            if isinstance(value, Mapping) and (dotted in sections() or _reference_block(here)):
                walk(value, here)
                continue
            layer.problems.append(_unknown(here, where))

    walk(data, ())
    for name, value in list(layer.values.items()):
        if (problem := check_value(known[name], value)) is not None:
            layer.problems.append(f"{where}: {layer.origins[name]}: {problem}")
    return layer


def _reference_block(path: tuple[str, ...]) -> bool:
    return (len(path) == 1 and path[0] in REFERENCE_BLOCKS) or (len(path) == 2 and path[0] == "models"
                                                                and path[1] in MODEL_BLOCKS)


def _file_value(setting: Setting, value: Any) -> Any:
    if setting.optional and value == "":
        return None
    if setting.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_value(setting: Setting, value: Any) -> str | None:
    """Why ``value`` cannot be ``setting`` (its type, its choices; a loader option's range too), or None.
    Ranges of the run settings are the preflight's (DirectorRequest.validate, settings_problems)."""
    kind = setting.kind
    if value is None and setting.optional:
        return None
    if setting.loader_option and isinstance(kind, tuple) and len(kind) == 2 and isinstance(kind[1], dict):
        return option_problem(setting.section, setting.key, value, kind)
    if isinstance(kind, tuple):
        return None if value in kind else f"{value!r} is not one of {', '.join(kind)}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"{value!r} must be true or false"
    if kind in ("str", "path"):
        return None if isinstance(value, str) else f"{value!r} must be text"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        return None if is_number and float(value).is_integer() else f"{value!r} must be a whole number"
    return None if is_number and math.isfinite(value) else f"{value!r} must be a number"


# -- the environment and the command line -------------------------------------------------

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_text(setting: Setting, text: str) -> Any:
    """A value written as text (an environment variable) as the setting's type; ValueError if it is not."""
    kind = setting.kind
    if setting.optional and text == "":
        return None
    if kind == "bool" or (isinstance(kind, tuple) and kind and kind[0] == "BOOLEAN"):
        if text.strip().lower() in TRUE + FALSE:
            return text.strip().lower() in TRUE
        raise ValueError(f"{text!r} must be true or false")
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if setting.loader_option and kind[0] in ("INT", "FLOAT"):
        return json.loads(text)
    return text


def env_layer(env: Mapping[str, str]) -> Layer:
    layer = Layer("environment", base=None)
    for setting in settings().values():
        if setting.env not in env:
            continue
        try:
            value = parse_text(setting, env[setting.env])
        except ValueError:
            layer.problems.append(f"{setting.env}={env[setting.env]!r}: {setting.name} must be "
                                  f"{_kind_words(setting)}")
            continue
        if (problem := check_value(setting, value)) is not None:
            layer.problems.append(f"{setting.env}: {problem}")
            continue
        layer.put(setting.name, value, setting.env)
    return layer


def _kind_words(setting: Setting) -> str:
    kind = setting.kind[0] if setting.loader_option else setting.kind
    return {"bool": "true or false", "BOOLEAN": "true or false", "int": "a whole number", "INT": "a whole number",
            "float": "a number", "FLOAT": "a number"}.get(kind, "text")


UNSET = type("Unset", (), {"__repr__": lambda self: "<unset>"})()


def flag_layer(p: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, Layer]:
    """Parse the command line with every settable default replaced by UNSET: what is not UNSET was given.
    ``--set STAGE.OPTION=VALUE`` items are flags too (handles_from_args validates them)."""
    dests = {s.dest for s in settings().values() if s.dest}
    p.set_defaults(**{dest: UNSET for dest in dests})
    args = p.parse_args(argv)
    layer = Layer("flag")
    for setting in settings().values():
        if setting.dest and getattr(args, setting.dest, UNSET) is not UNSET:
            value = getattr(args, setting.dest)
            layer.put(setting.name, str(value) if isinstance(value, Path) else value, setting.flag)
    for item in getattr(args, "set", []):
        key, sep, raw = item.partition("=")
        if sep and key in settings() and settings()[key].loader_option:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            layer.values[key] = value  # a later --set wins, as in handles_from_args
            layer.origins[key] = f"--set {key}"
    return args, layer


# -- the layers together -----------------------------------------------------------------

@dataclass
class Resolved:
    """Every setting's effective value and its source (default, file, environment, flag)."""

    values: dict[str, Any]
    sources: dict[str, str]
    origins: dict[str, str]
    file: Path | None
    ignored: list[str]

    def namespace(self, args: argparse.Namespace | None = None) -> argparse.Namespace:
        """The CLI's arguments (``run`` reads them) with every setting filled in; loader options set by the
        file or the environment go to ``loader_options`` (``--set`` flags still override them)."""
        args = args if args is not None else argparse.Namespace(set=[])
        loader: dict[str, dict[str, Any]] = {stage: {} for stage in STAGES}
        for name, setting in settings().items():
            value = self.values[name]
            if setting.dest:
                if setting.dest == "plan" and value is not None:
                    value = Path(value)
                setattr(args, setting.dest, value)
            elif self.sources[name] in ("file", "environment"):
                loader[setting.section][setting.key] = value
        args.loader_options = loader
        args.settings = self
        return args

    def report(self) -> dict[str, Any]:
        """What report.json records: the file, every value with its source, and what the file ignored."""
        return {"file": str(self.file) if self.file else None,
                "values": {name: {"value": self.values[name], "source": self.sources[name]} for name in self.values},
                "ignored": list(self.ignored)}

    def changed(self) -> dict[str, Any]:
        return {name: value for name, value in self.values.items() if self.sources[name] != "default"}


def config_path(argv: list[str], env: Mapping[str, str]) -> Path | None:
    """``--config FILE`` (or ``--config=FILE``) from the command line, else ``$CINEREEL_CONFIG``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        return known.config
    return Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None


def resolve(p: argparse.ArgumentParser, argv: list[str], env: Mapping[str, str] | None = None
            ) -> tuple[argparse.Namespace, Resolved]:
    """The command line over the environment over the settings file over the defaults.

    Raises ``PreflightError`` naming every problem of the file and the environment (an unknown key with
    the nearest known one, a value of the wrong type, a key the reference template uses wrongly).
    """
    env = os.environ if env is None else env
    path = config_path(argv, env)
    layers = [Layer("default", {name: s.default for name, s in settings().items()})]
    layers[0].origins = {name: "default" for name in settings()}
    problems: list[str] = []
    ignored: list[str] = []
    if path is not None:
        if not path.is_file():
            problems.append(f"settings file {path} does not exist" + ("" if path.suffix else
                            f" (create one with: cinereel config init {path}.toml)"))
        else:
            layer = file_layer(path)
            problems += layer.problems
            ignored += layer.ignored
            layer.values = {name: _relative(settings()[name], value, layer.base) for name, value in layer.values.items()}
            layers.append(layer)
    environment = env_layer(env)
    problems += environment.problems
    layers.append(environment)
    if problems:  # before the command line is parsed: a wrong file fails even without a sentence
        raise PreflightError(problems)
    args, flags = flag_layer(p, argv)
    layers.append(flags)
    values, sources, origins = {}, {}, {}
    for layer in layers:
        for name, value in layer.values.items():
            values[name], sources[name], origins[name] = value, layer.source, layer.origins.get(name, layer.source)
    resolved = Resolved(values, sources, origins, path.resolve() if path else None, ignored)
    return resolved.namespace(args), resolved


def _relative(setting: Setting, value: Any, base: Path | None) -> Any:
    """A path in a file is relative to that file: output and plan paths, prompt files, checkpoint folders."""
    if base is None or not isinstance(value, str) or not value:
        return value
    if setting.kind == "path" or setting.key in ("director_prompt", "critic_prompt"):
        return str((base / Path(value).expanduser()))
    if setting.key in ("lora_high", "lora_low"):  # a file beside the settings file, else a name in the loras folder
        beside = base / Path(value).expanduser()
        return str(beside) if beside.is_file() else value
    if setting.key == "checkpoint":
        backends = STAGES[setting.section].backends
        named = {"preview", "openai"} | {b.checkpoint for b in backends} | {b.choice for b in backends}
        return value if value in named else str(base / Path(value).expanduser())
    return value


# -- the template --------------------------------------------------------------------------

def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return '""'
    return json.dumps(value, ensure_ascii=False)


def render(values: Mapping[str, Any] | None = None, yaml: bool = False) -> str:
    """A complete, commented settings file: every key with ``values`` (default: today's defaults)."""
    values = {name: s.default for name, s in settings().items()} | dict(values or {})
    lines = [
        "# CineReel settings: cinereel --config THIS_FILE \"sentence\"",
        "# Precedence: command-line flags > CINEREEL_<SECTION>_<KEY> environment variables > this file > defaults.",
        "# Relative paths are relative to this file. `cinereel config show --config THIS_FILE` prints what is in",
        "# effect and where each value came from. The reference pipeline's keys (pipeline.quality_threshold,",
        "# models.motion.flow_shift_hero, optimization.paraattention_fbcache, ...) are accepted too.",
        "# Recommended (and default): flow shift 5 hero / 8 b-roll, never above 8; BF16; compile only",
        "# transformer_2 when you compile; first-block cache 0.05; gate threshold 7 with 3 retries; -18 LUFS.",
    ]
    for section in sections():
        lines += ["", f"# {SECTION_NOTES[section]}", f"{section}:" if yaml else f"[{section}]"]
        for setting in (s for s in settings().values() if s.section == section):
            note = " ".join(setting.help.split())
            env = f" (${setting.env}" + (f", {setting.flag})" if setting.flag else ")")
            indent = "  " if yaml else ""
            lines.append(f"{indent}# {note}{env}")
            sep = ": " if yaml else " = "
            lines.append(f"{indent}{setting.key}{sep}{_toml(values[setting.name])}")
    return "\n".join(lines) + "\n"


# -- cinereel config init / show ----------------------------------------------------------

def config_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cinereel config", description="Write a settings file, or print the settings "
                                "in effect and where each came from.")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a complete, commented settings file with today's defaults")
    init.add_argument("file", nargs="?", default=DEFAULT_FILE,
                      help=f"where to write it (default {DEFAULT_FILE}; .yaml/.yml writes YAML; - prints it)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    sub.add_parser("show", add_help=False)  # its flags are the run's: parsed by cli.parser(sentence=False)
    return p


def config_main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """``cinereel config init [FILE]`` and ``cinereel config show [--config FILE] [--format json] [flags]``."""
    import sys

    from .cli import EXIT_BAD_INPUT, one_line, parser

    if argv[:1] == ["show"]:
        rest = argv[1:]
        as_json = "--format=json" in rest or any(a == "--format" and b == "json" for a, b in zip(rest, rest[1:]))
        rest = [a for i, a in enumerate(rest) if a != "--format=json" and a != "--format"
                and not (i and rest[i - 1] == "--format")]
        try:
            _, resolved = resolve(parser(sentence=False), rest, env)
        except PreflightError as exc:
            print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(show(resolved, as_json))
        return 0
    args = config_parser().parse_args(argv)
    text = render(yaml=str(args.file).lower().endswith((".yaml", ".yml")))
    if args.file == "-":
        print(text, end="")
        return 0
    path = Path(args.file)
    if path.exists() and not args.force:
        print(f"cinereel: error: {path} exists; add --force to overwrite it", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"cinereel: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return 0


def show(resolved: Resolved, as_json: bool = False) -> str:
    """The effective settings, one per line with the layer (and key, variable or flag) that set it."""
    if as_json:
        return json.dumps(resolved.report(), indent=2, ensure_ascii=False, default=str)
    width = max(len(name) for name in resolved.values)
    lines = [f"# settings file: {resolved.file or 'none'}"]
    for name, value in resolved.values.items():
        source = resolved.sources[name]
        origin = resolved.origins.get(name, source)
        where = source if origin in (source, name) else f"{source}: {origin}"
        lines.append(f"{name:<{width}}  {_toml(value):<24}  ({where})")
    lines += [f"# ignored {note}" for note in resolved.ignored]
    return "\n".join(lines)
