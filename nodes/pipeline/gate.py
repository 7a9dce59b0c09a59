"""The critic gate: score every clip, re-render the failures with a concrete fix, repeat.

Rounds are phase-major. In each round every clip not yet passed is scored
(the cheap technical check first, then the critic with its model resident
once), every failed shot is revised by its failure label (``retry.py``), the
keyframes of image-label failures are re-drawn (keyframe model resident once),
and the clips of all failures re-animated (motion model resident once). A
shot gets at most ``1 + max_retries`` attempts, so the gate always ends.

Every attempt's clip stays on disk with its critique. A shot that never
passes keeps its best attempt and is flagged in the report, or, with
``strict``, the run stops with an error naming those shots.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from ...model_loaders.residency import RESIDENCY
from .comfy import Progress, check_cancel, current_node_id, is_cancel, send_ui_event
from .stage import (
    Job,
    StageTimer,
    add_warning,
    artifact_key,
    call_record,
    pending_items,
    run_jobs,
    write_report,
)

if TYPE_CHECKING:
    from ...model_loaders.vocabulary.plan import Shot
    from .reel import Reel

MAX_RETRIES = 5
DEFAULT_THRESHOLD = 7.0
DEFAULT_CRITIC_FRAMES = 8
TECHNICAL_CHECK_FRAMES = 81  # the whole 5 s clip: flicker shows only between neighbouring frames


class GateFailed(RuntimeError):
    """Strict mode: some shots never passed the gate (their attempts are all kept on disk)."""


@dataclass
class Attempt:
    number: int
    shot: Shot
    keyframe: str  # artifact name of the keyframe the clip was made from
    clip: str = ""  # artifact name of the clip
    changes: dict[str, Any] = field(default_factory=dict)
    label_fixed: str | None = None  # the failure label this attempt's changes answer
    render_s: float = 0.0
    critique: dict[str, Any] | None = None
    critic_s: float = 0.0

    @property
    def mean(self) -> float:
        from ...model_loaders.vocabulary.critique import mean_score

        return mean_score(self.critique) if self.critique and self.critique.get("scores") else 0.0


@dataclass
class ShotState:
    original: Shot
    attempts: list[Attempt]

    @property
    def latest(self) -> Attempt:
        return self.attempts[-1]


def check_gate_settings(threshold: float, max_retries: int) -> tuple[float, int]:
    """Refuse settings that make no sense; every accepted combination ends after at most 1 + max_retries rounds."""
    threshold = float(threshold)
    if math.isnan(threshold) or not 1.0 <= threshold <= 10.0:
        raise ValueError(f"threshold must be a number from 1 to 10 (scores are 1-10), got {threshold}")
    if isinstance(max_retries, bool) or int(max_retries) != max_retries or not 0 <= max_retries <= MAX_RETRIES:
        raise ValueError(f"max_retries must be a whole number from 0 to {MAX_RETRIES}, got {max_retries}")
    return threshold, int(max_retries)


CRITIC_UNAVAILABLE = "critic_unavailable"


def passed(attempt: Attempt, threshold: float) -> bool:
    critique = attempt.critique or {}
    return not critique.get("technical") and not critique.get("reason") and attempt.mean >= threshold


def gate_may_retry(shot: Shot) -> bool:
    """Whether the gate may send ``shot`` back for another attempt: never a shot the user locked. The clip gate
    and the keyframe gate both ask this."""
    return not shot.locked


def critic_unavailable(attempt: Attempt) -> bool:
    """The critic could not judge this attempt: a new render would not change that, so none is made."""
    return bool(attempt.critique) and attempt.critique.get("reason") == CRITIC_UNAVAILABLE


# -- scoring ------------------------------------------------------------------

def _frames(reel: Reel, clip: str, count: int) -> Any:
    from .video import sample_frames

    return sample_frames(reel.artifact_path(clip), count)


def portrait_pixels(reel: Reel, shot: Shot) -> list[Any]:
    import numpy as np
    from PIL import Image

    images = []
    for char_id in shot.characters:
        name = f"portrait:{char_id}"
        if name in reel.artifacts:
            with Image.open(reel.artifact_path(name)) as img:
                images.append(np.asarray(img.convert("RGB")))
    return images


def ask_critic(model: Any, frames: Any, portraits: list[Any], prompt: str) -> dict[str, Any]:
    """The critic's answer, validated. A malformed answer is asked again once; a second one, or a critic that
    cannot answer at all (server down, HTTP error, timeout, a worker or memory failure, each after the backend's
    own bounded retries), is a failed critique with the reason ``critic_unavailable``: the reel goes on."""
    from ...model_loaders.vocabulary.critique import validate_critique

    problems = []
    for _ in range(2):
        try:
            return validate_critique(model.critique(frames, portraits, prompt))
        except ValueError as exc:
            problems.append(str(exc))
        except RuntimeError as exc:
            return _unavailable(f"the critic could not answer: {exc}")
    return _unavailable("the critic answered malformed JSON twice: " + " | ".join(problems))


def _unavailable(notes: str) -> dict[str, Any]:
    return {"scores": None, "label": None, "technical": [], "reason": CRITIC_UNAVAILABLE, "notes": notes}


def _render_findings(reel: Reel, clip: str) -> list[str]:
    """What the motion stage saw while encoding that the MP4 cannot show (NaN frames become black)."""
    from .motion import qc_rel

    rel = qc_rel(reel.artifacts[clip])
    return reel.run_dir.read_json(rel).get("technical", []) if reel.run_dir.path(rel).exists() else []


def critique_job(reel: Reel, state: ShotState, critic: ModelHandle | None, frames: int,
                 technical: dict[str, Any] | None) -> Job:
    attempt = state.latest
    inputs = {"clip": artifact_key(reel, attempt.clip), "critic": critic.key if critic else "technical",
              "frames": frames, "prompt": attempt.shot.prompt, "characters": attempt.shot.characters}

    def make(model: Any, tmp: Path) -> None:
        import json

        started = time.perf_counter()
        if technical is not None:
            critique = technical
        else:
            critique = ask_critic(model, _frames(reel, attempt.clip, frames), portrait_pixels(reel, attempt.shot),
                                  attempt.shot.prompt)
        critique["seconds"] = round(time.perf_counter() - started, 3)
        tmp.write_text(json.dumps(critique, indent=2), encoding="utf-8")

    return Job(f"critique:{attempt.shot.id}@{attempt.number}",
               f"critic/{attempt.shot.id}.attempt{attempt.number}.json", inputs, make)


def score_round(reel: Reel, states: list[ShotState], critic: ModelHandle, frames: int,
                technical_gate: bool = True) -> Reel:
    """Critique the latest attempt of every state: technical check first, the critic only for clips it passes.

    With ``technical_gate`` off the critic judges every clip whose frames are all finite: black, blank,
    still or flickering frames may be what the shot asks for (a night scene, a locked-off camera).
    """
    from ...model_loaders.technical import technical_check

    technical_jobs, critic_jobs = [], []
    for state in states:
        result = technical_check(_frames(reel, state.latest.clip, TECHNICAL_CHECK_FRAMES),
                                 _render_findings(reel, state.latest.clip))
        if "nan_or_inf" in result["technical"] or (technical_gate and result["technical"]):
            technical_jobs.append(critique_job(reel, state, None, frames, result))
        else:
            critic_jobs.append(critique_job(reel, state, critic, frames, None))
    made_t, _ = run_jobs(reel.run_dir, None, technical_jobs)
    made_c, _ = run_jobs(reel.run_dir, critic.as_role("critic"), critic_jobs)
    reel = reel.evolve(artifacts={**made_t, **made_c})
    for state in states:
        data = reel.run_dir.read_json(reel.artifacts[f"critique:{state.latest.shot.id}@{state.latest.number}"])
        state.latest.critique = data
        state.latest.critic_s = float(data.get("seconds", 0.0))
    return reel


# -- re-rendering ----------------------------------------------------------------

def _timed(job: Job, timings: dict[str, float]) -> Job:
    def make(model: Any, tmp: Path) -> None:
        started = time.perf_counter()
        job.make(model, tmp)
        timings[job.name] = time.perf_counter() - started

    return Job(job.name, job.rel, job.inputs, make)


def revise_failures(reel: Reel, failed: list[ShotState]) -> None:
    """Append the next attempt to each failed shot, its parameters changed by the failure label."""
    from .keyframe_gate import approved_keyframes
    from .retry import revise
    from .user_media import user_items

    # The user's own keyframe, and one the keyframe gate approved, is never redrawn: only its clip is re-animated
    # with the revised parameters (an image label on the clip then came from the motion, not the keyframe).
    kept = set(user_items(reel)) | approved_keyframes(reel)
    for state in failed:
        previous = state.latest
        label = (previous.critique or {}).get("label")
        revision = revise(previous.shot, reel.plan, label, previous.number + 1, state.original.seed)
        redraw = revision.rerender_keyframe and previous.keyframe not in kept
        keyframe = f"keyframe:{revision.shot.id}@{previous.number + 1}" if redraw else previous.keyframe
        state.attempts.append(Attempt(previous.number + 1, revision.shot, keyframe, label_fixed=label,
                                      changes={k: list(v) for k, v in revision.changes.items()}))


def render_round(reel: Reel, states: list[ShotState], keyframe_model: ModelHandle,
                 motion_model: ModelHandle, clip_preset: str) -> Reel:
    """Re-draw the keyframes that need it (one residency), then re-animate every clip (one residency)."""
    timings: dict[str, float] = {}
    reel = redraw_keyframes(reel, states, keyframe_model, timings)
    return reanimate(reel, states, motion_model, clip_preset, timings)


def redraw_keyframes(reel: Reel, states: list[ShotState], keyframe_model: ModelHandle,
                     timings: dict[str, float], tag: str = "attempt", skip_drawn: bool = True) -> Reel:
    """Draw every state's latest keyframe under one residency of the keyframe model, each draw timed into
    ``timings`` by its artifact name; a redrawn keyframe is ``keyframes/<shot>.<tag><attempt>.png``. With
    ``skip_drawn`` a keyframe the reel already has is kept (the clip gate's first half of a render round: a
    motion-label retry re-animates its kept keyframe); the keyframe gate redraws every state it is given."""
    from .keyframes import encode_prompts, keyframe_job, portrait_jobs

    portraits = portrait_jobs(reel, keyframe_model)  # the user's portraits where given, as the keyframe stage
    keyframe_jobs, revised = [], {}
    for state in states:
        attempt = state.latest
        if skip_drawn and attempt.keyframe in reel.artifacts:
            continue
        plan = reel.plan.with_shot(attempt.shot)
        job = keyframe_job(plan, attempt.shot, portraits, reel.run_dir.root, keyframe_model, attempt.number, tag=tag)
        keyframe_jobs.append(_timed(Job(attempt.keyframe, job.rel, job.inputs, job.make), timings))
        revised[attempt.keyframe] = attempt.shot  # the retry's prompt, not the plan's first one
    made, _ = run_jobs(reel.run_dir, keyframe_model.as_role("keyframes"), keyframe_jobs,
                       prepare=lambda model, pending: encode_prompts(model, reel.plan, [],
                                                                     pending_items(revised, pending)))
    return reel.evolve(artifacts=made)


def reanimate(reel: Reel, states: list[ShotState], motion_model: ModelHandle, clip_preset: str,
              timings: dict[str, float]) -> Reel:
    """The second half of a render round: every new attempt's clip, from its (new or kept) keyframe."""
    from .motion import clip_job, encode_prompts

    clip_jobs = []
    for state in states:
        attempt = state.latest
        job = clip_job(reel, attempt.shot, motion_model, attempt.number, clip_preset, attempt.keyframe)
        attempt.clip = f"clip:{attempt.shot.id}@{attempt.number}"
        clip_jobs.append(_timed(Job(attempt.clip, job.rel, job.inputs, job.make), timings))
    by_job = {state.latest.clip: state.latest.shot for state in states}  # revised shots: the retries' prompts
    made, _ = run_jobs(reel.run_dir, motion_model.as_role("motion"), clip_jobs,
                       prepare=lambda model, pending: encode_prompts(model, pending_items(by_job, pending)))
    for state in states:
        attempt = state.latest
        attempt.render_s = timings.get(attempt.clip, 0.0) + timings.get(attempt.keyframe, 0.0)
    return reel.evolve(artifacts=made)


