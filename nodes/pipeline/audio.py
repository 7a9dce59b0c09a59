"""Mix and master the reel's sound: narration placement, ducking, loudness and true peak.

Plain functions that run without ComfyUI; the Mix stage and node (``mix.py``)
and the narration stage (``voice.py``) use them.

Conventions: audio is float32, shaped ``(n,)`` for mono or ``(n, channels)``;
time is counted in samples wherever it must be exact, and reported in seconds.
Loudness is ITU-R BS.1770-4 integrated loudness as measured by pyloudnorm;
true peak is the peak of the 4x oversampled signal.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...model_loaders.sampling import checked_sample_rate, fit_length, resample
from .rundir import atomic_write

# scipy.signal, scipy.ndimage, pyloudnorm and soundfile are imported where used:
# together they take about a second to import, which ComfyUI's start-up should not pay.

TRUE_PEAK_OVERSAMPLING = 4
RUN_GAP = 4096  # places to oversample closer than this share one window (64 to 4096 measured alike on a reel's mix)
MIN_TARGET_LUFS, MAX_TARGET_LUFS = -40.0, -5.0
MIN_CEILING_DBTP, MAX_CEILING_DBTP = -20.0, 0.0
SILENCE_LUFS = -70.0  # BS.1770's absolute gate: anything quieter measures as silence

MAX_SPEECH_SPEED = 1.25  # gentlest time compression that still sounds natural
LINE_TAIL_S = 0.15  # silence kept between a line's end and its shot's end, and before the reel's end
LINE_GAP_S = 0.2  # the least silence between two lines when one pushes the next


def _db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db) / 20.0)


# -- measurement --------------------------------------------------------------


def _checked_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty array shaped (samples,) or (samples, channels), got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{what} must hold floating-point samples, got {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{what} contains NaN or infinite samples")
    return audio


def integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS) per ITU-R BS.1770-4, gated; ``-inf`` for silence. Needs at least 0.4 s."""
    import pyloudnorm

    audio = _checked_audio(audio)
    sample_rate = checked_sample_rate(sample_rate)
    meter = pyloudnorm.Meter(sample_rate)
    if audio.shape[0] < meter.block_size * sample_rate:
        raise ValueError(f"loudness needs at least {meter.block_size} s of audio, got {audio.shape[0] / sample_rate:.3f} s")
    return float(meter.integrated_loudness(audio.astype(np.float64)))


def true_peak_dbtp(audio: np.ndarray, sample_rate: int) -> float:
    """True peak in dBTP: the highest magnitude of the signal oversampled 4x (and of the samples themselves)."""
    checked_sample_rate(sample_rate)
    return _amplitude_db(_true_peak(_checked_audio(audio)))


@functools.cache
def _oversampling() -> tuple[np.ndarray, float, int]:
    """The interpolation filter ``resample_poly`` designs by default for 4x (81 taps, cutoff at the old Nyquist,
    Kaiser β 5, float32 as the samples), given to it explicitly so ``PeakEnvelope`` knows its largest polyphase
    gain (sum of absolute taps, as ``resample_poly`` scales them) and its reach in input samples each side."""
    from scipy import signal

    taps = 2 * 10 * TRUE_PEAK_OVERSAMPLING + 1
    design = np.asarray(signal.firwin(taps, 1.0 / TRUE_PEAK_OVERSAMPLING, window=("kaiser", 5.0)), dtype=np.float32)
    scaled = design * TRUE_PEAK_OVERSAMPLING
    gain = max(float(np.abs(scaled[phase::TRUE_PEAK_OVERSAMPLING]).sum()) for phase in range(TRUE_PEAK_OVERSAMPLING))
    return design, gain, taps // TRUE_PEAK_OVERSAMPLING + 2


def _oversampled_magnitude(channel: np.ndarray) -> np.ndarray:
    from scipy import signal

    design = _oversampling()[0].copy()  # some SciPy versions scale the window they are given in place
    return np.abs(signal.resample_poly(channel, TRUE_PEAK_OVERSAMPLING, 1, window=design))


