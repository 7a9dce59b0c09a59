"""The keyframe gate: the critic judges every keyframe before any clip is animated.

A failure visible in the keyframe (the image labels: drift, extras, wardrobe, hands, neon, a stylised look,
intimacy) costs a whole motion render when the clip gate finds it after Animate. Here the critic sees each
keyframe, a single image, beside its characters' portraits and scores the same four axes; a keyframe fails when
its mean is below the threshold *and* its label is an image label (``IMAGE_LABELS``, the label table's data).
A failing keyframe is redrawn by the keyframe model with its label's remedy (``retry.py``: stronger reference,
re-injected wardrobe, prompt and negative-prompt terms, a fresh seed), in batched rounds like the clip gate:
the critic resident once per round for every shot, then the keyframe model once for every redraw. A shot gets
at most ``1 + max_retries`` keyframes. A low score with a motion label or none is not the keyframe's fault: it
goes on to Animate and the clip gate judges it.

What the clip gate does afterwards: it still judges every label on the clip (animation can bring drift, extras
or bad hands into later frames), but for a shot whose keyframe this gate approved, an image label re-animates
the clip with the label's remedy from the approved keyframe instead of redrawing it (``approved_keyframes``).

A critic that cannot answer keeps the keyframe unjudged, with a warning; the reel goes on. Redrawn keyframes
are ``keyframes/<shot>.kfgate<k>.png`` (never the clip gate's ``.attempt<k>`` names); every one is kept.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from ...model_loaders.residency import RESIDENCY
from ...model_loaders.vocabulary.critique import IMAGE_LABELS
from .comfy import Progress, check_cancel, send_ui_event
from .gate import (
    CRITIC_UNAVAILABLE,
    DEFAULT_THRESHOLD,
    Attempt,
    ShotState,
    ask_critic,
    check_gate_settings,
    critic_unavailable,
    gate_may_retry,
    portrait_pixels,
    redraw_keyframes,
)
from .stage import Job, StageTimer, add_warning, artifact_key, call_record, run_jobs, write_report

if TYPE_CHECKING:
    from .headless import PipelineOptions
    from .reel import Reel

STAGE = "keyframe_gate"
REDRAW_TAG = "kfgate"  # keyframes/<shot>.kfgate<k>.png


def real_critic(critic: ModelHandle | None) -> bool:
    """A language-model critic; the preview critic is a technical check that names no image label."""
    return critic is not None and not critic.family.startswith("preview-")


def keyframe_gate_on(options: PipelineOptions) -> bool:
    """``options.keyframe_gate`` when set; unset (None): on with the clip gate and a real critic."""
    if options.keyframe_gate is not None:
        return bool(options.keyframe_gate)
    return bool(options.gate and real_critic(options.handles.get("llm")))


def image_failure(attempt: Attempt, threshold: float) -> bool:
    """The keyframe is below the threshold for a reason the keyframe model can fix."""
    critique = attempt.critique or {}
    return not critique.get("reason") and attempt.mean < threshold and critique.get("label") in IMAGE_LABELS


def verdict(attempt: Attempt, threshold: float) -> str:
    """passed | failed (an image label) | deferred (below the threshold on no image label) | unjudged."""
    if critic_unavailable(attempt):
        return "unjudged"
    if image_failure(attempt, threshold):
        return "failed"
    return "passed" if attempt.mean >= threshold else "deferred"


# -- scoring ------------------------------------------------------------------

def _keyframe_pixels(reel: Reel, name: str) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(reel.artifact_path(name)) as img:
        return np.asarray(img.convert("RGB"))[None]  # one frame: (1, H, W, 3)


def keyframe_critique_job(reel: Reel, state: ShotState, critic: ModelHandle) -> Job:
    attempt = state.latest
    inputs = {"keyframe": artifact_key(reel, attempt.keyframe), "critic": critic.key, "prompt": attempt.shot.prompt,
              "characters": attempt.shot.characters}

    def make(model: Any, tmp: Path) -> None:
        import json

        started = time.perf_counter()
        critique = ask_critic(model, _keyframe_pixels(reel, attempt.keyframe), portrait_pixels(reel, attempt.shot),
                              attempt.shot.prompt)
        critique["seconds"] = round(time.perf_counter() - started, 3)
        tmp.write_text(json.dumps(critique, indent=2), encoding="utf-8")

    return Job(f"keyframe_critique:{attempt.shot.id}@{attempt.number}",
               f"critic/{attempt.shot.id}.keyframe{attempt.number}.json", inputs, make)


def score_keyframes(reel: Reel, states: list[ShotState], critic: ModelHandle) -> Reel:
    """Critique the latest keyframe of every state under one residency of the critic."""
    made, _ = run_jobs(reel.run_dir, critic.as_role("critic"), [keyframe_critique_job(reel, s, critic)
                                                                 for s in states])
    reel = reel.evolve(artifacts=made)
    for state in states:
        attempt = state.latest
        data = reel.run_dir.read_json(reel.artifacts[f"keyframe_critique:{attempt.shot.id}@{attempt.number}"])
        attempt.critique, attempt.critic_s = data, float(data.get("seconds", 0.0))
    return reel


# -- redrawing ------------------------------------------------------------------

def revise_keyframes(reel: Reel, failed: list[ShotState]) -> None:
    """Append the next attempt to each failed shot: its label's remedy and a fresh seed, a new keyframe name."""
    from .retry import revise

    for state in failed:
        previous = state.latest
        label = previous.critique["label"]
        number = previous.number + 1
        revision = revise(previous.shot, reel.plan, label, number, state.original.seed)
        state.attempts.append(Attempt(number, revision.shot, f"keyframe:{revision.shot.id}@{REDRAW_TAG}{number}",
                                      label_fixed=label, changes={k: list(v) for k, v in revision.changes.items()}))