# -- the gate -------------------------------------------------------------------

def best_attempt(state: ShotState, threshold: float) -> Attempt:
    passing = [a for a in state.attempts if passed(a, threshold)]
    if passing:
        return passing[-1]
    return max(state.attempts, key=lambda a: (a.mean, -a.number))


def run_gate(reel: Reel, critic: ModelHandle, keyframe_model: ModelHandle, motion_model: ModelHandle,
             threshold: float = DEFAULT_THRESHOLD, max_retries: int = 3, strict: bool = False,
             frames: int = DEFAULT_CRITIC_FRAMES, clip_preset: str = "ultrafast",
             technical_gate: bool = True) -> Reel:
    threshold, max_retries = check_gate_settings(threshold, max_retries)
    timer = StageTimer("gate")
    mark = RESIDENCY.mark()
    (gate,) = gate_reels([reel], critic, keyframe_model, motion_model, threshold, max_retries, frames, clip_preset,
                         technical_gate)
    return finish_gate(gate, threshold, max_retries, timer, mark, technical_gate, strict)


@dataclass
class ReelGate:
    """One reel on its way through the gate's rounds; several reels share each round's residencies."""

    index: int  # its place in the list given to ``gate_reels``
    reel: Reel
    states: list[ShotState] = field(default_factory=list)
    pending: list[ShotState] = field(default_factory=list)
    rounds: int = 0
    seconds: float = 0.0  # time spent on this reel's scoring and re-renders
    error: Exception | None = None  # what stopped this reel's gate (only with ``on_error``)

    def begin(self) -> None:
        self.states = [ShotState(shot, [Attempt(first_attempt_number(self.reel, shot), shot, f"keyframe:{shot.id}",
                                                clip=f"clip:{shot.id}")])
                       for shot in self.reel.plan.shots]
        for state in self.states:
            self.reel.artifact_path(state.latest.clip)  # a clear error now if Animate has not run
        self.pending = list(self.states)


