"""The weights-free sound path: eSpeak NG speech, the synth music bed, placement, ducking, mastering.

Loudness is checked against pyloudnorm directly and true peak against an
independent 4x oversampling, never only against the code's own report.
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pyloudnorm
import pytest
import soundfile
from cinereel.model_loaders.espeak import EspeakVoice
from cinereel.model_loaders.synth import mood_style, mood_tempo, plan_music_bed, render_music_bed
from cinereel.nodes.pipeline.audio import (
    LINE_GAP_S,
    LINE_TAIL_S,
    NarrationLine,
    duck,
    integrated_lufs,
    master,
    mix_reel,
    place_narration,
    resample,
    speech_envelope,
    true_peak_dbtp,
    write_wav,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

SR = 48000

SAMPLES = {
    "en-US": "The city wakes before the sun.",
    "fr": "La ville se réveille avant le soleil.",
    "es": "La ciudad despierta antes que el sol.",
    "ja": "とうきょうのあさはしずかです。",
    "hi": "दिल्ली की सुबह शांत है।",
    "de": "Die Stadt erwacht vor der Sonne.",
    "ko": "서울의 아침은 조용하다.",
    "pt-BR": "A cidade acorda antes do sol.",
    "zh": "北京的早晨很安静。",
}


@pytest.fixture(scope="module")
def voice() -> EspeakVoice:
    return EspeakVoice()


def rms_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))))


def reference_lufs(x: np.ndarray) -> float:
    return pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))


def reference_true_peak_db(x: np.ndarray) -> float:
    return 20 * math.log10(np.max(np.abs(signal.resample_poly(x.astype(np.float64), 4, 1, axis=0))))


def full_envelope(x: np.ndarray) -> np.ndarray:
    """Per sample, the largest magnitude from it up to the next sample of the whole signal oversampled 4x
    (``resample_poly``'s own filter, on float32 channels), over all channels: what ``PeakEnvelope`` promises."""
    channels = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1).T)
    envelope = np.abs(channels).max(axis=0)
    for channel in channels:
        over = np.abs(signal.resample_poly(channel, 4, 1))
        for phase in range(4):
            np.maximum(envelope, over[phase::4], out=envelope)
    return envelope


# -- eSpeak NG ------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_espeak_speaks_every_language_audibly_and_deterministically(voice, language):
    audio, sr = voice.synthesize(SAMPLES[language], language)
    assert sr == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / sr > 0.5
    assert rms_db(audio) > -35
    assert np.max(np.abs(audio)) <= 1.0
    again, _ = voice.synthesize(SAMPLES[language], language)
    np.testing.assert_array_equal(audio, again)


def test_espeak_output_does_not_depend_on_what_was_said_before(voice):
    first, _ = voice.synthesize(SAMPLES["en-US"], "en-US")
    voice.synthesize(SAMPLES["de"], "de")
    voice.synthesize("Something else entirely, and longer than the first line.", "en-US")
    np.testing.assert_array_equal(voice.synthesize(SAMPLES["en-US"], "en-US")[0], first)


def test_espeak_is_thread_safe(voice):
    texts = [(SAMPLES[code], code) for code in ("en-US", "fr", "es", "de")] * 2
    expected = [voice.synthesize(text, code)[0] for text, code in texts]
    results: list[np.ndarray | None] = [None] * len(texts)

    def speak(i: int) -> None:
        results[i] = voice.synthesize(*texts[i])[0]

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_espeak_speed_shortens_speech(voice):
    normal, _ = voice.synthesize(SAMPLES["en-US"], "en-US", 1.0)
    faster, _ = voice.synthesize(SAMPLES["en-US"], "en-US", 1.25)
    assert len(faster) < 0.88 * len(normal)


def test_espeak_starts_on_sound(voice):
    audio, _ = voice.synthesize(SAMPLES["en-US"], "en-US")
    assert audio[0] != 0 and audio[-1] != 0