def redraw_failures(reel: Reel, failed: list[ShotState], keyframe_model: ModelHandle) -> Reel:
    """Draw each failed shot's next keyframe under one residency of the keyframe model; the draw is its render."""
    timings: dict[str, float] = {}
    reel = redraw_keyframes(reel, failed, keyframe_model, timings, tag=REDRAW_TAG, skip_drawn=False)
    for state in failed:
        state.latest.render_s = timings.get(state.latest.keyframe, 0.0)
    return reel


# -- the gate -------------------------------------------------------------------

def run_keyframe_gate(reel: Reel, critic: ModelHandle, keyframe_model: ModelHandle,
                      threshold: float = DEFAULT_THRESHOLD, max_retries: int = 3) -> Reel:
    """Judge every keyframe the model drew (a user's own keyframe is taken as it is) and redraw image failures,
    in rounds, before any clip is animated. Returns the REEL with each shot's chosen keyframe and shot."""
    (out,) = keyframe_gate_reels([reel], critic, keyframe_model, threshold, max_retries)
    return out


def keyframe_gate_reels(reels: list[Reel], critic: ModelHandle, keyframe_model: ModelHandle,
                        threshold: float = DEFAULT_THRESHOLD, max_retries: int = 3) -> list[Reel]:
    """The keyframe gate's rounds over several reels at once (a batch): each round judges every reel's pending
    keyframes with the critic resident once, then redraws every reel's failures with the keyframe model
    resident once."""
    from .user_media import user_items

    threshold, max_retries = check_gate_settings(threshold, max_retries)
    timer = StageTimer(STAGE)
    mark = RESIDENCY.mark()
    states: list[list[ShotState]] = []
    for reel in reels:
        given = user_items(reel)
        states.append([ShotState(shot, [Attempt(1, shot, f"keyframe:{shot.id}")])
                       for shot in reel.plan.shots if f"keyframe:{shot.id}" not in given])
        for state in states[-1]:
            reel.artifact_path(state.latest.keyframe)  # a clear error now if Keyframes has not run
    progress = Progress(sum(len(s) for s in states) * (1 + max_retries))
    reels, pending, rounds = list(reels), [list(s) for s in states], [0] * len(reels)
    while any(pending):
        check_cancel()
        for i in [i for i, p in enumerate(pending) if p]:
            rounds[i] += 1
            reels[i] = score_keyframes(reels[i], pending[i], critic)
            progress.update(len(pending[i]))
            pending[i] = [s for s in pending[i] if image_failure(s.latest, threshold)
                          and s.latest.number < 1 + max_retries
                          and gate_may_retry(s.original)]  # a locked shot keeps its keyframe
            if pending[i]:
                revise_keyframes(reels[i], pending[i])
        for i in [i for i, p in enumerate(pending) if p]:
            reels[i] = redraw_failures(reels[i], pending[i], keyframe_model)
    return [_finish(reel, s, threshold, max_retries, n, timer, mark) for reel, s, n in zip(reels, states, rounds)]


def best_keyframe(state: ShotState, threshold: float) -> Attempt:
    """The latest keyframe without an image failure; else the best-scoring one (work is never thrown away)."""
    clear = [a for a in state.attempts if not image_failure(a, threshold)]
    return clear[-1] if clear else max(state.attempts, key=lambda a: (a.mean, -a.number))