def _channels(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) float32, each row contiguous."""
    n = audio.shape[0]
    return np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(n, -1).T)


def _true_peak(audio: np.ndarray) -> float:
    """The true peak (linear), exactly, oversampling only where a value between samples could exceed the
    highest sample (``PeakEnvelope``). A mastered mix has few such places; its whole envelope took twice as
    long."""
    return PeakEnvelope(audio).peak()


class PeakEnvelope:
    """Per input sample, the largest magnitude from it up to the next sample at 4x oversampling, over all
    channels; oversampled only where it is asked for.

    An interpolated value is at most the filter's largest polyphase gain times the largest magnitude within
    the filter's reach: that bound stands in for the envelope until a caller asks for the exact values above
    some level (``above``), and then only the places whose bound exceeds it are oversampled, each with the
    filter's whole context on both sides, so their values are those of the whole signal oversampled, bit for
    bit. A limiter only acts where the envelope exceeds its threshold (``limiter_db``), and the peak is at
    least the highest sample: neither needs the rest.
    """

    def __init__(self, audio: np.ndarray):
        from scipy import ndimage

        _, gain, self._reach = _oversampling()
        self._channels = _channels(audio)
        magnitude = np.abs(self._channels).max(axis=0)
        self.sample_peak = float(magnitude.max())
        self._bound = ndimage.maximum_filter1d(magnitude, size=2 * self._reach + 1, mode="constant") * gain
        self._values = self._bound.copy()  # exact where ``_exact``, the bound elsewhere: never below the envelope
        self._exact = np.zeros(len(magnitude), dtype=bool)

    def above(self, level: float) -> np.ndarray:
        """The envelope (read-only), exact wherever it could exceed ``level`` (linear); elsewhere a value no
        higher than ``level`` and no lower than the envelope. Later calls reuse what earlier ones oversampled."""
        runs = _runs((self._bound > level) & ~self._exact, RUN_GAP)
        if runs:
            n = len(self._values)
            windows = [(max(0, start - 2 * self._reach), min(n, end + 2 * self._reach)) for start, end in runs]
            exact = [np.abs(self._channels[:, start:end]).max(axis=0) for start, end in runs]
            for channel in self._channels:
                for values, inside in zip(exact, _oversampled_runs(channel, windows, runs)):
                    for phase in range(TRUE_PEAK_OVERSAMPLING):  # strided maxima: far faster than max over an axis
                        np.maximum(values, inside[phase::TRUE_PEAK_OVERSAMPLING], out=values)
            for (start, end), values in zip(runs, exact):
                self._values[start:end], self._exact[start:end] = values, True
        view = self._values.view()
        view.flags.writeable = False
        return view

    def limiter_db(self, threshold_db: float) -> np.ndarray:
        """The envelope in dB, exact wherever a limiter with ``threshold_db`` acts on it (asked for a little
        below, so the round trip through dB cannot make a bound look like a peak)."""
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(self.above(_db_to_gain(threshold_db - 0.01)))

    def peak(self) -> float:
        """The envelope's maximum, exactly."""
        values = self.above(self.sample_peak)
        return max(self.sample_peak, float(values[self._exact].max()) if self._exact.any() else 0.0)


