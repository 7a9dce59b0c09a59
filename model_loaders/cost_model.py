"""What a planned reel costs on real GPUs, on paper: the data in ``rules_data/gpu_costs.json``, the rules here.

The motion stage dominates, so its work is counted the way the benchmark counts
it at the model call: each Wan2.2 expert runs one pass per denoising step on its
side of the boundary (timestep >= ``boundary_ratio`` x 1000 is the high-noise
``transformer``), two when its guidance scale is above 1 (the unconditional pass;
CineReel's pipeline skips it per expert at guidance <= 1). The timesteps are the
flow-matching schedule diffusers' UniPC scheduler builds for the shot's flow shift.

A pass costs the anchor measurement's seconds scaled by the pass's FLOPs (frame size
and frame count) and by the GPU's dense BF16 throughput; loads cost the weights over
the disk and the PCIe link; a model that does not fit in the GPU's memory streams its
weights over PCIe (diffusers' model or group offload). Plain Python, no model library.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

COSTS_PATH = Path(__file__).resolve().parent / "rules_data" / "gpu_costs.json"
EXPERTS = ("transformer", "transformer_2")
GB = 1e9


def load_costs(path: Path | str | None = None) -> dict[str, Any]:
    return json.loads(Path(path or COSTS_PATH).read_text(encoding="utf-8"))


# -- counting passes -------------------------------------------------------------

def flow_timesteps(steps: int, flow_shift: float, num_train_timesteps: int = 1000) -> list[int]:
    """The timesteps of a flow-matching schedule with ``flow_shift``, as diffusers' UniPC scheduler in flow
    mode builds them: sigmas evenly from 1 down (the last, 1/num_train, dropped), shifted by
    ``shift*s / (1 + (shift-1)*s)``, the first nudged below 1, times ``num_train_timesteps``, truncated."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    end = 1.0 / num_train_timesteps
    sigmas = [1.0 + (end - 1.0) * i / steps for i in range(steps)]
    shifted = [flow_shift * s / (1.0 + (flow_shift - 1.0) * s) for s in sigmas]
    if abs(shifted[0] - 1.0) < 1e-6:  # the scheduler nudges sigma 1 down (its log must stay finite)
        shifted[0] -= 1e-6
    return [int(s * num_train_timesteps) for s in shifted]


def expert_passes(steps: int, guidance: float, guidance_2: float, flow_shift: float, boundary_ratio: float = 0.9,
                  num_train_timesteps: int = 1000) -> dict[str, int]:
    """Forward passes of each expert in one clip (the counts the benchmark reads from the model's hooks)."""
    boundary = boundary_ratio * num_train_timesteps
    timesteps = flow_timesteps(steps, flow_shift, num_train_timesteps)
    high = sum(1 for t in timesteps if t >= boundary)
    return {"transformer": high * (2 if guidance > 1 else 1),
            "transformer_2": (steps - high) * (2 if guidance_2 > 1 else 1)}


