"""The whole pipeline as plain Python: what the headless command runs, stage by stage.

It is the same sequence of stage functions the ComfyUI nodes call, with the
same handles, so a graph and a script make the same reel.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...model_loaders.handles import ModelHandle
from ...model_loaders.residency import is_weightless, side_branch
from .assemble import read_clips_ahead
from .backends import PREVIEW_CHOICES, make_handle
from .branch_process import BranchProcess
from .director import direct, run_id_for
from .keyframes import render_keyframes
from .motion import animate
from .music import score_music
from .reel import Reel
from .rundir import RunDir
from .stage import current_invocation, new_invocation
from .voice import narrate, request_for_voice

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest

log = logging.getLogger("cinereel.headless")

def preview_handles() -> dict[str, ModelHandle]:
    return {stage: make_handle(stage, selected) for stage, selected in PREVIEW_CHOICES.items()}


@dataclass
class PipelineOptions:
    handles: dict[str, ModelHandle] = field(default_factory=preview_handles)
    lead_in_s: float = 0.25
    target_lufs: float = -18.0
    true_peak_dbtp: float = -1.0
    crf: int = 18
    preset: str = "copy"
    clip_preset: str = "ultrafast"
    gate: bool = False  # the critic gate between motion and narration
    threshold: float = 7.0
    max_retries: int = 3
    technical_check: bool = True  # off: the critic also judges black, blank, still or flickering clips
    # the critic judges keyframes before motion (keyframe_gate.py); None: on with the gate and a real critic
    keyframe_gate: bool | None = None
    keep: str = "all"  # what stays on disk once the reel is made: all, best or final (retention.py)
    # The effective settings and where each came from (settings.Resolved.report()), recorded in report.json.
    settings: dict | None = None


StageCallback = Callable[[str, float], None]
Stage = tuple[str, Callable[[Reel], Reel]]


def reel_stages(options: PipelineOptions) -> list[Stage]:
    """Every stage after the director, in order, as (name, REEL -> REEL); ``batch.py`` runs the same list."""
    from .assemble import assemble_stage
    from .gate import run_gate
    from .keyframe_gate import keyframe_gate_on, run_keyframe_gate
    from .mix import mix_stage

    h = options.handles
    return [
        ("keyframes", lambda r: render_keyframes(r, h["keyframes"])),
        *([("keyframe_gate", lambda r: run_keyframe_gate(r, h["llm"], h["keyframes"], options.threshold,
                                                         options.max_retries))]
          if keyframe_gate_on(options) else []),
        ("motion", lambda r: animate(r, h["motion"], options.clip_preset)),
        *([("gate", lambda r: run_gate(r, h["llm"], h["keyframes"], h["motion"], options.threshold,
                                       options.max_retries, clip_preset=options.clip_preset,
                                       technical_gate=options.technical_check))]
          if options.gate else []),
        ("narration", lambda r: narrate(r, h["voice"], lead_in_s=options.lead_in_s)),
        ("music", lambda r: score_music(r, h["music"])),
        ("mix", lambda r: mix_stage(r, options.target_lufs, options.true_peak_dbtp)),
        ("assemble", lambda r: assemble_stage(r, options.crf, options.preset, keep=options.keep)),
    ]


# The stages that need only the plan: with weightless voice and music backends they run in a process (or, for a
# family only this process knows, a thread) beside the picture stages, and the two branches join before the
# assembly.
SOUND_STAGES = ("narration", "music", "mix")
# What the sound process imports while the director works: the mix's libraries (scipy.signal alone ~0.7 s).
SOUND_WARM_UP = ("scipy.signal", "scipy.ndimage", "pyloudnorm", "soundfile")


def sound_beside(options: PipelineOptions) -> bool:
    """Whether the sound stages can run beside the picture stages: their models hold no weights (the preview
    voice and music), so they never compete with the resident model for memory."""
    return all(is_weightless(options.handles[role]) for role in ("voice", "music"))


def _run_in_order(reel: Reel, stages: Sequence[Stage], on_stage: StageCallback | None) -> Reel:
    for name, run in stages:
        started = time.perf_counter()
        reel = run(reel)
        if on_stage:
            on_stage(name, time.perf_counter() - started)
    return reel


def sound_stages(options: PipelineOptions) -> list[Stage]:
    """The sound branch: narration, music and mix, then the assembly's AAC track (an ffmpeg process, so it
    runs beside the picture stages' work too)."""
    from .assemble import encode_reel_audio

    return ([stage for stage in reel_stages(options) if stage[0] in SOUND_STAGES]
            + [("delivery_audio", encode_reel_audio)])


def run_sound_stages(options: PipelineOptions, reel: Reel, invocation: str,
                     on_stage: StageCallback | None) -> tuple[Reel, float]:
    """The sound branch on ``reel`` for the command ``invocation`` names, and its wall seconds (what the sound
    process runs)."""
    new_invocation(invocation)
    started = time.perf_counter()
    with side_branch("sound"):
        reel = _run_in_order(reel, sound_stages(options), on_stage)
    return reel, time.perf_counter() - started


def merge_branches(base: Reel, main: Reel, side: Reel) -> Reel:
    """``main`` with what ``side`` added to ``base``: its artifacts, and its notes merged key by key (dicts
    such as the timings united, lists such as warnings and residency entries extended)."""
    notes = {}
    for key, value in side.notes.items():
        before = base.notes.get(key)
        if value == before:
            continue
        ours = main.notes.get(key)
        if isinstance(value, dict) and isinstance(ours, dict):
            notes[key] = {**ours, **{k: v for k, v in value.items() if (before or {}).get(k) != v}}
        elif isinstance(value, list) and isinstance(ours, list):
            notes[key] = ours + [item for item in value[len(before or []):] if item not in ours]
        else:
            notes[key] = value
    artifacts = {name: rel for name, rel in side.artifacts.items() if base.artifacts.get(name) != rel}
    return main.evolve(artifacts=artifacts, notes=notes)