def _oversampled_runs(channel: np.ndarray, windows: list[tuple[int, int]],
                      runs: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Each run's oversampled magnitudes, its window (the run with the filter's whole context on both sides) cut
    from ``channel``: all windows in one ``resample_poly`` call, end to end. An output sample only sees input
    within the filter's reach, so a run's values are the same sums as the window's alone (or the whole
    signal's); one call instead of one per run saves ~0.2 ms of SciPy's set-up for each of hundreds of runs."""
    over = _oversampled_magnitude(np.concatenate([channel[lo:hi] for lo, hi in windows]))
    offset = 0
    for (lo, hi), (start, end) in zip(windows, runs):
        yield over[(offset + start - lo) * TRUE_PEAK_OVERSAMPLING:(offset + end - lo) * TRUE_PEAK_OVERSAMPLING]
        offset += hi - lo


def _runs(mask: np.ndarray, gap: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each run of True in ``mask``, runs closer than ``gap`` joined into one."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    runs: list[tuple[int, int]] = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if runs and start - runs[-1][1] < gap:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def _amplitude_db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


# -- narration placement --------------------------------------------------------


@dataclass
class NarrationLine:
    """One shot's spoken line (mono float32 at ``sample_rate``) and the shot's window in the reel."""

    shot_id: str
    start_s: float
    end_s: float
    audio: np.ndarray
    sample_rate: int
    text: str = ""

    def __post_init__(self) -> None:
        self.audio = np.asarray(self.audio, dtype=np.float32)
        if self.audio.ndim != 1:
            raise ValueError(f"narration for shot {self.shot_id!r} must be mono (samples,), got shape {self.audio.shape}")
        if not np.all(np.isfinite(self.audio)):
            raise ValueError(f"narration for shot {self.shot_id!r} contains NaN or infinite samples")
        self.sample_rate = checked_sample_rate(self.sample_rate)
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s) and 0 <= self.start_s < self.end_s):
            raise ValueError(f"shot {self.shot_id!r} window must satisfy 0 <= start < end, got {self.start_s}..{self.end_s}")


Resynthesize = Callable[[NarrationLine, float], NarrationLine]


@dataclass
class _Slot:
    """A line being placed; all positions in output samples."""

    line: NarrationLine
    audio: np.ndarray
    nominal: int  # where the shot wants the line to start: shot start + lead-in
    limit: int  # where the line should have ended: shot end - tail
    speed: float = 1.0
    start: int = 0
    action: str = "fit"
    compress_tried: bool = False
    text: str | None = None  # what is spoken, when a trim left words out
    left_out: str = ""

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


def place_narration(
    lines: Sequence[NarrationLine],
    total_s: float,
    sample_rate: int = 48000,
    lead_in_s: float = 0.25,
    resynthesize: Resynthesize | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Lay the lines on one mono track of exactly ``round(total_s * sample_rate)`` samples.

    Each line starts at its shot's start plus ``lead_in_s``, to the sample. Audio is
    never cut mid-word. When a line would run past its shot (less a short tail), in order:

    1. ``compressed``: it is spoken again faster through ``resynthesize(line, speed)``,
       at most 1.25x (the voice engine's own rate control, so pitch is kept);
    2. ``spilled``: it runs on into the next shot when that shot's line starts late
       enough (or there is none) and the reel has room;
    3. ``pushed_next``: the next line starts later, cascading while the reel has room;
    4. ``overrun``: the reel cannot absorb it, so the last lines move earlier, back
       to back, the final one ending a short tail before the reel's end;
    5. ``trimmed``: the lines cannot all fit in the reel even back to back, so the line
       that runs furthest past its own shot is spoken again at 1.25x with the most
       whole words that fit its shot (found by re-synthesising shorter word prefixes),
       and the lines are laid out again; repeated until they fit. Without
       ``resynthesize`` such a line is left out whole.

    Returns the track and one report per line, in time order: ``shot_id``, ``text``
    (what is spoken), actual ``start_s`` and ``end_s``, ``shift_s`` (actual minus intended
    start), ``speed`` and ``action``; a trimmed line also has ``left_out``, the words no
    longer spoken. Never raises for narration that is too long: the pictures are done.
    """
    sample_rate = checked_sample_rate(sample_rate)
    if not (math.isfinite(total_s) and total_s > 0):
        raise ValueError(f"reel length must be a positive number of seconds, got {total_s}")
    if not (math.isfinite(lead_in_s) and lead_in_s >= 0):
        raise ValueError(f"lead-in must be zero or more seconds, got {lead_in_s}")
    total = round(total_s * sample_rate)
    slots = _slots(lines, total_s, sample_rate, lead_in_s)
    gap = round(LINE_GAP_S * sample_rate)
    reel_limit = total - round(LINE_TAIL_S * sample_rate)

    while not _lay_out(slots, total, gap, reel_limit, sample_rate, resynthesize):
        _trim_furthest_over(slots, gap, reel_limit, sample_rate, resynthesize)

    track = np.zeros(total, dtype=np.float32)
    for slot in slots:
        track[slot.start : slot.end] += slot.audio
    return track, [_report(slot, sample_rate) for slot in slots]