ErrorHandler = Callable[["ReelGate", Exception], None]


def gate_reels(reels: list[Reel], critic: ModelHandle, keyframe_model: ModelHandle, motion_model: ModelHandle,
               threshold: float, max_retries: int, frames: int = DEFAULT_CRITIC_FRAMES,
               clip_preset: str = "ultrafast", technical_gate: bool = True,
               on_error: ErrorHandler | None = None, each: EachReel | None = None) -> list[ReelGate]:
    """The gate's rounds over several reels at once: each round scores every reel's pending shots (critic
    resident once), then re-draws every reel's image failures (keyframe model once) and re-animates every
    failure (motion model once). With ``on_error``, a reel whose step raises leaves the rounds (the handler
    hears it) and the others go on; without it the error propagates. ``each(gates, step)`` applies a step to
    the reels (default: in turn; a Ray batch runs them at once)."""
    gates = [ReelGate(index, reel) for index, reel in enumerate(reels)]
    for g in gates:
        _step(g, ReelGate.begin, on_error)
    progress = Progress(sum(len(g.states) for g in gates) * (1 + max_retries))
    timings: dict[int, dict[str, float]] = {g.index: {} for g in gates}  # per reel: shot ids repeat across reels

    def score(g: ReelGate) -> None:
        g.rounds += 1
        g.reel = score_round(g.reel, g.pending, critic, frames, technical_gate)
        progress.update(len(g.pending))
        scored = g.pending
        failed = [s for s in g.pending if not passed(s.latest, threshold)]
        g.pending = [s for s in failed if s.latest.number < 1 + max_retries and not critic_unavailable(s.latest)
                     and gate_may_retry(s.original)]
        _send_scored(g.reel, scored, g.pending, threshold)
        if g.pending:
            revise_failures(g.reel, g.pending)

    def redraw(g: ReelGate) -> None:
        g.reel = redraw_keyframes(g.reel, g.pending, keyframe_model, timings[g.index])

    def animate_again(g: ReelGate) -> None:
        g.reel = reanimate(g.reel, g.pending, motion_model, clip_preset, timings[g.index])

    while any(g.pending for g in gates if g.error is None):
        check_cancel()
        for step in (score, redraw, animate_again):
            (each or _in_turn)([g for g in gates if g.pending and g.error is None],
                               lambda g, step=step: _step(g, step, on_error))
    return gates


