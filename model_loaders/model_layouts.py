"""Is a checkpoint folder complete? Checked against its family's published layout, before any weight loads.

The layouts are data (``checkpoint_layouts.json``: repository, pipeline class,
components and the files each kind needs). One checker serves every family, so
a folder missing three components names all three, with the ``hf download``
command that fetches them, and a hub id is looked up in the local cache only,
unless the user turned on ``allow_download``. Imports nothing heavy.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYOUTS_FILE = Path(__file__).with_name("checkpoint_layouts.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# What each kind of component must hold; a tuple of alternatives per requirement (see the JSON's _about).
KIND_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "scheduler": (("scheduler_config.json",),),
    "tokenizer": (("tokenizer_config.json",), ("tokenizer.json", "vocab.json merges.txt", "spiece.model")),
    "processor": (("preprocessor_config.json",),),
    "diffusers-model": (("config.json",), ("@weights:diffusion_pytorch_model.safetensors",)),
    "transformers-model": (("config.json",), ("@weights:model.safetensors",)),
}


@dataclass(frozen=True)
class Component:
    name: str
    class_name: str
    kind: str
    optional: bool = False


@dataclass(frozen=True)
class Layout:
    family: str
    name: str  # what users call it
    repo: str
    format: str  # "diffusers" (model_index.json + component folders) or "files"
    pipeline: str = ""
    components: tuple[Component, ...] = ()
    files: tuple[tuple[str, ...], ...] = ()
    identify: tuple[tuple[str, str], ...] = ()  # ("file", name), ("key", name), optionally ("prefix", text)

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


def download_command(repo_id: str, local_dir: Path | None = None) -> str:
    """The command that fetches (or completes, skipping files already there) a checkpoint."""
    target = f" --local-dir {_quoted(str(local_dir))}" if local_dir else ""
    return f"hf download {repo_id}{target}"


def _quoted(text: str) -> str:
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


@functools.cache
def layouts() -> dict[str, Layout]:
    data = json.loads(LAYOUTS_FILE.read_text(encoding="utf-8"))
    return {family: _layout(family, spec) for family, spec in data.items() if not family.startswith("_")}


def _layout(family: str, spec: dict[str, Any]) -> Layout:
    components = tuple(Component(name, c["class"], c["kind"], bool(c.get("optional")))
                       for name, c in spec.get("components", {}).items())
    files = tuple(tuple(alternatives) for alternatives in spec.get("files", ()))
    identify = tuple(sorted(spec.get("identify", {}).items()))
    return Layout(family, spec["name"], spec["repo"], spec["format"], spec.get("pipeline", ""), components, files,
                  identify)


def layout(family: str) -> Layout:
    try:
        return layouts()[family]
    except KeyError:
        raise ValueError(f"no published layout recorded for model family {family!r}") from None


# -- whose folder is it ------------------------------------------------------------

def belongs_to(family: str, folder: Path) -> bool:
    """Whether ``folder`` says it is a ``family`` checkpoint (complete or not): a diffusers folder whose
    model_index.json names the family's pipeline, or the layout's identifying config key."""
    spec = layout(family)
    if spec.format == "diffusers":
        index = _read_index(folder)
        return index is not None and index.get("_class_name") == spec.pipeline
    rule = dict(spec.identify)
    try:
        config = json.loads((folder / rule["file"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return False
    if not isinstance(config, dict) or rule["key"] not in config:
        return False
    return "prefix" not in rule or str(config[rule["key"]]).startswith(rule["prefix"])


# -- what a folder lacks ---------------------------------------------------------

def missing_files(family: str, folder: Path) -> list[str]:
    """Every file (relative to ``folder``) that loading ``family`` needs and that is not there."""
    spec = layout(family)
    if spec.format == "files":
        return _missing_requirements(folder, spec.files)
    return _missing_in_pipeline(spec, folder)


def wrong_pipeline(family: str, folder: Path) -> str | None:
    """Why ``folder``'s model_index.json is another pipeline than ``family``'s, or None."""
    spec = layout(family)
    index = _read_index(folder)
    if spec.format != "diffusers" or index is None or index.get("_class_name") in (None, spec.pipeline):
        return None
    return (f"{folder} holds a {index.get('_class_name')} checkpoint; this loader needs a {spec.pipeline} "
            f"like {spec.repo}")


def _read_index(folder: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def _missing_in_pipeline(spec: Layout, folder: Path) -> list[str]:
    index = _read_index(folder)
    if index is None:  # no (readable) index: name what the published layout needs
        required = [c for c in spec.components if not c.optional]
        return ["model_index.json"] + [f for c in required for f in _missing_in_component(folder, c)]
    missing = []
    for component in _components_in_index(spec, index):
        missing += _missing_in_component(folder, component)
    listed = {name for name, value in index.items() if _is_component(value)}
    missing += [f"{c.name}/ (model_index.json lists no {c.name}; the published checkpoint has a {c.class_name})"
                for c in spec.components if not c.optional and c.name not in listed]
    return missing


def _components_in_index(spec: Layout, index: dict[str, Any]) -> list[Component]:
    """The components ``index`` says the folder has; the layout gives each one's kind (a text tokenizer
    and ACE-Step's AceStepAudioTokenizer model need different files)."""
    found = []
    for name, value in sorted(index.items()):
        if name.startswith("_") or not _is_component(value):
            continue
        known = spec.component(name)
        found.append(known if known else Component(name, value[1], _kind_of(value[0], value[1])))
    return found


def _is_component(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value)


def _kind_of(library: str, class_name: str) -> str:
    if class_name.endswith("Scheduler"):
        return "scheduler"
    if library == "transformers" and "Tokenizer" in class_name:
        return "tokenizer"
    if class_name.endswith("Processor"):
        return "processor"
    return "transformers-model" if library == "transformers" else "diffusers-model"