def _slots(lines: Sequence[NarrationLine], total_s: float, sample_rate: int, lead_in_s: float) -> list[_Slot]:
    ordered = sorted(lines, key=lambda line: line.start_s)
    for before, after in itertools.pairwise(ordered):
        if after.start_s < before.end_s - 1e-6:
            raise ValueError(f"shots {before.shot_id!r} and {after.shot_id!r} overlap ({before.end_s} s > {after.start_s} s)")
    for line in ordered:
        if line.end_s > total_s + 1e-6:
            raise ValueError(f"shot {line.shot_id!r} ends at {line.end_s} s, after the reel's {total_s} s")
    return [
        _Slot(
            line=line,
            audio=resample(line.audio, line.sample_rate, sample_rate),
            nominal=round((line.start_s + lead_in_s) * sample_rate),
            limit=round((line.end_s - LINE_TAIL_S) * sample_rate),
        )
        for line in ordered
    ]


def _lay_out(slots: list[_Slot], total: int, gap: int, reel_limit: int, sample_rate: int,
             resynthesize: Resynthesize | None) -> bool:
    """Place every line (steps 1 to 4 of ``place_narration``); False when they cannot all fit in the reel."""
    for slot in slots:
        slot.start = min(slot.nominal, total)
    spoken = [slot for slot in slots if len(slot.audio)]  # a silent line takes no room and pushes nothing
    cursor = 0
    for i, slot in enumerate(spoken):
        slot.start = max(slot.nominal, cursor)
        _compress_to_fit(slot, sample_rate, resynthesize)
        following = spoken[i + 1].nominal if i + 1 < len(spoken) else None
        slot.action = _overrun_action(slot, following, gap, reel_limit)
        cursor = slot.end + gap
    return _pull_back_from_reel_end(spoken, reel_limit, gap)


def _compress_to_fit(slot: _Slot, sample_rate: int, resynthesize: Resynthesize | None) -> None:
    """Speak the line faster (up to ``MAX_SPEECH_SPEED``) when it would outrun its shot; once per line."""
    room = slot.limit - slot.start
    if resynthesize is None or len(slot.audio) <= room or slot.compress_tried:
        return
    slot.compress_tried = True
    needed = len(slot.audio) / room if room > 0 else MAX_SPEECH_SPEED
    speeds = [min(MAX_SPEECH_SPEED, math.ceil(needed * 100) / 100)]
    if speeds[0] < MAX_SPEECH_SPEED:
        speeds.append(MAX_SPEECH_SPEED)  # speaking rate does not scale duration exactly; one firmer try
    for speed in speeds:
        faster = resynthesize(slot.line, speed)
        if not isinstance(faster, NarrationLine):
            raise TypeError(f"resynthesize must return a NarrationLine, got {type(faster).__name__}")
        audio = resample(faster.audio, faster.sample_rate, sample_rate)
        if 0 < len(audio) < len(slot.audio):
            slot.audio, slot.speed = audio, speed
        if len(slot.audio) <= room:
            return


def _overrun_action(slot: _Slot, following_nominal: int | None, gap: int, reel_limit: int) -> str:
    if slot.left_out:
        return "trimmed"
    if slot.end <= slot.limit:
        return "compressed" if slot.speed > 1.0 else "fit"
    if following_nominal is None:
        return "spilled" if slot.end <= reel_limit else "overrun"
    return "spilled" if slot.end + gap <= following_nominal else "pushed_next"


def _pull_back_from_reel_end(slots: list[_Slot], reel_limit: int, gap: int) -> bool:
    """Move the last lines earlier, back to back, until the final one ends by ``reel_limit``; False when even
    back to back they need more than the reel."""
    limit = reel_limit
    for slot in reversed(slots):
        if slot.end <= limit:
            return True
        slot.start = limit - len(slot.audio)
        if slot.start < 0:
            return False
        if slot.end > slot.limit and not slot.left_out:
            slot.action = "overrun"
        limit = slot.start - gap
    return True


def _own_rooms(slots: list[_Slot], gap: int, reel_limit: int) -> list[int]:
    """Per line, the samples from its intended start to its shot's limit (and a gap before the next line, and
    the reel's limit): lines that all fit their own rooms always fit the reel."""
    rooms = []
    for i, slot in enumerate(slots):
        bound = min(slot.limit, reel_limit, slots[i + 1].nominal - gap if i + 1 < len(slots) else reel_limit)
        rooms.append(max(0, bound - slot.nominal))
    return rooms