EachReel = Callable[[list[ReelGate], Callable[[ReelGate], None]], None]


def _in_turn(gates: list[ReelGate], step: Callable[[ReelGate], None]) -> None:
    for g in gates:
        step(g)


def finish_gate(gate: ReelGate, threshold: float, max_retries: int, timer: StageTimer, mark: int,
                technical_gate: bool = True, strict: bool = False) -> Reel:
    """The reel with every shot's chosen attempt, its gate report written (``gate_reels`` made the rounds)."""
    return _finish(gate.reel, gate.states, threshold, max_retries, strict, gate.rounds, timer, mark, technical_gate)


def _step(gate: ReelGate, step: Callable[[ReelGate], None], on_error: ErrorHandler | None) -> None:
    started = time.perf_counter()
    try:
        step(gate)
    except Exception as exc:
        if on_error is None or is_cancel(exc):
            raise
        gate.error = exc
        on_error(gate, exc)
    finally:
        gate.seconds += time.perf_counter() - started


def first_attempt_number(reel: Reel, shot: Shot) -> int:
    """1, or for a locked shot the attempt its reused clip was (``clips/<shot>.attempt3.mp4``): its critique
    and report row keep that number."""
    found = re.search(r"\.attempt(\d+)\.mp4$", reel.artifacts.get(f"clip:{shot.id}", "")) if shot.locked else None
    return int(found.group(1)) if found else 1