def _submit_uninterrupted(pool: ThreadPoolExecutor, fn: Callable, *args: object):
    """``pool.submit``, with a Ctrl-C or SIGTERM that arrives meanwhile raised only once the executor knows its
    new thread. Raised inside ``submit`` (it waits for the thread to start), the interrupt left the thread
    unknown to the executor: the with-block did not wait for it, and the sound branch went on writing after
    "cancelled" was printed (seen in CI, then every time with SIGTERM sent as the director finished)."""
    if threading.current_thread() is not threading.main_thread():
        return pool.submit(fn, *args)
    caught: list[tuple[int, object]] = []
    held = {number: signal.signal(number, lambda signum, frame: caught.append((signum, frame)))
            for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        pending = pool.submit(fn, *args)
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
    for number, _ in caught:  # sent again to the handlers that were in place: the CLI's raise, a default kills
        signal.raise_signal(number)
    return pending


def _picture_beside_thread(reel: Reel, options: PipelineOptions, picture: Sequence[Stage],
                           on_stage: StageCallback | None) -> tuple[Reel, tuple[Reel, float]]:
    with ThreadPoolExecutor(1, thread_name_prefix="cinereel-sound") as pool:
        pending = _submit_uninterrupted(pool, run_sound_stages, options, reel, current_invocation(), on_stage)
        try:
            pictured = _run_in_order(reel, picture, on_stage)
        except BaseException:
            side_error = pending.exception()  # waits for the sound to be on disk; the picture's error is raised
            if side_error is not None:
                log.error("the sound stages failed too: %s", side_error)
            raise
        read_clips_ahead(pictured)  # while the sound branch finishes
        return pictured, pending.result()


def _picture_beside_process(reel: Reel, options: PipelineOptions, picture: Sequence[Stage],
                            on_stage: StageCallback | None, side: BranchProcess) -> tuple[Reel, tuple[Reel, float]]:
    side.run(run_sound_stages, (options, reel, current_invocation()), reel.run_dir.root, on_stage)
    try:
        pictured = _run_in_order(reel, picture, on_stage)
    except KeyboardInterrupt:
        side.stop()  # Ctrl-C reached it too; a SIGTERM here did not
        raise
    except BaseException:
        try:
            side.result()  # waits for the sound to be on disk; the picture's error is raised
        except Exception as side_error:  # noqa: BLE001 - reported beside the picture's
            log.error("the sound stages failed too: %s", side_error)
        raise
    read_clips_ahead(pictured)  # while the sound branch finishes
    return pictured, side.result()


def start_sound_process(options: PipelineOptions) -> BranchProcess | None:
    """The sound branch's process, started before the director so its imports overlap it; None when the sound
    stages cannot run beside the picture stages."""
    if not sound_beside(options):
        return None
    try:
        return BranchProcess("sound", (*SOUND_WARM_UP, __name__))
    except OSError as exc:  # no interpreter to start (an embedded Python): the thread does the same work
        log.warning("the sound stages run in a thread: their process did not start (%s)", exc)
        return None


def _run_branches(reel: Reel, options: PipelineOptions, stages: Sequence[Stage], on_stage: StageCallback | None,
                  side: BranchProcess | None) -> Reel:
    """The sound stages in their process (a thread for families only this process knows) beside the picture
    stages, then the assembly on both. A failing branch lets the other finish, so its work is on disk for the
    next run to reuse."""
    picture = [stage for stage in stages if stage[0] not in SOUND_STAGES and stage[0] != "assemble"]
    rest = [stage for stage in stages if stage[0] == "assemble"]
    if side is not None and side.knows({options.handles[role].family for role in ("voice", "music")}):
        pictured, (sounded, sound_s) = _picture_beside_process(reel, options, picture, on_stage, side)
        where = "process"
    else:
        if side is not None:
            side.close()
        pictured, (sounded, sound_s) = _picture_beside_thread(reel, options, picture, on_stage)
        where = "thread"
    merged = merge_branches(reel, pictured, sounded)
    merged = merged.evolve(notes={"beside": {"branch": "sound", "in": where,
                                             "stages": [name for name, _ in sound_stages(options)],
                                             "seconds": round(sound_s, 3),
                                             "picture_stages": [name for name, _ in picture]}})
    return _run_in_order(merged, rest, on_stage)


def make_reel(
    request: DirectorRequest,
    out_root: Path | str,
    run_id: str | None = None,
    plan_override: str | None = None,
    options: PipelineOptions | None = None,
    on_stage: StageCallback | None = None,
) -> Reel:
    """Sentence to reel.mp4, phase-major: each stage renders every shot under one residency (the sound stages
    beside the picture stages when ``sound_beside``)."""
    options = options or PipelineOptions()
    stages = reel_stages(options)
    request = request_for_voice(request, options.handles["voice"])
    root = Path(out_root).resolve() / "cinereel" / run_id_for(request, run_id, plan_override)
    with RunDir(root).locked():  # the whole reel, so no other process interleaves with it
        started = time.perf_counter()
        side = start_sound_process(options)
        try:
            reel = direct(options.handles["llm"], request, out_root, run_id, plan_override)
            if options.settings is not None:  # report.json says what the run was configured with
                reel = reel.evolve(notes={"settings": options.settings})
            if on_stage:
                on_stage("director", time.perf_counter() - started)
            if sound_beside(options):
                return _run_branches(reel, options, stages, on_stage, side)
            return _run_in_order(reel, stages, on_stage)
        finally:
            if side is not None:
                side.stop()  # ended already, unless the director or the picture stages were interrupted