def _trim_furthest_over(slots: list[_Slot], gap: int, reel_limit: int, sample_rate: int,
                        resynthesize: Resynthesize | None) -> None:
    """Trim the line that runs furthest past its own room to the most whole words that fit it (at least one
    word fewer, so that trimming always ends)."""
    spoken = [slot for slot in slots if len(slot.audio)]
    rooms = _own_rooms(spoken, gap, reel_limit)
    slot, room = max(zip(spoken, rooms), key=lambda pair: len(pair[0].audio) - pair[1])
    text = (slot.text if slot.text is not None else slot.line.text).strip()
    prefixes = word_prefixes(text) if resynthesize is not None else []
    kept, audio, speed = "", np.zeros(0, dtype=np.float32), slot.speed
    low, high = 0, len(prefixes)  # binary search: the longest prefix whose speech fits ``room``
    while low < high:
        middle = (low + high + 1) // 2
        candidate = _spoken(slot.line, prefixes[middle - 1], sample_rate, resynthesize)
        if len(candidate) <= room:
            low, kept, audio, speed = middle, prefixes[middle - 1], candidate, MAX_SPEECH_SPEED
        else:
            high = middle - 1
    slot.left_out = " ".join([text[len(kept):].strip(), slot.left_out]).strip()  # a second trim cuts earlier
    slot.text, slot.audio, slot.speed, slot.action = kept, audio, speed, "trimmed"
    slot.compress_tried = True  # compressing again would speak the whole line


def _spoken(line: NarrationLine, text: str, sample_rate: int, resynthesize: Resynthesize) -> np.ndarray:
    shorter = NarrationLine(line.shot_id, line.start_s, line.end_s, line.audio, line.sample_rate, text)
    spoken = resynthesize(shorter, MAX_SPEECH_SPEED)
    if not isinstance(spoken, NarrationLine):
        raise TypeError(f"resynthesize must return a NarrationLine, got {type(spoken).__name__}")
    return resample(spoken.audio, spoken.sample_rate, sample_rate)


_WORD_END = re.compile(r"(?<=[\s、。，！？；：])")


def word_prefixes(text: str) -> list[str]:
    """The shorter versions of ``text`` that end at a word boundary (a space, or CJK punctuation for scripts
    written without spaces), shortest first; the whole text is not one of them."""
    pieces = [piece for piece in _WORD_END.split(text.strip()) if piece.strip()]
    return ["".join(pieces[:k]).strip() for k in range(1, len(pieces))]


def _report(slot: _Slot, sample_rate: int) -> dict[str, Any]:
    report = {
        "shot_id": slot.line.shot_id,
        "text": slot.text if slot.text is not None else slot.line.text,
        "start_s": slot.start / sample_rate,
        "end_s": slot.end / sample_rate,
        "shift_s": (slot.start - slot.nominal) / sample_rate,
        "speed": slot.speed,
        "action": slot.action,
    }
    if slot.left_out:
        report["left_out"] = slot.left_out
    return report


# -- ducking ----------------------------------------------------------------------


def speech_envelope(
    speech: np.ndarray,
    sample_rate: int,
    attack_s: float = 0.08,
    release_s: float = 0.4,
    hold_s: float = 0.35,
    threshold_db: float = -35.0,
) -> np.ndarray:
    """How far to duck at each sample, from 0 (no speech near) to 1 (speech sounding).

    Speech is detected in 10 ms frames louder than ``threshold_db`` below the
    loudest frame; pauses shorter than ``hold_s`` count as speech so the music
    does not pump between words. The curve is offline look-ahead: a raised-cosine
    ramp of ``attack_s`` reaches full depth exactly at each onset, and a ramp of
    ``release_s`` rises after each phrase ends.
    """
    speech = _checked_audio(speech, "speech")
    if speech.ndim != 1:
        raise ValueError(f"speech must be mono (samples,), got shape {speech.shape}")
    sample_rate = checked_sample_rate(sample_rate)
    if attack_s <= 0 or release_s <= 0 or hold_s < 0:
        raise ValueError("attack and release must be positive and hold zero or more seconds")
    active = _speech_activity(speech, sample_rate, hold_s, threshold_db)
    if not active.any():
        return np.zeros(len(speech), dtype=np.float32)
    until_next, since_last = _distance_to_activity(active)
    attack = _raised_cosine_falloff(until_next / (attack_s * sample_rate))
    release = _raised_cosine_falloff(since_last / (release_s * sample_rate))
    return np.maximum(attack, release).astype(np.float32)


