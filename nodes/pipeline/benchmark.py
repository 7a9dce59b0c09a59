"""``cinereel --benchmark [--json]``: what a reel cost, counted, beside a plain x264 encode made in the same run.

The report: wall time and share per stage; every model load and eviction the
residency manager recorded (seconds, resident-set change, CUDA peak where CUDA
ran); per clip the forward passes of each Wan2.2 expert, as the backend counted
them at the model call and wrote them into the clip's call record (the preview
motion backend runs no transformer: 0, and it says so); and a plain x264 encode
of the same number of frames at the same size, with the ratio of the two.

One reel alone is a noisy sample on a shared machine, and the first one after the libraries left the page cache
reads them from disk (a cold preview reel took 27 s here, a warm one 4). So a benchmark runs rounds, hyperfine's
way: warm-up rounds that are shown but not counted, then measured rounds, each a command of its own (a fresh
process, as a user's reel is) that makes the reel in a fresh temporary folder and the plain encode right after
it; the report is the median round's (by ratio), with every round's figures.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EXPERTS = ("transformer", "transformer_2")
NO_TRANSFORMER = "the preview motion backend (Ken Burns) runs no transformer"


def seconds_since_start() -> float:
    """How long this process has run. On Linux from its start, in clock ticks since boot (/proc/self/stat),
    against the same clock (CLOCK_BOOTTIME); psutil's ``create_time`` adds the boot time, which the kernel gives
    in whole seconds, so it is up to a second off (1.0 s here). psutil's elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, ValueError, IndexError):  # no /proc, no CLOCK_BOOTTIME
        import psutil

        return time.time() - psutil.Process().create_time()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ffmpeg, eSpeak): unlike wall time, barely moved
    by other work on a shared machine."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# Above this share of the cores' time taken by the hypervisor, the machine was not idle and its figures move.
MAX_IDLE_STEAL_SHARE = 0.02


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to other machines while this one's cores wanted it, all cores together
    (Linux guests; None elsewhere): the part of a shared machine's noise that shows from inside it."""
    import psutil

    return getattr(psutil.cpu_times(), "steal", None)


def _steal_since(started: float | None, wall_s: float) -> dict[str, float] | None:
    now = steal_seconds()
    if started is None or now is None:
        return None
    from .stage import usable_cpus

    stolen = max(0.0, now - started)
    return {"steal_s": round(stolen, 3), "share": round(stolen / (wall_s * usable_cpus()), 4) if wall_s else 0.0}


def machine_note(reel_steal: dict[str, float] | None, encode_steal: dict[str, float] | None) -> dict[str, Any]:
    """The cores and what the hypervisor took from them during the reel and during the plain encode; ``idle``
    when neither share is above ``MAX_IDLE_STEAL_SHARE`` (None where the platform does not say)."""
    from .stage import usable_cpus

    shares = [part["share"] for part in (reel_steal, encode_steal) if part is not None]
    return {"cores": usable_cpus(), "reel": reel_steal, "plain_x264": encode_steal,
            "idle": all(share <= MAX_IDLE_STEAL_SHARE for share in shares) if len(shares) == 2 else None}


def branch_of(reel: Any) -> dict[str, str]:
    """Which branch each stage ran in when the sound stages ran beside the picture stages (``headless``, in a
    process of their own: their CPU seconds are in the total once it ended, not in a stage's)."""
    beside = reel.notes.get("beside") or {}
    return {**{name: "picture" for name in beside.get("picture_stages", [])},
            **{name: beside.get("branch", "sound") for name in beside.get("stages", [])}}


def stage_rows(stages: list[tuple[str, float, float]], wall_s: float, started_cpu: float | None,
               branches: dict[str, str] | None = None) -> list[dict]:
    """Each stage's wall seconds, share of the wall time and CPU seconds (from the CPU clock at each end). A
    stage that ran beside another (``branches``) has no CPU seconds of its own: the clock counts both."""
    rows, previous, branches = [], started_cpu, branches or {}
    for name, seconds, cpu_mark in stages:
        row = {"stage": name, "seconds": round(seconds, 3), "share": round(seconds / wall_s, 4) if wall_s else 0.0,
               "cpu_s": round(cpu_mark - previous, 3) if previous is not None and name not in branches else None}
        if name in branches:
            row["branch"] = branches[name]
        rows.append(row)
        previous = cpu_mark
    return rows