def _send_scored(reel: Reel, scored: list[ShotState], pending: list[ShotState], threshold: float) -> None:
    """Each attempt just judged, live to the board; kept when its shot is done and this is the attempt kept."""
    from .board import attempt_row, send_attempt

    for state in scored:
        done = state not in pending
        kept = done and best_attempt(state, threshold) is state.latest
        send_attempt(reel, attempt_row(reel, state.original.id, attempt_report(reel, state.latest, threshold), kept))


def _finish(reel: Reel, states: list[ShotState], threshold: float, max_retries: int, strict: bool, rounds: int,
            timer: StageTimer, mark: int, technical_gate: bool = True) -> Reel:
    chosen: dict[str, str] = {}
    plan = reel.plan
    rows, flagged = [], []
    for state in states:
        best = best_attempt(state, threshold)
        shot_passed = passed(best, threshold)
        if not shot_passed:
            flagged.append(best.shot.id)
        chosen[f"clip:{best.shot.id}"] = reel.artifacts[best.clip]
        chosen[f"keyframe:{best.shot.id}"] = reel.artifacts[best.keyframe]
        plan = plan.with_shot(best.shot)
        rows.append(_shot_report(reel, state, best, shot_passed, threshold))
    labels = Counter(a.critique.get("label") for s in states for a in s.attempts
                     if a.critique and a.critique.get("label"))
    loads = RESIDENCY.log_since(mark)
    gate = {"threshold": threshold, "max_retries": max_retries, "technical_check": technical_gate,
            "rounds": rounds, "shots": rows,
            "locked": [s.original.id for s in states if not gate_may_retry(s.original)],
            "flagged": flagged, "label_counts": dict(sorted(labels.items())),
            "model_loads": sum(1 for e in loads if e["event"] == "load"),
            "attempts_total": sum(len(s.attempts) for s in states)}
    out = reel.evolve(plan=plan, artifacts=chosen)
    for row in rows:
        if row["reason"] == CRITIC_UNAVAILABLE:
            notes = chosen_of(row)["notes"]
            warning = f"{row['shot']}: {CRITIC_UNAVAILABLE}, attempt {row['chosen_attempt']} kept unjudged ({notes})"
            out = out.evolve(notes={"warnings": add_warning(out, warning)})
    out = out.evolve(notes=timer.notes(out, gate=gate))
    write_report(out)
    from .board import attempt_rows
    from .contact_sheet import refresh_contact_sheet

    refresh_contact_sheet(out)
    send_ui_event("cinereel.gate", {"run_id": out.run_id, "node": current_node_id(), "rows": score_rows(gate),
                                    "attempts": attempt_rows(out, gate)})
    if strict and flagged:
        raise GateFailed(f"shots {', '.join(flagged)} did not reach the threshold {threshold:g} after "
                         f"{1 + max_retries} attempts each; every attempt is kept in {reel.run_dir.root / 'clips'}")
    return out