def _speech_activity(speech: np.ndarray, sample_rate: int, hold_s: float, threshold_db: float) -> np.ndarray:
    """Per-sample speech activity from 10 ms frame RMS, with short pauses bridged."""
    hop = max(1, round(0.01 * sample_rate))
    frames = -(-len(speech) // hop)
    padded = np.zeros(frames * hop, dtype=np.float64)
    padded[: len(speech)] = speech
    rms = np.sqrt(np.mean(padded.reshape(frames, hop) ** 2, axis=1))
    loudest = rms.max()
    if loudest <= 1e-5:  # quieter than -100 dBFS: nothing is being said
        return np.zeros(len(speech), dtype=bool)
    active = rms > loudest * _db_to_gain(threshold_db)
    active = _bridge_short_gaps(active, round(hold_s * sample_rate / hop))
    return np.repeat(active, hop)[: len(speech)]


def _bridge_short_gaps(active: np.ndarray, max_gap: int) -> np.ndarray:
    on = np.flatnonzero(active)
    if on.size < 2 or max_gap <= 0:
        return active
    gaps = np.diff(on) - 1
    short = (gaps > 0) & (gaps <= max_gap)
    bridged = active.copy()
    for after, length in zip(on[:-1][short], gaps[short]):
        bridged[after + 1 : after + 1 + length] = True
    return bridged


def _distance_to_activity(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples until the next active sample and since the last one (0 on active samples, huge where none)."""
    n = len(active)
    index = np.arange(n)
    far = 4 * n + 1
    last = np.maximum.accumulate(np.where(active, index, -far))
    following = np.minimum.accumulate(np.where(active, index, 2 * far)[::-1])[::-1]
    return (following - index).astype(np.float64), (index - last).astype(np.float64)


def _raised_cosine_falloff(x: np.ndarray) -> np.ndarray:
    """1 at x=0 falling smoothly (zero slope at both ends) to 0 at x>=1."""
    return 0.5 * (1.0 + np.cos(np.pi * np.clip(x, 0.0, 1.0)))


def duck(
    music: np.ndarray,
    speech: np.ndarray,
    sample_rate: int,
    depth_db: float = -12.0,
    attack_s: float = 0.08,
    release_s: float = 0.4,
) -> np.ndarray:
    """Lower ``music`` by ``depth_db`` wherever ``speech`` (mono, same length) sounds, along a smooth gain curve."""
    music = _checked_audio(music, "music")
    if music.shape[0] != len(speech):
        raise ValueError(f"music and speech must be the same length, got {music.shape[0]} and {len(speech)} samples")
    if not (math.isfinite(depth_db) and depth_db <= 0):
        raise ValueError(f"ducking depth must be zero or negative dB, got {depth_db}")
    amount = speech_envelope(speech, sample_rate, attack_s, release_s)
    gain = _db_to_gain(depth_db * amount.astype(np.float64))
    if music.ndim == 2:
        gain = gain[:, None]
    return (music * gain).astype(np.float32)


# -- mastering --------------------------------------------------------------------


LUFS_TOLERANCE = 0.1  # aim well inside the promised ±0.5 LU
LIMITER_MARGIN_DB = 0.3  # limiter threshold below the ceiling: gain applied between samples can nudge peaks up
MAX_MASTER_PASSES = 12


def _limiter_gain_db(
    envelope_db: np.ndarray, sample_rate: int, threshold_db: float, lookahead_s: float = 0.005, release_s: float = 0.05
) -> np.ndarray:
    """The limiter's gain curve in dB: never above what any sample needs, smooth, and down before each peak.

    A minimum filter spreads each sample's need over the look-ahead on both sides;
    two moving averages inside that span turn the steps into smooth ramps that are
    fully down when the peak arrives. Gain reduction then decays exponentially
    (in dB) with time constant ``release_s``.
    """
    from scipy import ndimage

    half = max(1, round(lookahead_s * sample_rate / 2))
    need_db = np.minimum(0.0, threshold_db - envelope_db)
    held = ndimage.minimum_filter1d(need_db, size=4 * half + 1, mode="nearest")
    smooth = ndimage.uniform_filter1d(held, size=2 * half + 1, mode="nearest")
    reduction = np.maximum(-ndimage.uniform_filter1d(smooth, size=2 * half + 1, mode="nearest"), 0.0)
    return -_exponential_release(reduction, release_s * sample_rate)


def _exponential_release(reduction: np.ndarray, time_constant: float) -> np.ndarray:
    """``out[n] = max over k <= n of reduction[k] * exp(-(n - k) / time_constant)``, vectorised in the log domain."""
    steps = np.arange(len(reduction)) / time_constant
    with np.errstate(divide="ignore"):
        return np.exp(np.maximum.accumulate(np.log(reduction) + steps) - steps)


def _apply_gain_db(audio: np.ndarray, gain_db: float | np.ndarray) -> np.ndarray:
    gain = np.asarray(_db_to_gain(gain_db), dtype=np.float32)
    if gain.ndim == 1 and audio.ndim == 2:
        gain = gain[:, None]
    return (audio * gain).astype(np.float32)


def master(
    audio: np.ndarray, sample_rate: int, target_lufs: float = -18.0, true_peak_dbtp: float = -1.0
) -> tuple[np.ndarray, dict[str, float]]:
    """Bring ``audio`` to ``target_lufs`` integrated (within 0.5 LU) with true peak at or below ``true_peak_dbtp``.

    Gain sets the loudness; when that gain would push the true peak over the
    ceiling, the look-ahead limiter takes the peaks down and the gain is solved
    again (limiting lowers loudness a little) until both hold. Loudness is always
    measured on the result, and so is true peak once the limiter has acted.
    Returns float32 audio and ``{integrated_lufs, true_peak_dbtp, gain_db,
    limiter_max_reduction_db}``; ``ValueError`` for silent or non-finite audio, a
    target outside [-40, -5] LUFS, or a target the ceiling makes unreachable.
    """
    _check_master_targets(target_lufs, true_peak_dbtp)
    source = _checked_audio(audio).astype(np.float32)
    sample_rate = checked_sample_rate(sample_rate)
    loudness = integrated_lufs(source, sample_rate)
    if not loudness > SILENCE_LUFS:
        raise ValueError(f"cannot master silent audio (integrated loudness {loudness} LUFS, below {SILENCE_LUFS})")
    envelope = PeakEnvelope(source)
    source_peak_db = _amplitude_db(envelope.peak())

    gain_db = target_lufs - loudness
    threshold = true_peak_dbtp - LIMITER_MARGIN_DB
    previous: tuple[float, float] | None = None
    for _ in range(MAX_MASTER_PASSES):
        if source_peak_db + gain_db <= threshold:
            # True peak is a linear filter's output, so plain gain moves it by exactly gain_db.
            out, reduction, peak = _apply_gain_db(source, gain_db), 0.0, source_peak_db + gain_db
        else:
            curve = _limiter_gain_db(envelope.limiter_db(threshold - gain_db) + gain_db, sample_rate, threshold)
            out, reduction = _apply_gain_db(source, gain_db + curve), float(-curve.min())
            peak = _amplitude_db(_true_peak(out))
        loudness = integrated_lufs(out, sample_rate)
        if abs(loudness - target_lufs) <= LUFS_TOLERANCE and peak <= true_peak_dbtp:
            return out, {
                "integrated_lufs": loudness,
                "true_peak_dbtp": peak,
                "gain_db": gain_db,
                "limiter_max_reduction_db": reduction,
            }
        if peak > true_peak_dbtp:
            threshold -= peak - true_peak_dbtp + 0.05
        gain_db, previous = _next_gain(gain_db, loudness, target_lufs, previous), (gain_db, loudness)
    raise ValueError(
        f"could not reach {target_lufs} LUFS under a {true_peak_dbtp} dBTP ceiling (got {loudness:.2f} LUFS, "
        f"{peak:.2f} dBTP): the audio is too dense for that target; choose a lower target"
    )


def _check_master_targets(target_lufs: float, ceiling_dbtp: float) -> None:
    if not (math.isfinite(target_lufs) and MIN_TARGET_LUFS <= target_lufs <= MAX_TARGET_LUFS):
        raise ValueError(f"target loudness must be between {MIN_TARGET_LUFS} and {MAX_TARGET_LUFS} LUFS, got {target_lufs}")
    if not (math.isfinite(ceiling_dbtp) and MIN_CEILING_DBTP <= ceiling_dbtp <= MAX_CEILING_DBTP):
        raise ValueError(f"true-peak ceiling must be between {MIN_CEILING_DBTP} and {MAX_CEILING_DBTP} dBTP, got {ceiling_dbtp}")


def _next_gain(gain_db: float, loudness: float, target: float, previous: tuple[float, float] | None) -> float:
    """Secant step on loudness(gain): limiting makes loudness grow slower than gain, so plain steps would crawl."""
    slope = 1.0
    if previous is not None and gain_db != previous[0]:
        slope = float(np.clip((loudness - previous[1]) / (gain_db - previous[0]), 0.1, 1.0))
    return gain_db + (target - loudness) / slope


# -- writing and the whole mix ------------------------------------------------------


WAV_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, subtype: str = "PCM_24") -> Path:
    """Write a WAV file atomically (temporary file, then rename). PCM subtypes clip to [-1, 1]."""
    import soundfile

    audio = _checked_audio(audio)
    sample_rate = checked_sample_rate(sample_rate)
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"WAV subtype must be one of {', '.join(WAV_SUBTYPES)}, got {subtype!r}")
    if subtype != "FLOAT":
        audio = np.clip(audio, -1.0, 1.0)
    return atomic_write(Path(path), lambda tmp: soundfile.write(tmp, audio, sample_rate, subtype=subtype, format="WAV"))


def mix_reel(
    speech: np.ndarray,
    music: np.ndarray,
    sample_rate: int = 48000,
    target_lufs: float = -18.0,
    music_level_db: float = -14.0,
    duck_db: float = -12.0,
    true_peak_dbtp: float = -1.0,
) -> tuple[np.ndarray, dict[str, float | None]]:
    """Mix mono narration (centred) over a stereo music bed, duck the bed under it, and master.

    ``music_level_db`` is the bed's loudness *under* narration, relative to the
    narration's loudness; between lines the bed comes up by ``-duck_db``. The music
    is fitted to the narration's length (trimmed with a 50 ms fade, or padded
    with silence). Returns the mastered ``(samples, 2)`` mix and the master report
    plus ``speech_lufs``, ``music_lufs`` and ``music_gain_db``.
    """
    sample_rate = checked_sample_rate(sample_rate)
    speech = _checked_audio(speech, "speech")
    if speech.ndim != 1:
        raise ValueError(f"speech must be mono (samples,), got shape {speech.shape}")
    bed = _stereo(fit_length(_checked_audio(music, "music"), len(speech), sample_rate))
    voice = np.repeat(speech.astype(np.float32)[:, None], 2, axis=1)

    speech_lufs = integrated_lufs(voice, sample_rate)
    music_lufs = integrated_lufs(bed, sample_rate)
    music_gain_db = 0.0
    if speech_lufs > SILENCE_LUFS and music_lufs > SILENCE_LUFS:
        music_gain_db = speech_lufs + music_level_db - duck_db - music_lufs
        bed = duck(bed * np.float32(_db_to_gain(music_gain_db)), speech, sample_rate, duck_db)
    mixed, report = master(voice + bed, sample_rate, target_lufs, true_peak_dbtp)
    return mixed, {
        **report,
        "speech_lufs": _finite_or_none(speech_lufs),
        "music_lufs": _finite_or_none(music_lufs),
        "music_gain_db": music_gain_db,
    }


def _stereo(audio: np.ndarray) -> np.ndarray:
    if audio.ndim == 1:
        return np.repeat(audio[:, None], 2, axis=1).astype(np.float32)
    if audio.shape[1] == 1:
        return np.repeat(audio, 2, axis=1).astype(np.float32)
    if audio.shape[1] != 2:
        raise ValueError(f"music must be mono or stereo, got {audio.shape[1]} channels")
    return audio.astype(np.float32)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