def test_espeak_ignores_emoji_and_speaks_right_to_left_scripts(voice):
    plain, _ = voice.synthesize("Hello world", "en-US")
    with_emoji, _ = voice.synthesize("Hello 😀👍🏽 world ❤️", "en-US")
    np.testing.assert_array_equal(with_emoji, plain)
    for text, code in (("القاهرة مدينة جميلة", "ar"), ("ירושלים עיר עתיקה", "he")):
        audio, _ = voice.synthesize(text, code)
        assert rms_db(audio) > -35


def test_japanese_kanji_are_spoken_through_their_reading(voice):
    from cinereel.model_loaders.espeak import japanese_reading

    assert japanese_reading("東京は夜です。") == "トーキョーワヨルデス。"
    kanji, _ = voice.synthesize("東京は夜です。", "ja")
    kana, _ = voice.synthesize("トーキョーワヨルデス。", "ja")
    assert kanji.size > 0.5 * 22050 * 0.5
    assert np.array_equal(kanji, kana)


def test_espeak_gives_empty_audio_when_nothing_is_speakable(voice):
    for text, code in (("", "en-US"), ("   ", "fr"), ("🎬🎥✨", "en-US")):
        audio, sr = voice.synthesize(text, code)
        assert audio.shape == (0,) and audio.dtype == np.float32 and sr == 22050


def test_espeak_rejects_unknown_language_and_bad_speed(voice):
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        voice.synthesize("Hello", "klingon")
    with pytest.raises(ValueError, match="speed"):
        voice.synthesize("Hello", "en-US", speed=5.0)


# -- resampling ------------------------------------------------------------------------


def test_resample_keeps_pitch_and_level_with_exact_length():
    t = np.arange(22050) / 22050
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = resample(tone, 22050, SR)
    assert len(out) == SR and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * SR / len(out) == pytest.approx(1000, abs=1)
    assert np.max(np.abs(out[1000:-1000])) == pytest.approx(0.5, abs=0.01)
    stereo = resample(np.stack([tone, tone], axis=1), 22050, 44100)
    assert stereo.shape == (44100, 2)
    with pytest.raises(ValueError, match="sample rate"):
        resample(tone, 0, SR)


# -- narration placement -------------------------------------------------------------------


def tone_line(shot_id: str, start_s: float, end_s: float, seconds: float, sr: int = SR) -> NarrationLine:
    """A stand-in utterance whose first sample is non-zero, so its onset is visible to the sample."""
    n = round(seconds * sr)
    audio = (0.3 * np.cos(2 * np.pi * 220 * np.arange(n) / sr)).astype(np.float32)
    return NarrationLine(shot_id, start_s, end_s, audio, sr, f"line {shot_id}")


def time_stretch(line: NarrationLine, speed: float) -> NarrationLine:
    """What a voice engine does with a faster rate: the same line, ``speed`` times shorter."""
    n = round(len(line.audio) / speed)
    audio = (0.3 * np.cos(2 * np.pi * 220 * np.arange(n) / line.sample_rate)).astype(np.float32)
    return NarrationLine(line.shot_id, line.start_s, line.end_s, audio, line.sample_rate, line.text)


def assert_placed_whole(track: np.ndarray, audio: np.ndarray, report: dict) -> None:
    start = round(report["start_s"] * SR)
    assert round(report["end_s"] * SR) - start == len(audio)
    np.testing.assert_array_equal(track[start : start + len(audio)], audio)