def residency_rows(reel: Any, event: str) -> list[dict[str, Any]]:
    """Loads (or evictions) in the order they happened: which model, for which stage, seconds and memory."""
    rows = []
    for entry in reel.notes.get("residency", []):
        if entry.get("event") != event:
            continue
        row = {"stage": entry.get("stage"), "family": entry.get("family"), "checkpoint": entry.get("checkpoint"),
               "role": entry.get("role"), "seconds": round(entry.get("seconds", 0.0), 4),
               "rss_delta_bytes": entry.get("rss_after", 0) - entry.get("rss_before", 0)}
        if entry.get("branch"):
            row["branch"] = entry["branch"]
        if event == "load":
            row["cuda_peak_bytes"] = entry.get("cuda_peak_bytes")
        else:
            row["reason"] = entry.get("reason")
        rows.append(row)
    return rows


def clip_row(shot: str, attempt: int, record: dict[str, Any] | None, motion_family: str) -> dict[str, Any]:
    if record is None or "expert_passes" not in record:
        counted = motion_family.startswith("preview-")
        return {"shot": shot, "attempt": attempt, "renderer": "kenburns" if counted else motion_family,
                "expert_passes": {name: 0 for name in EXPERTS} if counted else None,
                "note": NO_TRANSFORMER if counted else "this backend recorded no pass counts"}
    return {"shot": shot, "attempt": attempt, "renderer": record.get("renderer"),
            "expert_passes": {name: int(record["expert_passes"].get(name, 0)) for name in EXPERTS},
            "steps": record.get("num_inference_steps"), "guidance": record.get("guidance_scale"),
            "guidance_2": record.get("guidance_scale_2"), "flow_shift": record.get("flow_shift"),
            "frames": record.get("num_frames")}


def clip_rows(reel: Any, motion_family: str) -> list[dict[str, Any]]:
    """Every clip rendered for the reel: the motion stage's, and each critic-gate attempt when the gate ran."""
    gate = reel.notes.get("gate")
    if gate and gate.get("shots"):
        return [clip_row(shot["shot"], a["attempt"], (a.get("sent") or {}).get("clip"), motion_family)
                for shot in gate["shots"] for a in shot["attempts"]]
    renders = reel.notes.get("clip_renders", {})
    return [clip_row(shot.id, 1, renders.get(shot.id), motion_family) for shot in reel.plan.shots]


