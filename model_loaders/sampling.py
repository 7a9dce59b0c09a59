"""Sample-rate conversion shared by the audio backends and the mix (exact ratios, polyphase filter)."""

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
