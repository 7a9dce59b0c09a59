"""The weights-free preview score: a procedural instrumental bed that follows the plan's mood.

A chord progression picked from the mood plays as a soft, slightly detuned stereo
pad over a root bass; a plucked arpeggio (and, for driving moods, a low pulse)
marks the tempo. Everything is additive sine synthesis in numpy, rendered in
one pass for the whole bed, so a 30 s bed takes a fraction of a second.

Clicks are designed out: every note starts and ends on a smooth envelope at
zero, consecutive chords crossfade with complementary raised-cosine gains on a
shared phase timeline (a note held across a chord change continues unbroken),
and the whole bed fades in and out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# (semitones above the key's tonic, chord quality)
Chord = tuple[int, str]

QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "sus2": (0, 2, 7),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "add9": (0, 4, 7, 14),
}


@dataclass(frozen=True)
class MoodStyle:
    name: str
    progressions: tuple[tuple[Chord, ...], ...]
    tempo_bpm: float
    pulse_per_beat: int  # arpeggio notes per beat
    pluck_decay_s: float
    low_pulse: bool  # a soft low thump on beats 1 and 3
    keywords: tuple[str, ...]


STYLES: tuple[MoodStyle, ...] = (
    MoodStyle(
        "tense", (((0, "min"), (1, "maj"), (0, "min"), (8, "maj")), ((0, "min"), (0, "min7"), (8, "maj"), (7, "maj"))),
        96, 2, 0.16, True, ("tense", "suspense", "thrill", "ominous", "danger", "anxious", "fear", "dread", "dark"),
    ),
    MoodStyle(
        "mysterious", (((0, "min"), (8, "maj"), (5, "min"), (7, "maj")), ((0, "min7"), (3, "maj7"), (8, "maj7"), (10, "sus2"))),
        80, 1, 0.45, False, ("myster", "eerie", "enigm", "noir", "secret", "haunt", "night", "curious"),
    ),
    MoodStyle(
        "melancholic", (((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")), ((0, "min"), (5, "min"), (8, "maj"), (7, "maj"))),
        68, 1, 0.5, False, ("melanch", "sad", "nostalg", "somber", "sombre", "lonely", "grief", "wistful", "bittersweet"),
    ),
    MoodStyle(
        "epic", (((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")), ((0, "min"), (10, "maj"), (8, "maj"), (10, "sus2"))),
        90, 2, 0.22, True, ("epic", "heroic", "grand", "triumph", "majestic", "battle", "adventure", "cinematic"),
    ),
    MoodStyle(
        "joyful", (((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")), ((0, "maj"), (5, "maj"), (0, "maj"), (7, "maj"))),
        112, 2, 0.2, False, ("joy", "happy", "playful", "fun", "cheer", "whimsical", "festive", "celebrat"),
    ),
    MoodStyle(
        "uplifting", (((5, "maj"), (0, "maj"), (7, "maj"), (9, "min")), ((0, "add9"), (7, "maj"), (9, "min7"), (5, "add9"))),
        104, 2, 0.28, False, ("uplift", "hope", "inspir", "optimis", "warm", "bright", "sunny"),
    ),
    MoodStyle(
        "romantic", (((0, "maj7"), (9, "min7"), (5, "maj7"), (7, "sus2")), ((0, "maj"), (4, "min"), (5, "maj7"), (7, "maj"))),
        76, 1, 0.5, False, ("romant", "love", "tender", "intimate", "passion"),
    ),
    MoodStyle(
        "calm", (((0, "maj7"), (5, "maj7")), ((0, "add9"), (7, "sus2"), (9, "min7"), (5, "maj7"))),
        70, 1, 0.6, False, ("calm", "peace", "seren", "tranquil", "gentle", "dream", "quiet", "relax", "meditat"),
    ),
    MoodStyle(
        "energetic", (((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")), ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj"))),
        124, 2, 0.14, True, ("energ", "action", "upbeat", "exciting", "fast", "intense", "urgent", "chase", "driving"),
    ),
)
NEUTRAL = MoodStyle(
    "neutral", (((0, "sus2"), (5, "add9"), (9, "min7"), (7, "sus2")),), 90, 1, 0.35, False, (),
)

FADE_S = 1.5
CROSSFADE_S = 0.6
PAD_LOWEST = 53  # the pad's close voicing stays within the octave from F3
BASS_LOWEST = 36  # the bass plays the root in the octave from C2
MAX_PARTIAL_HZ = 5000.0  # keeps the bed soft and far below any sample rate's Nyquist
PEAK = 0.5  # the bed is normalised to -6 dBFS; mixing sets its level


def mood_style(mood: str) -> MoodStyle:
    """The style whose name or keywords appear in ``mood`` (free text such as "tense, rainy night"); else neutral."""
    text = (mood or "").strip().lower()
    for style in STYLES:
        if style.name in text:
            return style
    for style in STYLES:
        if any(word in text for word in style.keywords):
            return style
    return NEUTRAL


def mood_tempo(mood: str) -> float:
    """The default tempo in BPM for ``mood``."""
    return float(mood_style(mood).tempo_bpm)


@dataclass(frozen=True)
class BedPlan:
    style: str
    tonic_midi: int
    tempo_bpm: float
    chord_s: float
    chords: tuple[tuple[float, tuple[int, ...], int], ...]  # (start_s, pad MIDI notes, bass MIDI note)
    arpeggio: tuple[int, ...]  # indices into each chord's pad notes, cycled per pulse step


def plan_music_bed(duration_s: float, mood: str, seed: int, tempo_bpm: float | None = None) -> BedPlan:
    """Choose key, progression, voicings and arpeggio for a bed: deterministic for ``seed``."""
    duration_s = _check_duration(duration_s)
    style = mood_style(mood)
    tempo = float(style.tempo_bpm if tempo_bpm is None else tempo_bpm)
    if not (math.isfinite(tempo) and 30.0 <= tempo <= 240.0):
        raise ValueError(f"tempo must be between 30 and 240 BPM, got {tempo_bpm}")
    rng = np.random.default_rng(_seed(seed))
    progression = style.progressions[int(rng.integers(len(style.progressions)))]
    tonic = 55 + int(rng.integers(0, 8))  # G3 .. D4
    bar_s = 4 * 60.0 / tempo
    chord_s = bar_s * (2 if bar_s < 2.4 else 1)  # chords last 2.4 s or more
    count = max(1, math.ceil(duration_s / chord_s))
    chords = tuple(
        (i * chord_s, *_voice(tonic, progression[i % len(progression)])) for i in range(count)
    )
    patterns = ((0, 1, 2, 1), (0, 2, 1, 2), (0, 1, 2, 3), (2, 1, 0, 1))
    return BedPlan(style.name, tonic, tempo, chord_s, chords, patterns[int(rng.integers(len(patterns)))])


def _voice(tonic: int, chord: Chord) -> tuple[tuple[int, ...], int]:
    """Close voicing in one fixed octave (so chords move by small steps) and the root in the bass octave."""
    root = tonic + chord[0]
    pad = sorted({PAD_LOWEST + (root + interval - PAD_LOWEST) % 12 for interval in QUALITIES[chord[1]]})
    return tuple(pad), BASS_LOWEST + (root - BASS_LOWEST) % 12


def _check_duration(duration_s: float) -> float:
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration_s!r}")
    return float(duration_s)


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    return int(seed) % 2**63


def render_music_bed(
    duration_s: float, mood: str, seed: int, tempo_bpm: float | None = None, sample_rate: int = 48000
) -> np.ndarray:
    """Render an instrumental bed as float32 stereo, shape ``(round(duration_s * sample_rate), 2)``."""
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample rate must be a whole number of Hz between 8000 and 192000, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    plan = plan_music_bed(duration_s, mood, seed, tempo_bpm)
    style = mood_style(plan.style)
    n = round(duration_s * sample_rate)
    bed = np.zeros((n, 2), dtype=np.float32)
    _add_pad(bed, plan, sample_rate)
    _add_arpeggio(bed, plan, style, sample_rate)
    if style.low_pulse:
        _add_low_pulse(bed, plan, sample_rate)
    bed *= _fade_in_out(n, sample_rate)[:, None]
    peak = float(np.max(np.abs(bed))) if n else 0.0
    if peak > 0:
        bed *= np.float32(PEAK / peak)
    return bed


# -- oscillators and envelopes ---------------------------------------------------------


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _sine(freq: float, start: int, length: int, sample_rate: int, block: int = 4096) -> np.ndarray:
    """``sin(2*pi*freq*t)`` for samples ``start .. start+length`` of the bed's shared timeline, in float32.

    Phase is exact in float64 at each block start and float32 only within a block,
    which keeps phase error near -90 dB while using numpy's fast float32 sine.
    """
    blocks = -(-length // block)
    block_phase = np.mod(freq * (start + block * np.arange(blocks)) / sample_rate, 1.0) * (2 * np.pi)
    within = (2 * np.pi * freq / sample_rate) * np.arange(block)
    phase = block_phase.astype(np.float32)[:, None] + within.astype(np.float32)[None, :]
    return np.sin(phase).ravel()[:length]


def _tone(freq: float, start: int, length: int, sample_rate: int, partials: tuple[float, ...]) -> np.ndarray:
    """A harmonic tone: partial k has amplitude ``partials[k-1]``; partials above ``MAX_PARTIAL_HZ`` are left out."""
    out = np.zeros(length, dtype=np.float32)
    for k, amplitude in enumerate(partials, start=1):
        if k * freq <= MAX_PARTIAL_HZ:
            out += np.float32(amplitude) * _sine(k * freq, start, length, sample_rate)
    return out


def _raised_cosine(length: int) -> np.ndarray:
    """Rises from 0 to 1 with zero slope at both ends."""
    if length <= 0:
        return np.zeros(0, dtype=np.float32)
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)).astype(np.float32)


def _fade_in_out(n: int, sample_rate: int) -> np.ndarray:
    fade = min(round(FADE_S * sample_rate), n // 3)
    gain = np.ones(n, dtype=np.float32)
    gain[:fade] = _raised_cosine(fade)
    if fade:
        gain[n - fade :] = _raised_cosine(fade)[::-1]
    return gain


# -- the three layers ----------------------------------------------------------------------

PAD_PARTIALS = (1.0, 0.3, 0.12)
BASS_PARTIALS = (1.0, 0.25)
PLUCK_PARTIALS = (1.0, 0.45, 0.2, 0.08)
DETUNE_CENTS = 6.0


def _add_pad(bed: np.ndarray, plan: BedPlan, sample_rate: int) -> None:
    """Each chord sounds over its span, crossfading into the next with complementary raised-cosine gains."""
    n = len(bed)
    chord_len = round(plan.chord_s * sample_rate)
    xfade = min(round(CROSSFADE_S * sample_rate), chord_len)
    detune = 2.0 ** (DETUNE_CENTS / 1200.0)
    for index, (_, pad_notes, bass) in enumerate(plan.chords):
        onset = index * chord_len  # whole samples, so each fade-out meets the next fade-in exactly
        first, last = max(0, onset - xfade // 2), min(n, onset + chord_len + xfade - xfade // 2)
        if first >= last:
            continue
        length = last - first
        left = np.zeros(length, dtype=np.float32)
        right = np.zeros(length, dtype=np.float32)
        for note in pad_notes:
            flat = _tone(_midi_hz(note) / detune, first, length, sample_rate, PAD_PARTIALS)
            sharp = _tone(_midi_hz(note) * detune, first, length, sample_rate, PAD_PARTIALS)
            left += 0.11 * flat + 0.06 * sharp  # the detuned pair leans apart: gentle width
            right += 0.06 * flat + 0.11 * sharp
        low = 0.2 * _tone(_midi_hz(bass), first, length, sample_rate, BASS_PARTIALS)
        envelope = _chord_envelope(length, fade_in=onset > 0, fade_out_at=onset + chord_len - xfade // 2 - first,
                                   xfade=xfade, has_next=onset + chord_len < n)
        bed[first:last, 0] += (left + low) * envelope
        bed[first:last, 1] += (right + low) * envelope


def _chord_envelope(length: int, fade_in: bool, fade_out_at: int, xfade: int, has_next: bool) -> np.ndarray:
    """1 across the chord, with raised-cosine ramps centred on its boundaries with neighbouring chords."""
    envelope = np.ones(length, dtype=np.float32)
    ramp = _raised_cosine(xfade)
    if fade_in:  # the bed may end inside this fade
        envelope[: min(xfade, length)] = ramp[:length]
    if has_next:
        envelope[fade_out_at:] = (1.0 - ramp)[: length - fade_out_at]
    return envelope


def _add_arpeggio(bed: np.ndarray, plan: BedPlan, style: MoodStyle, sample_rate: int) -> None:
    """Plucked chord tones an octave above the pad, one per pulse step, panned alternately left and right."""
    step_s = 60.0 / plan.tempo_bpm / style.pulse_per_beat
    steps = math.ceil(len(bed) / sample_rate / step_s)
    for step in range(steps):
        onset = round(step * step_s * sample_rate)
        _, pad_notes, _ = plan.chords[min(int(step * step_s / plan.chord_s), len(plan.chords) - 1)]
        note = pad_notes[plan.arpeggio[step % len(plan.arpeggio)] % len(pad_notes)] + 12
        accent = 1.0 if step % (4 * style.pulse_per_beat) == 0 else 0.7
        pan = 0.35 if step % 2 else -0.35
        _add_event(bed, onset, 0.09 * accent * _pluck(note, style.pluck_decay_s, sample_rate), pan)


def _add_low_pulse(bed: np.ndarray, plan: BedPlan, sample_rate: int) -> None:
    """A soft low thump on beats 1 and 3."""
    half_bar_s = 2 * 60.0 / plan.tempo_bpm
    thump = 0.35 * _thump(sample_rate)
    for beat in range(math.ceil(len(bed) / sample_rate / half_bar_s)):
        _add_event(bed, round(beat * half_bar_s * sample_rate), thump, 0.0)


def _add_event(bed: np.ndarray, onset: int, sound: np.ndarray, pan: float) -> None:
    """Add a mono sound at ``onset`` with a constant-power pan (-1 left .. 1 right)."""
    length = min(len(sound), len(bed) - onset)
    if length <= 0:
        return
    angle = (pan + 1.0) * np.pi / 4
    bed[onset : onset + length, 0] += np.float32(math.cos(angle) * math.sqrt(2)) * sound[:length]
    bed[onset : onset + length, 1] += np.float32(math.sin(angle) * math.sqrt(2)) * sound[:length]


@lru_cache(maxsize=128)
def _pluck(note: int, decay_s: float, sample_rate: int) -> np.ndarray:
    """A plucked tone: 5 ms raised-cosine attack, exponential decay, and a tail that fades to exactly zero."""
    length = round(min(4.0 * decay_s + 0.05, 1.2) * sample_rate)
    t = np.arange(length, dtype=np.float32) / np.float32(sample_rate)
    envelope = np.exp(-t / np.float32(decay_s))
    envelope[: round(0.005 * sample_rate)] *= _raised_cosine(round(0.005 * sample_rate))
    tail = round(0.3 * length)
    envelope[length - tail :] *= _raised_cosine(tail)[::-1]
    tone = _tone(_midi_hz(note), 0, length, sample_rate, PLUCK_PARTIALS)
    return _read_only(tone * envelope)


@lru_cache(maxsize=8)
def _thump(sample_rate: int) -> np.ndarray:
    """A low sine gliding from 70 to 45 Hz over a 0.35 s decay; starts and ends at zero."""
    length = round(0.45 * sample_rate)
    t = np.arange(length) / sample_rate
    freq = 45.0 + 25.0 * np.exp(-t / 0.06)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    envelope = np.exp(-t / 0.12)
    envelope[: round(0.004 * sample_rate)] *= _raised_cosine(round(0.004 * sample_rate))
    tail = round(0.2 * length)
    envelope[length - tail :] *= _raised_cosine(tail)[::-1]
    return _read_only((np.sin(phase) * envelope).astype(np.float32))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # cached and shared between renders
    return array
