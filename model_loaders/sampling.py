"""Sample-rate conversion and length fitting shared by the audio backends and the mix."""

from __future__ import annotations

import math

import numpy as np


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample along the time axis (axis 0) by the exact ratio ``sr_to / sr_from`` with a polyphase filter."""
    sr_from, sr_to = checked_sample_rate(sr_from), checked_sample_rate(sr_to)
    audio = np.asarray(audio, dtype=np.float32)
    if sr_from == sr_to or audio.shape[0] == 0:
        return audio.copy()
    from scipy import signal

    common = math.gcd(sr_from, sr_to)
    return signal.resample_poly(audio, sr_to // common, sr_from // common, axis=0).astype(np.float32, copy=False)


def checked_sample_rate(rate: int) -> int:
    if isinstance(rate, bool) or int(rate) != rate or rate <= 0:
        raise ValueError(f"sample rate must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def fit_length(audio: np.ndarray, n: int, sample_rate: int, fade_s: float = 0.05, fade_end: bool = False) -> np.ndarray:
    """``audio`` (samples first) cut or padded with silence to ``n`` samples, float32. A cut fades out over
    ``fade_s`` so it never clicks; ``fade_end`` fades the sound's own end even when nothing is cut (a model's
    render that may stop mid-note)."""
    kept = np.array(audio[:n], dtype=np.float32)
    if fade_end or audio.shape[0] > n:
        fade = min(len(kept), round(fade_s * sample_rate))
        ramp = np.cos(np.linspace(0.0, np.pi / 2, fade)) ** 2
        kept[len(kept) - fade:] *= ramp if kept.ndim == 1 else ramp[:, None]
    return np.pad(kept, [(0, n - len(kept))] + [(0, 0)] * (kept.ndim - 1))