def test_lines_land_on_the_exact_sample():
    lines = [tone_line("a", 0.0, 3.3337, 1.0), tone_line("b", 3.3337, 7.0, 1.5)]
    track, report = place_narration(lines, 10.0, SR, lead_in_s=0.25)
    assert track.shape == (SR * 10,) and track.dtype == np.float32
    for line, entry in zip(lines, report):
        onset = round((line.start_s + 0.25) * SR)
        assert not track[onset - SR // 5 : onset].any() and track[onset] == line.audio[0] != 0
        assert entry["start_s"] * SR == onset and entry["action"] == "fit" and entry["speed"] == 1.0
        assert_placed_whole(track, line.audio, entry)


def test_espeak_line_is_resampled_and_placed_at_shot_start_plus_lead_in(voice):
    audio, sr = voice.synthesize(SAMPLES["en-US"], "en-US")
    line = NarrationLine("s1", 2.0, 6.0, audio, sr, SAMPLES["en-US"])
    track, (entry,) = place_narration([line], 8.0, SR, lead_in_s=0.25)
    onset = round(2.25 * SR)
    expected = resample(audio, sr, SR)
    np.testing.assert_array_equal(track[onset : onset + len(expected)], expected)
    assert not track[:onset].any() and not track[onset + len(expected) :].any()
    assert entry["start_s"] == 2.25


def test_overrunning_line_is_spoken_faster_not_cut():
    line = tone_line("a", 0.0, 3.0, 3.0)  # 3 s of speech for a 3 s shot less lead-in and tail
    track, (entry, _) = place_narration([line, tone_line("b", 3.0, 6.0, 1.0)], 6.0, SR, resynthesize=time_stretch)
    assert entry["action"] == "compressed" and 1.0 < entry["speed"] <= 1.25
    assert_placed_whole(track, time_stretch(line, entry["speed"]).audio, entry)
    assert entry["end_s"] <= 3.0 - LINE_TAIL_S + 1e-9


def test_line_too_long_even_when_faster_spills_into_a_silent_shot():
    line = tone_line("a", 0.0, 2.0, 3.0)
    track, (entry, _) = place_narration([line, tone_line("c", 6.0, 9.0, 1.0)], 9.0, SR, resynthesize=time_stretch)
    assert entry["action"] == "spilled" and entry["speed"] == 1.25
    assert entry["end_s"] > 2.0
    assert_placed_whole(track, time_stretch(line, 1.25).audio, entry)


def test_without_a_voice_engine_an_overrun_spills_at_normal_speed():
    line = tone_line("a", 0.0, 2.0, 3.0)
    track, (entry,) = place_narration([line], 9.0, SR)
    assert entry["action"] == "spilled" and entry["speed"] == 1.0
    assert_placed_whole(track, line.audio, entry)


def test_overrun_pushes_the_next_line_later_in_a_cascade():
    lines = [tone_line("a", 0.0, 2.0, 3.5), tone_line("b", 2.0, 4.0, 1.6), tone_line("c", 4.0, 10.0, 1.0)]
    track, report = place_narration(lines, 10.0, SR)
    assert [r["action"] for r in report] == ["pushed_next", "pushed_next", "fit"]
    assert report[1]["start_s"] == pytest.approx(report[0]["end_s"] + LINE_GAP_S, abs=1 / SR)
    assert report[2]["start_s"] == pytest.approx(report[1]["end_s"] + LINE_GAP_S, abs=1 / SR)
    assert report[1]["shift_s"] > 0 and report[2]["shift_s"] > 0
    for line, entry in zip(lines, report):
        assert_placed_whole(track, line.audio, entry)


def test_line_that_would_pass_the_reel_end_is_moved_earlier_whole():
    line = tone_line("last", 4.0, 6.0, 3.0)
    track, (entry,) = place_narration([line], 6.0, SR, resynthesize=time_stretch)
    assert entry["action"] == "overrun" and entry["shift_s"] < 0
    assert entry["end_s"] == pytest.approx(6.0 - LINE_TAIL_S, abs=1 / SR)
    assert_placed_whole(track, time_stretch(line, 1.25).audio, entry)


LONG_LINE = "The city wakes before the sun, and every quiet street remembers the footsteps of the night before."


def espeak_again(voice: EspeakVoice, language: str):
    """The narration stage's resynthesize: the line's text spoken again by the real engine at ``speed``."""
    def again(line: NarrationLine, speed: float) -> NarrationLine:
        audio, sr = voice.synthesize(line.text, language, speed)
        return NarrationLine(line.shot_id, line.start_s, line.end_s, audio, sr, line.text)

    return again


def spoken_line(voice: EspeakVoice, shot_id: str, start_s: float, end_s: float, text: str) -> NarrationLine:
    audio, sr = voice.synthesize(text, "en-US")
    return NarrationLine(shot_id, start_s, end_s, audio, sr, text)


def test_narration_longer_than_the_reel_is_trimmed_by_speaking_fewer_whole_words(voice):
    lines = [spoken_line(voice, "a", 0.0, 3.0, LONG_LINE), spoken_line(voice, "b", 3.0, 5.0, SAMPLES["en-US"])]
    assert sum(len(line.audio) / line.sample_rate for line in lines) / 1.25 > 5.0  # cannot fit even faster
    track, report = place_narration(lines, 5.0, SR, resynthesize=espeak_again(voice, "en-US"))
    trimmed = [entry for entry in report if entry["action"] == "trimmed"]
    assert [entry["shot_id"] for entry in trimmed] == ["a"]
    entry = trimmed[0]
    kept, left_out = entry["text"], entry["left_out"]
    assert kept and left_out and f"{kept} {left_out}" == LONG_LINE  # whole words kept, whole words left out
    assert entry["speed"] == 1.25
    for line, placed in zip(lines, report):
        audio, sr = voice.synthesize(placed["text"], "en-US", placed["speed"])
        assert_placed_whole(track, resample(audio, sr, SR), placed)
        assert placed["end_s"] <= line.end_s - LINE_TAIL_S + 1e-9
    one_more_word = " ".join(LONG_LINE.split()[: len(kept.split()) + 1])
    longer, sr = voice.synthesize(one_more_word, "en-US", 1.25)
    assert len(resample(longer, sr, SR)) / SR > 3.0 - 0.25 - LINE_TAIL_S  # the most words that fit were kept


def test_without_a_voice_engine_a_line_the_reel_cannot_hold_is_left_out_whole():
    lines = [tone_line("a", 0.0, 5.0, 4.0), tone_line("b", 5.0, 6.0, 3.0)]
    track, report = place_narration(lines, 6.0, SR)
    assert [e["action"] for e in report] == ["fit", "trimmed"]
    assert report[1]["text"] == "" and report[1]["left_out"] == "line b"
    assert_placed_whole(track, lines[0].audio, report[0])
    assert not track[round(report[0]["end_s"] * SR):].any()


def test_placement_rejects_bad_windows():
    with pytest.raises(ValueError, match="overlap"):
        place_narration([tone_line("a", 0.0, 3.0, 1.0), tone_line("b", 2.0, 5.0, 1.0)], 6.0, SR)
    with pytest.raises(ValueError, match="after the reel"):
        place_narration([tone_line("a", 0.0, 8.0, 1.0)], 6.0, SR)
    with pytest.raises(ValueError, match="window"):
        tone_line("a", 3.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="mono"):
        NarrationLine("a", 0.0, 1.0, np.zeros((10, 2), np.float32), SR)


@settings(max_examples=40, deadline=None)
@given(
    durations=st.lists(st.floats(1.0, 6.0), min_size=1, max_size=6),
    speech=st.lists(st.floats(0.0, 5.0), min_size=6, max_size=6),
    compress=st.booleans(),
)
def test_placement_never_cuts_or_overlaps_lines(durations, speech, compress):
    sr = 8000
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    total = float(sum(durations))
    lines = [
        NarrationLine(str(i), float(s), float(s + d), (0.2 + np.arange(round(x * sr)) % 7 / 10).astype(np.float32), sr)
        for i, (s, d, x) in enumerate(zip(starts, durations, speech))
        if x > 0
    ]

    def faster(line: NarrationLine, speed: float) -> NarrationLine:
        return NarrationLine(line.shot_id, line.start_s, line.end_s, line.audio[: round(len(line.audio) / speed)], sr)

    track, report = place_narration(lines, total, sr, resynthesize=faster if compress else None)
    assert len(track) == round(total * sr)
    spans = []
    for line, entry in zip(lines, report):
        start, end = round(entry["start_s"] * sr), round(entry["end_s"] * sr)
        if entry["action"] == "trimmed":  # these lines have no words to keep: left out whole
            assert start == end and entry["text"] == ""
            continue
        kept = faster(line, entry["speed"]).audio if entry["speed"] > 1 else line.audio
        np.testing.assert_array_equal(track[start:end], kept)
        if end > start:
            spans.append((start, end))
    assert all(0 <= s and e <= len(track) for s, e in spans)
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))