def _finish(reel: Reel, states: list[ShotState], threshold: float, max_retries: int, rounds: int,
            timer: StageTimer, mark: int) -> Reel:
    plan, chosen, rows = reel.plan, {}, []
    for state in states:
        best = best_keyframe(state, threshold)
        chosen[f"keyframe:{best.shot.id}"] = reel.artifacts[best.keyframe]
        plan = plan.with_shot(best.shot)
        rows.append(_shot_report(reel, state, best, threshold))
    labels = Counter(a.critique.get("label") for s in states for a in s.attempts
                     if a.critique and a.critique.get("label"))
    redraws = sum(len(s.attempts) - 1 for s in states)
    section = {
        "threshold": threshold, "max_retries": max_retries, "labels_judged": sorted(IMAGE_LABELS), "rounds": rounds,
        "shots": rows, "flagged": [r["shot"] for r in rows if r["verdict"] == "failed"],
        "approved": {r["shot"]: r["keyframe"] for r in rows if r["verdict"] == "passed"},
        "label_counts": dict(sorted(labels.items())),
        "model_loads": sum(1 for e in RESIDENCY.log_since(mark) if e["event"] == "load"),
        "attempts_total": sum(len(s.attempts) for s in states),
        "keyframe_redraws": redraws,
        # every redraw answers a keyframe that failed on an image label: without this gate that keyframe would
        # have been animated, judged on its clip and animated again
        "motion_renders_saved": redraws,
    }
    out = reel.evolve(plan=plan, artifacts=chosen)
    for row in rows:
        if row["verdict"] == "unjudged":
            notes = row["attempts"][row["chosen_attempt"] - 1]["notes"]
            warning = (f"{row['shot']}: {CRITIC_UNAVAILABLE} at the keyframe gate, keyframe "
                       f"{row['chosen_attempt']} kept unjudged ({notes})")
            out = out.evolve(notes={"warnings": add_warning(out, warning)})
    out = out.evolve(notes=timer.notes(out, keyframe_gate=section))
    write_report(out)
    send_ui_event("cinereel.keyframe_gate", {"run_id": out.run_id, "rows": board_rows(section)})
    return out


def _shot_report(reel: Reel, state: ShotState, best: Attempt, threshold: float) -> dict[str, Any]:
    attempts = []
    for index, a in enumerate(state.attempts):
        critique = a.critique or {}
        following = state.attempts[index + 1] if index + 1 < len(state.attempts) else None
        attempts.append({
            "attempt": a.number, "keyframe": reel.artifacts.get(a.keyframe),
            "scores": critique.get("scores"), "mean": round(a.mean, 3), "label": critique.get("label"),
            "reason": critique.get("reason"), "notes": critique.get("notes", ""), "verdict": verdict(a, threshold),
            "fixes_label": a.label_fixed, "changes": a.changes,
            "remedy": {"label": following.label_fixed, "changes": following.changes} if following else None,
            "render_s": round(a.render_s, 3), "critic_s": round(a.critic_s, 3),
            "parameters": {"seed": a.shot.seed, "ref_weight": a.shot.ref_weight, "prompt": a.shot.prompt,
                           "negative_prompt": a.shot.negative_prompt},
            "sent": {"keyframe": call_record(reel.run_dir, reel.artifacts.get(a.keyframe))},
        })
    return {"shot": state.original.id, "verdict": verdict(best, threshold), "chosen_attempt": best.number,
            "keyframe": reel.artifacts[best.keyframe], "attempts": attempts}


def board_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per shot for the node's board, in the Critic Gate's shape (the browser draws both alike)."""
    rows = []
    for shot in section["shots"]:
        chosen = shot["attempts"][shot["chosen_attempt"] - 1]
        rows.append({"shot": shot["shot"], "attempt": chosen["attempt"], "of": len(shot["attempts"]),
                     "mean": chosen["mean"], "scores": chosen["scores"], "label": chosen["label"],
                     "passed": shot["verdict"] in ("passed", "deferred"), "flagged": shot["verdict"] == "failed",
                     "reason": chosen["reason"]})
    return rows


def summary_text(section: dict[str, Any]) -> list[str]:
    flagged = f", {len(section['flagged'])} keyframe(s) still failing (best kept)" if section["flagged"] else ""
    lines = [f"{section['rounds']} round(s), {section['keyframe_redraws']} keyframe redraw(s), "
             f"{section['motion_renders_saved']} motion render(s) saved, {section['model_loads']} model load(s)"
             + flagged]
    if section["label_counts"]:
        lines.append("labels: " + ", ".join(f"{k} x{v}" for k, v in section["label_counts"].items()))
    return lines


def approved_keyframes(reel: Reel) -> set[str]:
    """``keyframe:<shot>`` names whose current keyframe is the one the keyframe gate approved."""
    approved = (reel.notes.get(STAGE) or {}).get("approved", {})
    return {f"keyframe:{shot}" for shot, rel in approved.items() if reel.artifacts.get(f"keyframe:{shot}") == rel}