def _moving_frames(images: list[Any], count: int, width: int, height: int) -> Iterator[Any]:
    """``count`` frames at width×height: each keyframe in turn, sliding one pixel a frame (so x264 has motion
    to code, as in the reel), cut from a copy padded once before the clock starts."""
    import numpy as np

    per_image = max(1, -(-count // len(images)))
    padded = [np.pad(np.asarray(img.convert("RGB").resize((width, height))), ((0, 0), (0, per_image), (0, 0)),
                     mode="edge") for img in images]
    for index in range(count):
        source, offset = padded[min(index // per_image, len(padded) - 1)], index % per_image
        yield source[:, offset:offset + width]


def plain_encode(reel: Any, crf: int, preset: str) -> dict[str, Any]:
    """Time a plain x264 encode (imageio-ffmpeg's ffmpeg, the clips' preset and CRF) of as many frames as the
    reel shows, at its size, from its own keyframes."""
    from .video import write_clip

    plan = reel.plan
    frames = round(plan.duration_s * plan.fps)
    stream = _moving_frames(source_images(reel), frames, plan.width, plan.height)
    first = next(stream)
    with tempfile.TemporaryDirectory(prefix="cinereel-x264-") as folder:
        started, started_cpu, started_steal = time.perf_counter(), cpu_seconds(), steal_seconds()
        write_clip(_chain(first, stream), plan.fps, Path(folder) / "plain.mp4", crf=crf, preset=preset)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - started_cpu
        stolen = _steal_since(started_steal, seconds)
    return {"frames": frames, "width": plan.width, "height": plan.height, "fps": plan.fps, "preset": preset,
            "crf": crf, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "steal": stolen}


def source_images(reel: Any) -> list[Any]:
    """The reel's keyframes; a frame of each shot from reel.mp4 when ``--keep final`` removed them."""
    from PIL import Image

    from .video import sample_frames

    names = [f"keyframe:{shot.id}" for shot in reel.plan.shots]
    paths = [reel.artifact_path(name) for name in names if name in reel.artifacts]
    if len(paths) == len(names) and all(path.is_file() for path in paths):
        images = []
        for path in paths:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        return images
    return [Image.fromarray(frame) for frame in sample_frames(reel.artifact_path("reel"), len(names))]


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def benchmark_report(reel: Any, stages: list[tuple[str, float, float]], wall_s: float, handles: dict[str, Any],
                     crf: int, preset: str, started_cpu: float | None = None,
                     started_steal: float | None = None, startup_s: float = 0.0) -> dict[str, Any]:
    process_s = startup_s + wall_s  # what one command making this reel takes: start-up, imports and the reel
    cpu_s = cpu_seconds() - started_cpu if started_cpu is not None else None
    reel_steal = _steal_since(started_steal, wall_s)
    encode = plain_encode(reel, crf, preset)
    clips = clip_rows(reel, handles["motion"].family)
    return {
        "backends": {stage: handle.family for stage, handle in handles.items()},
        "frames": encode["frames"], "width": reel.plan.width, "height": reel.plan.height,
        "wall_s": round(wall_s, 3),
        "process_s": round(process_s, 3),
        "stages": stage_rows(stages, wall_s, started_cpu, branch_of(reel)),
        "sound_branch_in": (reel.notes.get("beside") or {}).get("in"),  # process, thread, or None: in order
        "model_loads": residency_rows(reel, "load"),
        "evictions": residency_rows(reel, "evict"),
        "clips": clips,
        "expert_passes_total": {name: sum((c["expert_passes"] or {}).get(name, 0) for c in clips)
                                for name in EXPERTS},
        "plain_x264": encode,
        "reel_to_x264_ratio": round(wall_s / encode["seconds"], 3) if encode["seconds"] else None,
        "cpu_s": round(cpu_s, 3) if cpu_s is not None else None,
        "reel_to_x264_cpu_ratio": round(cpu_s / encode["cpu_s"], 3) if cpu_s is not None and encode["cpu_s"] else None,
        "machine": machine_note(reel_steal, encode["steal"]),
    }


# -- rounds --------------------------------------------------------------------------------

# Without --benchmark-rounds / --benchmark-warmup, when no backend holds weights (a preview reel takes seconds).
AUTO_WARMUP, AUTO_ROUNDS = 1, 3


def round_counts(rounds: int | None, warmup: int | None, handles: dict[str, Any]) -> tuple[int, int]:
    """(warm-up rounds, measured rounds): the given ones, else 1 and 3 when every backend is weightless, and
    0 and 1 when one holds weights (a real reel takes up to an hour on a GPU)."""
    from ...model_loaders.residency import is_weightless

    light = all(is_weightless(handle) for handle in handles.values())
    return (warmup if warmup is not None else (AUTO_WARMUP if light else 0),
            rounds if rounds is not None else (AUTO_ROUNDS if light else 1))


MakeReel = Callable[[str, Callable[[str, float], None]], Any]  # (out folder, on_stage) -> REEL


def measure_round(make: MakeReel, handles: dict[str, Any], crf: int, preset: str) -> tuple[dict[str, Any], Any]:
    """One reel in a fresh temporary folder (nothing resumed) and the plain encode after it, in this process;
    the folder is removed however the round ends."""
    startup_s = seconds_since_start()  # the command's start-up and imports
    stages: list[tuple[str, float, float]] = []  # name, wall seconds, CPU clock at its end

    def on_stage(name: str, seconds: float) -> None:
        stages.append((name, seconds, cpu_seconds()))

    out = tempfile.mkdtemp(prefix="cinereel-bench-")
    try:
        started, started_cpu, started_steal = time.perf_counter(), cpu_seconds(), steal_seconds()
        reel = make(out, on_stage)
        wall_s = time.perf_counter() - started
        return benchmark_report(reel, stages, wall_s, handles, crf, preset, started_cpu, started_steal,
                                startup_s), reel
    finally:
        shutil.rmtree(out, ignore_errors=True)


def round_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {"wall_s": report["wall_s"], "plain_x264_s": report["plain_x264"]["seconds"],
            "reel_to_x264_ratio": report["reel_to_x264_ratio"], "cpu_s": report["cpu_s"],
            "plain_x264_cpu_s": report["plain_x264"]["cpu_s"],
            "reel_to_x264_cpu_ratio": report["reel_to_x264_cpu_ratio"], "idle": report["machine"]["idle"]}


def combine_rounds(warm_up: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """The median round's report (the lower middle one of an even count, so every figure is one round's)
    with every round's summary, and that round's index."""
    by_ratio = sorted(range(len(rounds)), key=lambda i: rounds[i]["reel_to_x264_ratio"] or float("inf"))
    chosen = by_ratio[(len(rounds) - 1) // 2]
    return {**rounds[chosen], "round": chosen + 1, "rounds": [round_summary(r) for r in rounds],
            "warm_up": [round_summary(r) for r in warm_up]}, chosen


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_text(report)


def benchmark_here(make: MakeReel, handles: dict[str, Any], crf: int, preset: str, as_json: bool) -> Any:
    """One round in this process: prints its report and returns its REEL."""
    report, reel = measure_round(make, handles, crf, preset)
    print_report(combine_rounds([], [report])[0], as_json)
    if warning := busy_machine_warning(report):
        print(f"cinereel: warning: {warning}", file=sys.stderr)
    return reel


# What each round's command adds to the user's: one round, in that process, as JSON (the last flag wins).
ONE_ROUND = ("--benchmark", "--benchmark-rounds", "1", "--benchmark-warmup", "0", "--json")
INTERRUPTED_ROUND_WAIT_S = 1.0  # for a round that took the Ctrl-C too to clean up and exit by itself


def benchmark_in_rounds(argv: list[str], warm_up: int, rounds: int, as_json: bool) -> int:
    """Each round a command of its own (``argv`` plus ``ONE_ROUND``), as a user's reel is: a warm process
    would skip the imports and first calls every command pays. Prints the median round's report with every
    round's figures, then what that round's command printed on standard error (its warnings); a round that
    fails ends the benchmark with its exit status and its messages."""
    reports, errors = [], []
    for _ in range(warm_up + rounds):
        code, out, err = _round_process(argv)
        if code != 0:
            sys.stderr.write(err)
            return code
        reports.append(json.loads(out))
        errors.append(err)
    report, chosen = combine_rounds(reports[:warm_up], reports[warm_up:])
    print_report(report, as_json)
    sys.stderr.write(errors[warm_up + chosen])
    return 0


def _round_process(argv: list[str]) -> tuple[int, str, str]:
    import subprocess

    from ...model_loaders.children import die_with_parent, end_child
    from .branch_process import CHILD_SCRIPT, PACK_ROOT, PACKAGE, STOP_WAIT_S

    process = subprocess.Popen([sys.executable, str(CHILD_SCRIPT), PACKAGE, str(PACK_ROOT), "cli", *argv, *ONE_ROUND],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               **die_with_parent())
    try:
        out, err = process.communicate()
    except BaseException:  # Ctrl-C reached the round too and it cleans up; a SIGTERM did not reach it
        try:
            process.wait(INTERRUPTED_ROUND_WAIT_S)
        except subprocess.TimeoutExpired:
            end_child(process, STOP_WAIT_S)
        raise
    return process.returncode, out, err


def print_rounds(report: dict[str, Any]) -> None:
    rounds, warm_up = report["rounds"], report["warm_up"]
    if len(rounds) == 1 and not warm_up:
        return
    warm = f" after {len(warm_up)} warm-up round{'s' if len(warm_up) != 1 else ''} (not counted)" if warm_up else ""
    print(f"benchmark: {len(rounds)} round{'s' if len(rounds) != 1 else ''}{warm}; below, the median round by "
          f"ratio (round {report['round']})")
    for label, row in [*((f"warm-up {k}", r) for k, r in enumerate(warm_up, 1)),
                       *((f"round {k}", r) for k, r in enumerate(rounds, 1))]:
        print(f"  {label:<10} reel {row['wall_s']:6.2f} s, plain x264 {row['plain_x264_s']:5.2f} s: "
              f"ratio {row['reel_to_x264_ratio']:.2f}")


def print_text(report: dict[str, Any]) -> None:
    print_rounds(report)
    wall = report["wall_s"]
    print(f"reel: {wall:.2f} s wall for the pipeline, {report['process_s']:.2f} s for the whole process")
    for row in report["stages"]:
        cpu = f"  cpu {row['cpu_s']:6.2f} s" if row["cpu_s"] is not None else ""
        branch = f"  ({row['branch']} branch)" if row.get("branch") else ""
        print(f"  {row['stage']:<14} {row['seconds']:6.2f} s  {100 * row['share']:5.1f} %{cpu}{branch}")
    if report.get("sound_branch_in"):
        print(f"  the sound stages ran in a {report['sound_branch_in']} beside the picture stages: their shares "
              "overlap")
    encode = report["plain_x264"]
    print(f"plain x264 encode of the same {encode['frames']} frames at {encode['width']}x{encode['height']} "
          f"(preset {encode['preset']}, crf {encode['crf']}): {encode['seconds']:.2f} s; "
          f"reel / encode = {report['reel_to_x264_ratio']:.2f}"
          + (f" (CPU time, self and children: {report['cpu_s']:.2f} s / {encode['cpu_s']:.2f} s = "
             f"{report['reel_to_x264_cpu_ratio']:.2f})" if report["reel_to_x264_cpu_ratio"] else ""))
    machine = report["machine"]
    if machine["idle"] is not None:
        print(f"machine: {machine['cores']} cores; the hypervisor took {machine['reel']['steal_s']:.2f} s of them "
              f"during the reel ({100 * machine['reel']['share']:.1f} %), {machine['plain_x264']['steal_s']:.2f} s "
              f"during the encode ({100 * machine['plain_x264']['share']:.1f} %)")
    loads = report["model_loads"]
    print(f"model loads: {len(loads)} ({sum(row['seconds'] for row in loads):.2f} s), "
          f"evictions: {len(report['evictions'])}")
    for clip in report["clips"]:
        passes = clip["expert_passes"]
        counted = (f"transformer {passes['transformer']}, transformer_2 {passes['transformer_2']}"
                   if passes is not None else "not counted")
        print(f"  {clip['shot']} attempt {clip['attempt']}: {counted}"
              + (f" ({clip['note']})" if clip.get("note") else ""))


def busy_machine_warning(report: dict[str, Any]) -> str | None:
    """What to tell the user when the hypervisor took more than ``MAX_IDLE_STEAL_SHARE`` of the cores."""
    machine = report["machine"]
    if machine["idle"] is not False:
        return None
    return (f"the machine was not idle: the hypervisor took {100 * machine['reel']['share']:.1f} % of the cores "
            f"during the reel and {100 * machine['plain_x264']['share']:.1f} % during the plain encode (more than "
            f"{100 * MAX_IDLE_STEAL_SHARE:g} %); the ratio is not an idle machine's, run the benchmark again")