# -- ducking -----------------------------------------------------------------------------


def test_ducking_lowers_music_under_speech_by_its_depth_and_restores_it():
    rng = np.random.default_rng(1)
    music = (0.1 * rng.standard_normal((10 * SR, 2))).astype(np.float32)
    speech = np.zeros(10 * SR, np.float32)
    speech[4 * SR : 6 * SR] = 0.3 * np.sin(2 * np.pi * 180 * np.arange(2 * SR) / SR)
    ducked = duck(music, speech, SR, depth_db=-12.0)
    under = slice(4 * SR, 6 * SR)
    assert rms_db(ducked[under]) - rms_db(music[under]) == pytest.approx(-12.0, abs=0.2)
    for clear in (slice(0, 3 * SR), slice(7 * SR, 10 * SR)):
        np.testing.assert_array_equal(ducked[clear], music[clear])
    gain_db = 20 * np.log10(np.abs(ducked[:, 0]) / np.abs(music[:, 0]))
    assert np.max(np.abs(np.diff(gain_db))) < 0.01  # a smooth ramp, no zipper steps


def test_speech_envelope_is_fully_down_at_the_onset_and_ramps_around_it():
    speech = np.zeros(4 * SR, np.float32)
    speech[2 * SR : 3 * SR] = 0.3
    env = speech_envelope(speech, SR, attack_s=0.08, release_s=0.4)
    assert env[2 * SR] == 1.0 and env[3 * SR - 1] == 1.0
    assert env[2 * SR - round(0.08 * SR) - 1] == 0.0
    assert 0.0 < env[3 * SR + round(0.2 * SR)] < 1.0
    assert env[3 * SR + round(0.4 * SR) + 1] == 0.0
    assert not speech_envelope(np.zeros(SR, np.float32), SR).any()