def attempt_report(reel: Reel, a: Attempt, threshold: float) -> dict[str, Any]:
    """One attempt in report.json. ``scores`` (and ``mean``) only when a critic model judged it; a technical
    check's verdict is ``source`` "technical" with its ``measured`` figures."""
    from ...model_loaders.vocabulary.critique import CRITIC_SOURCE
    from .board import attempt_figures

    critique = a.critique or {}
    figures = attempt_figures(critique)
    return {
        "attempt": a.number, "clip": reel.artifacts.get(a.clip), "keyframe": reel.artifacts.get(a.keyframe),
        **figures, "mean": round(a.mean, 3) if figures["source"] == CRITIC_SOURCE else None,
        "label": critique.get("label"), "technical": critique.get("technical", []), "reason": critique.get("reason"),
        "notes": critique.get("notes", ""),
        "passed": passed(a, threshold), "fixes_label": a.label_fixed, "changes": a.changes,
        "render_s": round(a.render_s, 3), "critic_s": round(a.critic_s, 3),
        "parameters": {"seed": a.shot.seed, "flow_shift": a.shot.flow_shift, "ref_weight": a.shot.ref_weight,
                       "camera": a.shot.camera, "camera_detail": a.shot.camera_detail},
        "sent": {"keyframe": call_record(reel.run_dir, reel.artifacts.get(a.keyframe)),
                 "clip": call_record(reel.run_dir, reel.artifacts.get(a.clip))},
    }


def _shot_report(reel: Reel, state: ShotState, best: Attempt, shot_passed: bool, threshold: float) -> dict[str, Any]:
    attempts = [attempt_report(reel, a, threshold) for a in state.attempts]
    reason = None if shot_passed else (best.critique or {}).get("reason")
    return {"shot": state.original.id, "passed": shot_passed, "flagged": not shot_passed, "reason": reason,
            "locked": not gate_may_retry(state.original),
            "chosen_attempt": best.number, "attempts": attempts}


def chosen_of(shot: dict[str, Any]) -> dict[str, Any]:
    """The kept attempt of a report.json gate shot."""
    return next(a for a in shot["attempts"] if a["attempt"] == shot["chosen_attempt"])


def score_rows(gate: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per shot for the node's UI: the chosen attempt as judged (a critic's scores, or the technical
    check's verdict and figures)."""
    rows = []
    for shot in gate["shots"]:
        chosen = chosen_of(shot)
        rows.append({"shot": shot["shot"], "attempt": chosen["attempt"], "of": len(shot["attempts"]),
                     "mean": chosen["mean"], "scores": chosen["scores"], "label": chosen["label"],
                     "source": chosen.get("source"), "measured": chosen.get("measured"),
                     "verdict": chosen.get("verdict", ""), "locked": shot.get("locked", False),
                     "passed": shot["passed"], "flagged": shot["flagged"], "reason": shot.get("reason")})
    return rows


def summary_text(gate: dict[str, Any]) -> list[str]:
    """The gate as a whole, under the per-shot score board (which the node shows from ``score_rows``)."""
    flagged = f", {len(gate['flagged'])} shot(s) flagged (best attempt kept)" if gate["flagged"] else ""
    lines = [f"{gate['rounds']} round(s), {gate['attempts_total']} attempt(s), {gate['model_loads']} model load(s)"
             + flagged]
    if gate["label_counts"]:
        lines.append("labels: " + ", ".join(f"{k} x{v}" for k, v in gate["label_counts"].items()))
    sources = Counter(chosen_of(shot).get("source") for shot in gate["shots"])
    if sources.get("technical"):
        lines.append(f"{sources['technical']} shot(s) judged by the technical check only (measured, not scored)")
    if gate.get("locked"):
        lines.append("locked (never sent back): " + ", ".join(gate["locked"]))
    return lines
