"""The Assemble node: reel.mp4 and reel.srt, played in the node (``pipeline/assemble.py``)."""

from __future__ import annotations

from typing import Any

from .base import ReelNode, choice, integer, reel_input
from .pipeline.assemble import REEL_PRESETS, assemble_stage, ui_video
from .pipeline.comfy import send_ui_event
from .pipeline.retention import KEEP_CHOICES, human_size


class AssembleNode(ReelNode):
    DESCRIPTION = ("Cuts every shot's chosen clip together over the mastered mix into reel.mp4 (H.264 yuv420p, "
                   "CRF 18, AAC 48 kHz, +faststart) with reel.srt beside it, and plays the reel in the node.")
    OUTPUT_TOOLTIPS = ("The finished REEL; REEL to Video gives ComfyUI's VIDEO for core video nodes.",)
    FUNCTION = "assemble"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL after Animate (or the Critic Gate) and Mix."),
            "crf": integer("x264 quality: lower is better and bigger. 18 is visually lossless.", 18, 0, 51),
            "preset": choice(REEL_PRESETS, "copy: join the clips without re-encoding (no quality loss, seconds, a "
                             "larger file). An x264 preset re-encodes at the crf: slower presets make smaller files "
                             "at the same quality; veryfast is within a few percent of medium's size."),
        }, "optional": {
            "keep": choice(KEEP_CHOICES, "What stays in the run folder once the reel is made. all: every attempt "
                           "and superseded file. best: the reel, each shot's chosen attempt and what resuming needs "
                           "(other attempts and superseded/ are removed). final: reel.mp4, reel.srt and report.json "
                           "only; the run can no longer resume, and re-queueing after changing this node needs "
                           "the stages before it to run again. report.json lists what was removed."),
        }}

    def assemble(self, reel: Any, crf: int, preset: str, keep: str = "all") -> dict[str, Any]:
        from .pipeline.board import view_ref
        from .pipeline.contact_sheet import SHEET

        out = assemble_stage(reel, int(crf), preset, keep=keep)
        delivery = out.notes["delivery"]
        summary = (f"{out.artifact_path('reel')}  {delivery['width']}x{delivery['height']}  "
                   f"{delivery['duration']:.2f} s  {delivery['video_codec']}+{delivery['audio_codec']}")
        ui: dict[str, Any] = {"text": [summary]}
        retention = out.notes.get("retention")
        if retention:
            ui["text"].append(f"keep={keep}: removed {retention['removed_files']} file(s), "
                              f"{human_size(retention['removed_bytes'])}")
        video = ui_video(out)
        if video:
            ui["cinereel_video"] = [video]
        sheet = view_ref(out.run_dir.path(SHEET)) if out.run_dir.path(SHEET).is_file() else None
        if sheet:  # ComfyUI shows ui images under the node: the run as pictures
            ui["images"] = [sheet]
        send_ui_event("cinereel.stage", {"run_id": out.run_id, "stage": "assemble"})
        return {"ui": ui, "result": (out,)}


NODES = {"CineReelAssemble": (AssembleNode, "CineReel Assemble")}