def test_duck_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        duck(np.zeros((100, 2), np.float32), np.zeros(99, np.float32), SR)


# -- measurement and mastering ---------------------------------------------------------------


def test_loudness_meter_is_calibrated():
    t = np.arange(5 * SR) / SR
    assert integrated_lufs(np.sin(2 * np.pi * 997 * t), SR) == pytest.approx(-3.01, abs=0.05)


def test_true_peak_finds_peaks_between_samples():
    t = np.arange(SR) / SR
    quarter_rate = np.sin(2 * np.pi * (SR / 4) * t + np.pi / 4)  # every sample lands at +-0.707
    assert 20 * np.log10(np.max(np.abs(quarter_rate))) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_dbtp(quarter_rate, SR) == pytest.approx(0.0, abs=0.2)


def sparse_peaks(n: int, seed: int, channels: int) -> np.ndarray:
    """Quiet noise with a few loud bursts, some at the very edges: a true peak only the bursts can hold."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, (n, channels))
    for at in [0, n - 7, *rng.integers(0, n - 40, 5)]:
        x[at:at + 7] = rng.uniform(-1, 1, (min(7, n - at), channels))
    return x.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(50, 20_000), seed=st.integers(0, 2**32 - 1), channels=st.sampled_from([1, 2]),
       gap=st.sampled_from([0, 64, 4096]))
def test_the_true_peak_oversampling_only_where_it_can_matter_equals_the_whole_envelope_s(n, seed, channels, gap):
    from cinereel.nodes.pipeline import audio

    x = sparse_peaks(n, seed, channels)
    x = x[:, 0] if channels == 1 and seed % 2 else x  # (n,) and (n, 1) alike
    previous, audio.RUN_GAP = audio.RUN_GAP, gap
    try:
        assert audio._true_peak(x) == float(full_envelope(x).max())  # exactly: the same sums
    finally:
        audio.RUN_GAP = previous


@settings(max_examples=40, deadline=None)
@given(n=st.integers(50, 20_000), seed=st.integers(0, 2**32 - 1), levels=st.lists(st.floats(0.005, 1.5), min_size=1,
                                                                                   max_size=3))
def test_the_lazy_envelope_is_exact_wherever_it_exceeds_the_level_asked_for(n, seed, levels):
    """What the limiter reads (``master``): exact where it can act, and never a value that would make it act
    anywhere else, level after level (each reuses what the ones before oversampled)."""
    from cinereel.nodes.pipeline import audio

    x = sparse_peaks(n, seed, 2)
    full = full_envelope(x)
    envelope = audio.PeakEnvelope(x)
    for level in levels:
        got = envelope.above(level)
        loud = full > level
        assert np.array_equal(got[loud], full[loud])
        assert np.all(got >= full) and np.all((got <= level) | loud)
        threshold = 20 * math.log10(level)  # what a limiter at that threshold needs, sample by sample
        with np.errstate(divide="ignore"):
            assert np.array_equal(np.minimum(0.0, threshold - envelope.limiter_db(threshold)),
                                  np.minimum(0.0, threshold - 20.0 * np.log10(full)))
    assert envelope.peak() == float(full.max())


def test_the_true_peak_filter_is_the_one_resample_poly_designs_and_its_reference_agrees():
    from cinereel.nodes.pipeline import audio

    x = sparse_peaks(9_000, 3, 2)
    for channel in x.T:
        assert np.array_equal(signal.resample_poly(channel, 4, 1), signal.resample_poly(
            channel, 4, 1, window=audio._oversampling()[0].copy()))
    assert true_peak_dbtp(x, SR) == pytest.approx(reference_true_peak_db(x), abs=1e-4)
    assert true_peak_dbtp(np.zeros(100, np.float32), SR) == -math.inf


def loud_noise() -> np.ndarray:
    return np.clip(np.random.default_rng(2).normal(0, 0.5, (5 * SR, 2)), -1, 1)


def quiet_tone() -> np.ndarray:
    t = np.arange(5 * SR) / SR
    return 0.002 * np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 440 * t)], axis=1)


def impulses_over_hiss() -> np.ndarray:
    x = 0.003 * np.random.default_rng(3).standard_normal((5 * SR, 2))
    x[SR // 3 :: SR // 2] = 0.95  # snaps 50 dB above the bed
    return x


@pytest.mark.parametrize(
    "make,target",
    [(loud_noise, -18.0), (quiet_tone, -18.0), (impulses_over_hiss, -18.0), (loud_noise, -14.0), (impulses_over_hiss, -23.0)],
)
def test_master_hits_loudness_and_true_peak(make, target):
    out, report = master(make().astype(np.float32), SR, target_lufs=target, true_peak_dbtp=-1.0)
    assert out.dtype == np.float32 and out.shape == (5 * SR, 2)
    assert reference_lufs(out) == pytest.approx(target, abs=0.5)
    assert reference_true_peak_db(out) <= -1.0
    assert report["integrated_lufs"] == pytest.approx(reference_lufs(out), abs=1e-6)
    assert report["true_peak_dbtp"] <= -1.0


def test_master_limits_impulses_smoothly_instead_of_clipping():
    source = impulses_over_hiss().astype(np.float32)
    out, report = master(source, SR, -18.0)
    assert report["limiter_max_reduction_db"] > 20
    gain = out[:, 0] / np.where(source[:, 0] == 0, 1, source[:, 0])
    peak = SR // 3
    lead = gain[peak - 240 : peak + 1]  # 5 ms before the snap: the gain is already on its way down
    assert np.all(np.diff(lead) <= 1e-6) and lead[0] > 4 * lead[-1]
    assert np.max(np.abs(out)) < 10 ** (-1 / 20)


def test_master_of_speech_meets_both_targets(voice):
    audio, sr = voice.synthesize("The lighthouse keeper counts the ships that never came home.", "en-US")
    speech = resample(audio, sr, SR)
    for target in (-14.0, -23.0):
        out, _ = master(speech, SR, target)
        assert reference_lufs(out) == pytest.approx(target, abs=0.5)
        assert reference_true_peak_db(out) <= -1.0


@pytest.mark.parametrize(
    "audio,kwargs,message",
    [
        (np.zeros((SR, 2), np.float32), {}, "silent"),
        (np.full((SR, 2), np.nan, np.float32), {}, "NaN"),
        (np.full((SR // 10, 2), 0.1, np.float32), {}, "at least 0.4 s"),
        (np.full((SR, 2), 0.1, np.float32), {"target_lufs": -41.0}, "between -40.0 and -5.0"),
        (np.full((SR, 2), 0.1, np.float32), {"target_lufs": -4.0}, "between -40.0 and -5.0"),
        (np.full((SR, 2), 0.1, np.float32), {"true_peak_dbtp": 1.0}, "ceiling"),
    ],
)
def test_master_rejects_bad_input(audio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        master(audio, SR, **kwargs)


# -- writing and the full mix -----------------------------------------------------------------


def test_write_wav_is_24_bit_stereo_and_atomic(tmp_path):
    audio = (0.5 * np.random.default_rng(4).uniform(-1, 1, (SR, 2))).astype(np.float32)
    path = write_wav(tmp_path / "mix.wav", audio, SR)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 2, "PCM_24")
    back, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_allclose(back, audio, atol=2**-22)
    assert [p.name for p in tmp_path.iterdir()] == ["mix.wav"]
    with pytest.raises(ValueError, match="subtype"):
        write_wav(tmp_path / "x.wav", audio, SR, subtype="MP3")


def test_mix_centres_speech_ducks_music_and_masters(voice):
    audio, sr = voice.synthesize("Rain falls on the empty market while the lanterns flicker.", "en-US")
    speech, _ = place_narration([NarrationLine("s1", 3.0, 9.0, audio, sr)], 12.0, SR)
    music = render_music_bed(12.0, "mysterious", seed=5)
    mixed, report = mix_reel(speech, music, SR, target_lufs=-18.0, music_level_db=-14.0, duck_db=-12.0)
    assert mixed.shape == (12 * SR, 2)
    assert reference_lufs(mixed) == pytest.approx(-18.0, abs=0.5)
    assert reference_true_peak_db(mixed) <= -1.0
    # Centred speech cancels in the side channel, which then holds only the (ducked) music.
    side = (mixed[:, 0] - mixed[:, 1]) / 2
    music_side = (music[:, 0] - music[:, 1]) / 2
    spoken = np.flatnonzero(speech)
    under = slice(spoken[0] + SR // 4, spoken[-1] - SR // 4)
    clear = slice(spoken[-1] + SR, 12 * SR - 2 * SR)
    ducking = (rms_db(side[under]) - rms_db(music_side[under])) - (rms_db(side[clear]) - rms_db(music_side[clear]))
    assert ducking == pytest.approx(-12.0, abs=1.0)
    assert report["speech_lufs"] is not None and report["music_gain_db"] != 0.0


def test_mix_without_narration_masters_the_music_alone():
    music = render_music_bed(6.0, "calm", seed=1)
    mixed, report = mix_reel(np.zeros(6 * SR, np.float32), music[: 5 * SR], SR, target_lufs=-16.0, true_peak_dbtp=-2.0)
    assert mixed.shape == (6 * SR, 2) and report["speech_lufs"] is None
    assert reference_lufs(mixed) == pytest.approx(-16.0, abs=0.5)
    assert reference_true_peak_db(mixed) <= -2.0


# -- the music bed ------------------------------------------------------------------------------


def high_band(x: np.ndarray, sr: int = SR) -> np.ndarray:
    """What lies above 12 kHz: the bed has nothing there, so anything found is a click."""
    return signal.sosfilt(signal.butter(8, 12000, "highpass", fs=sr, output="sos"), x, axis=0)


def test_music_bed_shape_level_and_determinism():
    bed = render_music_bed(12.0, "tense", seed=11)
    assert bed.shape == (12 * SR, 2) and bed.dtype == np.float32
    assert np.all(np.isfinite(bed)) and np.max(np.abs(bed)) == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_array_equal(bed, render_music_bed(12.0, "tense", seed=11))
    assert not np.array_equal(bed, render_music_bed(12.0, "tense", seed=12))
    assert render_music_bed(7.3, "joyful", seed=1, sample_rate=44100).shape == (round(7.3 * 44100), 2)
    left, right = bed[:, 0], bed[:, 1]
    assert 0.5 < np.corrcoef(left, right)[0, 1] < 0.99  # stereo, but not two unrelated channels


@pytest.mark.parametrize("mood", ["tense", "joyful", "calm", "epic, with drums", "something unheard of"])
def test_music_bed_has_no_clicks_anywhere_or_at_chord_changes(mood):
    bed = render_music_bed(14.0, mood, seed=3)
    plan = plan_music_bed(14.0, mood, seed=3)
    high = np.abs(high_band(bed)).max(axis=1)
    assert high.max() < 1e-4
    for start_s, _, _ in plan.chords[1:]:
        change = round(start_s * SR)
        assert high[change - SR // 2 : change + SR // 2].max() < 1e-4
    assert np.max(np.abs(np.diff(bed, axis=0))) < 0.06
    clicked = bed.copy()
    clicked[7 * SR :] += 0.005  # a step of 1% of the bed's peak: the check above must catch even this
    assert np.abs(high_band(clicked)).max() > 1e-3


@settings(max_examples=30, deadline=None)
@given(
    duration=st.floats(0.01, 9.0),
    mood=st.sampled_from(["tense", "mysterious", "melancholic", "epic", "joyful", "uplifting", "romantic", "calm",
                          "energetic", "???"]),
    tempo=st.one_of(st.none(), st.floats(30.0, 240.0)),
    sample_rate=st.sampled_from([22050, 44100, 48000]),
)
def test_music_bed_renders_any_length_tempo_and_rate(duration, mood, tempo, sample_rate):
    bed = render_music_bed(duration, mood, seed=0, tempo_bpm=tempo, sample_rate=sample_rate)
    assert bed.shape == (round(duration * sample_rate), 2)
    assert np.all(np.isfinite(bed)) and np.max(np.abs(bed), initial=0.0) <= 0.5 + 1e-6


def test_music_bed_fades_in_and_out():
    bed = render_music_bed(10.0, "energetic", seed=2)
    middle = rms_db(bed[4 * SR : 6 * SR])
    assert rms_db(bed[: SR // 20]) < middle - 30 and rms_db(bed[-SR // 20 :]) < middle - 30
    assert np.max(np.abs(bed[:10])) < 1e-4 and np.max(np.abs(bed[-10:])) < 1e-4


def test_mood_chooses_harmony_and_tempo():
    assert mood_style("Tense, rainy night").name == "tense"
    assert mood_style("nostalgic").name == "melancholic"
    assert mood_style("zzz").name == "neutral" and mood_tempo("zzz") == 90.0
    assert mood_tempo("energetic") > mood_tempo("calm")
    for mood, third in (("tense", 3), ("melancholic", 3), ("joyful", 4), ("uplifting", 4)):
        for seed in range(4):
            plan = plan_music_bed(10.0, mood, seed)
            tonic = plan.tonic_midi % 12
            chords = [{note % 12 for note in pad} for _, pad, _ in plan.chords]
            home = next(c for c in chords if tonic in c and (tonic + 7) % 12 in c)
            assert (tonic + third) % 12 in home, (mood, seed)
    assert plan_music_bed(30.0, "calm", 0, tempo_bpm=60.0).tempo_bpm == 60.0


def test_music_bed_rejects_bad_input():
    for kwargs, message in (
        ({"duration_s": 0.0}, "duration"),
        ({"duration_s": float("nan")}, "duration"),
        ({"tempo_bpm": 10.0}, "tempo"),
        ({"sample_rate": 1000}, "sample rate"),
    ):
        with pytest.raises(ValueError, match=message):
            render_music_bed(**{"duration_s": 5.0, "mood": "calm", "seed": 0, **kwargs})