def _missing_in_component(folder: Path, component: Component) -> list[str]:
    found = _missing_requirements(folder / component.name, KIND_FILES[component.kind])
    return [f"{component.name}/{name}" for name in found]


def _missing_requirements(folder: Path, requirements: tuple[tuple[str, ...], ...]) -> list[str]:
    missing = []
    for alternatives in requirements:
        if any(_present(folder, alternative) for alternative in alternatives):
            continue
        weights = alternatives[0].startswith("@weights:")
        missing += _missing_shards(folder) if weights and _weight_index(folder) else [_describe(alternatives)]
    return missing


def _present(folder: Path, alternative: str) -> bool:
    if alternative.startswith("@weights:"):
        return _weights_present(folder)
    return all(any(folder.glob(name)) if "*" in name else (folder / name).is_file() for name in alternative.split())


def _weights_present(folder: Path) -> bool:
    if _weight_index(folder):
        return not _missing_shards(folder)
    return any(folder.glob("*.safetensors"))


def _weight_index(folder: Path) -> Path | None:
    return next(iter(sorted(folder.glob("*.safetensors.index.json"))), None)


def _missing_shards(folder: Path) -> list[str]:
    index = _weight_index(folder)
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return [f"{index.name} (not a valid safetensors index)"]
    return [f"{shard} (listed in {index.name})" for shard in sorted(shards) if not (folder / shard).is_file()]


def _describe(alternatives: tuple[str, ...]) -> str:
    names = [alt.removeprefix("@weights:").replace(" ", " + ") + (" (none found)" if "*" in alt else "")
             for alt in alternatives]
    if alternatives[0].startswith("@weights:"):
        return f"{names[0]} (or its shards with {names[0]}.index.json)"
    return names[0] + (f" (or {', or '.join(names[1:])})" if len(names) > 1 else "")


# -- where a checkpoint is -------------------------------------------------------

def is_hub_id(checkpoint: str) -> bool:
    return bool(HUB_ID.match(checkpoint)) and not checkpoint.startswith(".") and not Path(checkpoint).exists()


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the Hugging Face cache, or None; never the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - every kind of cache miss means the same: not here
        return None


def incomplete_message(family: str, folder: Path, missing: list[str], repo_id: str | None = None) -> str:
    """What ``folder`` lacks and the command that completes it: a hub id's snapshot (``repo_id``) is completed
    in the hub cache, any other folder where it is."""
    spec = layout(family)
    fetch = download_command(repo_id) if repo_id else download_command(spec.repo, folder)
    return f"the {spec.name} checkpoint in {folder} is incomplete: missing {', '.join(missing)}; complete it with `{fetch}`"


def no_folder_message(family: str, path: Path) -> str:
    spec = layout(family)
    return (f"no {spec.name} checkpoint at {path.absolute()}: the folder does not exist (give a folder laid out "
            f"like {spec.repo}, or that hub id once it is downloaded)")


def not_downloaded_message(family: str, repo_id: str, suggested_dir: Path | None = None) -> str:
    fetch = f"`{download_command(repo_id, suggested_dir)}`"
    choose = f" and choose 'folder: {suggested_dir.name}'" if suggested_dir else ""
    return f"{repo_id} is not downloaded; run {fetch}{choose} (or turn on allow_download)"


def check_folder(family: str, folder: Path, repo_id: str | None = None) -> Path:
    """``folder`` if it is a complete ``family`` checkpoint; else one error naming every missing file."""
    missing = missing_files(family, folder)
    if missing:
        raise FileNotFoundError(incomplete_message(family, folder, missing, repo_id))
    problem = wrong_pipeline(family, folder)
    if problem:
        raise ValueError(problem)
    return folder


def resolve(family: str, checkpoint: str, allow_download: bool = False, revision: str | None = None) -> Path:
    """The complete local folder for ``checkpoint`` (a folder, or a hub id in the cache or, when allowed,
    downloaded now with the hub's progress bars, only the files the layout names)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return check_folder(family, path)
    if path.exists():
        raise FileNotFoundError(f"{path} is a file; the {layout(family).name} checkpoint must be a folder")
    if not is_hub_id(checkpoint):
        raise FileNotFoundError(no_folder_message(family, path))
    snapshot = cached_snapshot(checkpoint, revision)
    if snapshot is None or (allow_download and missing_files(family, snapshot)):
        if not allow_download:
            raise FileNotFoundError(not_downloaded_message(family, checkpoint))
        snapshot = download(checkpoint, revision)
    return check_folder(family, snapshot, checkpoint)


def download(repo_id: str, revision: str | None = None) -> Path:
    """Fetch ``repo_id``'s safetensors checkpoint into the hub cache (the user allowed it)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.pth", "voices/*.pt"]
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))


def problems(family: str, checkpoint: str, allow_download: bool = False,
             suggested_dir: Path | None = None) -> list[str]:
    """Preflight: everything wrong with ``checkpoint`` for ``family``, without loading or downloading."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return _folder_problems(family, path)
    if not is_hub_id(checkpoint):
        return [no_folder_message(family, path)]
    snapshot = cached_snapshot(checkpoint)
    if allow_download:
        return []  # resolve() fetches what the cache lacks
    if snapshot is None:
        return [not_downloaded_message(family, checkpoint, suggested_dir)]
    return _folder_problems(family, snapshot, checkpoint)


def _folder_problems(family: str, folder: Path, repo_id: str | None = None) -> list[str]:
    try:
        check_folder(family, folder, repo_id)
    except (FileNotFoundError, ValueError) as exc:
        return [str(exc)]
    return []