def video_tokens(width: int, height: int, frames: int, arch: dict[str, Any]) -> int:
    latent_frames = (frames - 1) // arch["vae_temporal"] + 1
    pt, ph, pw = arch["patch"]
    per_frame = (height // (arch["vae_spatial"] * ph)) * (width // (arch["vae_spatial"] * pw))
    return math.ceil(latent_frames / pt) * per_frame


def pass_flops(width: int, height: int, frames: int, arch: dict[str, Any]) -> float:
    """FLOPs of one expert pass (the rule in gpu_costs.json's ``wan.flops_rule``)."""
    n, d, f, text = video_tokens(width, height, frames, arch), arch["dim"], arch["ffn_dim"], arch["text_tokens"]
    per_layer = 8 * n * d * d + 4 * n * n * d + 4 * n * d * d + 4 * n * text * d + 4 * n * d * f
    return float(per_layer * arch["num_layers"])


# -- one GPU ---------------------------------------------------------------------

class GPU:
    def __init__(self, name: str, costs: dict[str, Any]) -> None:
        try:
            self.spec = costs["gpus"][name]
        except KeyError:
            raise ValueError(f"no GPU {name!r} in the cost data; known: {', '.join(costs['gpus'])}") from None
        self.name, self.host = name, costs["host"]
        self.reference = costs["gpus"][costs["wan"]["anchor"]["gpu"]]

    @property
    def compute_scale(self) -> float:
        """How much longer a compute-bound pass takes here than on the reference GPU."""
        return self.reference["bf16_dense_tflops"] / self.spec["bf16_dense_tflops"]

    @property
    def usable_gb(self) -> float:
        return self.spec["memory_gb"] * self.host["usable_memory_share"]

    def fits(self, weights_gb: float) -> bool:
        return weights_gb <= self.usable_gb

    def pcie_seconds(self, weights_gb: float) -> float:
        return weights_gb * GB / (self.spec["pcie_gb_s"] * GB * self.host["pcie_efficiency"])

    def load_seconds(self, weights_gb: float) -> float:
        """Disk to host memory, then (when it fits) host to GPU."""
        disk = weights_gb / self.host["disk_gb_s"]
        return disk + (self.pcie_seconds(weights_gb) if self.fits(weights_gb) else 0.0)


# -- the reel --------------------------------------------------------------------

def wan_pass_seconds(costs: dict[str, Any], gpu: GPU, width: int, height: int, frames: int) -> float:
    wan = costs["wan"]
    anchor, arch = wan["anchor"], wan["architecture"]
    anchor_pass = anchor["seconds"] / anchor["passes"]
    ratio = pass_flops(width, height, frames, arch) / pass_flops(anchor["width"], anchor["height"], anchor["frames"],
                                                                 arch)
    return anchor_pass * ratio * gpu.compute_scale


def motion_seconds(costs: dict[str, Any], gpu: GPU, clips: list[dict[str, Any]], preset: dict[str, Any],
                   width: int, height: int) -> tuple[float, dict[str, int], str]:
    """(seconds, expert passes of the reel, offload mode) for every clip under one residency."""
    wan = costs["wan"]
    weights = wan["weights_gb"]
    expert_gb = weights["transformer"]
    resident_gb = sum(v for k, v in weights.items() if k != "source")
    offload = "none" if gpu.fits(resident_gb) else ("model" if gpu.fits(expert_gb + weights["vae"]) else "group")
    total, passes = 0.0, {name: 0 for name in EXPERTS}
    for clip in clips:
        counts = expert_passes(preset["steps"], preset["guidance"], preset["guidance_2"], clip["flow_shift"],
                               wan["boundary_ratio"], wan["num_train_timesteps"])
        compute = wan_pass_seconds(costs, gpu, width, height, clip["frames"])
        if offload == "group":  # every pass streams its expert's weights, overlapped with compute
            per_pass = max(compute, gpu.pcie_seconds(expert_gb))
            total += per_pass * sum(counts.values())
        else:
            total += compute * sum(counts.values())
        if offload == "model":  # each expert and the text encoder move to the GPU once per clip
            total += gpu.pcie_seconds(weights["transformer"] + weights["transformer_2"] + weights["text_encoder"])
        for name in EXPERTS:
            passes[name] += counts[name]
    return total, passes, offload


def llm_decode_seconds(costs: dict[str, Any], gpu: GPU, tokens: int) -> float:
    """Memory-bound decoding: each token reads the active weights; with ``device_map="auto"`` (the Qwen
    backend's) the layers that do not fit stay in host memory and stream over PCIe for every token."""
    llm = costs["llm"]
    per_token = llm["active_params_b"] * 2 * GB / (gpu.spec["memory_tb_s"] * 1e12 * llm["decode_efficiency"])
    offloaded_gb = max(0.0, llm["weights_gb"] - gpu.usable_gb)
    return tokens * max(per_token, gpu.pcie_seconds(offloaded_gb))


def project(costs: dict[str, Any], gpu_name: str, preset: dict[str, Any], reel: dict[str, Any],
            gate: bool = False) -> dict[str, Any]:
    """Seconds per stage (model loads included) of ``reel`` on one GPU with one motion preset.

    ``reel``: width, height, duration_s, characters, narration_lines and clips (each flow_shift and frames).
    """
    gpu = GPU(gpu_name, costs)
    width, height, clips = reel["width"], reel["height"], reel["clips"]
    llm, kf, voice, music = costs["llm"], costs["keyframes"], costs["voice"], costs["music"]
    wan_gb = sum(v for k, v in costs["wan"]["weights_gb"].items() if k != "source")
    motion, passes, offload = motion_seconds(costs, gpu, clips, preset, width, height)
    stages = {
        "director": gpu.load_seconds(llm["weights_gb"]) + llm_decode_seconds(costs, gpu, llm["director_output_tokens"]),
        "keyframes": gpu.load_seconds(kf["weights_gb"]) + gpu.compute_scale * (
            reel["characters"] * kf["portrait_seconds_h100"] + len(clips) * kf["keyframe_seconds_h100"]),
        "motion": gpu.load_seconds(wan_gb) + motion,
        **({"gate": gpu.load_seconds(llm["weights_gb"])
            + llm_decode_seconds(costs, gpu, llm["critic_output_tokens"] * len(clips))} if gate else {}),
        "narration": gpu.load_seconds(voice["weights_gb"])
        + gpu.compute_scale * reel["narration_lines"] * voice["seconds_per_line_h100"],
        "music": gpu.load_seconds(music["weights_gb"])
        + gpu.compute_scale * music["seconds_per_reel_h100"] * reel["duration_s"] / 30.0,
    }
    loads = {"director": llm["weights_gb"], "keyframes": kf["weights_gb"], "motion": wan_gb,
             **({"gate": llm["weights_gb"]} if gate else {}), "narration": voice["weights_gb"],
             "music": music["weights_gb"]}
    return {
        "gpu": gpu_name,
        "stages_s": {name: round(seconds, 1) for name, seconds in stages.items()},
        "load_s": round(sum(gpu.load_seconds(gb) for gb in loads.values()), 1),
        "total_s": round(sum(stages.values()), 1),
        "expert_passes": passes,
        "pass_s": round(wan_pass_seconds(costs, gpu, width, height, clips[0]["frames"]), 2) if clips else 0.0,
        "motion_offload": offload,
        "llm_offloaded": not gpu.fits(llm["weights_gb"]),
    }
