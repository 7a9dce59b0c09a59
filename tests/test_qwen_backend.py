"""The Qwen3.5 director/critic on a tiny random-weight checkpoint of the exact classes.

Random weights write nonsense, so these tests show what the code guarantees regardless of the
model: schema-constrained decoding always yields a plan and a critique that parse and validate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from cinereel.model_loaders import qwen
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import ResidencyManager
from cinereel.model_loaders.vocabulary.critique import FAILURE_LABELS, validate_critique
from cinereel.model_loaders.vocabulary.languages import LANGUAGES
from cinereel.model_loaders.vocabulary.plan import DEFAULT_FLOW_SHIFT, validate_plan

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_qwen", HERE / "tiny_qwen.py")
tiny_qwen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_qwen)

REQUEST = {"sentence": "A lone astronaut walks through a neon-lit Tokyo alley at dusk", "duration_s": 10.0,
           "shots": 2, "aspect": "9:16", "seed": 7}


@pytest.fixture(scope="module")
def checkpoint(one_torch_thread) -> Path:
    return tiny_qwen.tiny_qwen_checkpoint()


def qwen_handle(checkpoint: Path, **kw) -> ModelHandle:
    return ModelHandle("qwen3.5", str(checkpoint), dtype="float32", device="cpu",
                       options={"max_new_tokens": 320, "critic_max_new_tokens": 128}, **kw)


def clip_and_portrait():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 72, 128, 3), dtype=np.uint8)
    portrait = rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)
    return frames, portrait


def check_plan(result: dict) -> None:
    assert result["engine"] == "qwen3.5"
    plan = validate_plan(result["plan"])
    assert plan.sentence == REQUEST["sentence"] and plan.duration_s == 10.0 and plan.fps == 16
    assert (plan.width, plan.height) == (720, 1280)
    assert [s.id for s in plan.shots] == ["shot-01", "shot-02"]
    assert sum(s.duration_s for s in plan.shots) == pytest.approx(10.0)
    assert all(s.flow_shift == DEFAULT_FLOW_SHIFT[s.type] for s in plan.shots)
    assert plan.language in LANGUAGES
    # the decoding bound on narration: a 5 s shot's 4.5 s voice window holds at most 72 characters
    assert all(len(s.narration) <= 72 for s in plan.shots)
    json.dumps(result)  # plain data: it crosses a process boundary and lands in plan.json


def check_critique(critique: dict) -> None:
    assert validate_critique(critique) == critique
    assert critique["label"] is None or critique["label"] in FAILURE_LABELS
    assert all(1 <= v <= 10 for v in critique["scores"].values())


def test_director_then_critic_in_process_is_one_load(checkpoint):
    manager = ResidencyManager()
    base = qwen_handle(checkpoint)
    with manager.use(base.as_role("director")) as model:
        result = model.plan(REQUEST)
    check_plan(result)
    frames, portrait = clip_and_portrait()
    with manager.use(base.as_role("critic")) as model:
        critique = model.critique(frames, [portrait], "the astronaut walks toward camera")
        again = model.critique(frames[:1], [], "an empty alley")  # one frame, no portrait
    check_critique(critique)
    check_critique(again)
    assert manager.loads() == 1 and manager.reuses == 1
    with manager.use(base.as_role("director")) as model:  # greedy decoding: the same plan again
        assert model.plan(REQUEST) == result
    manager.evict("end of test")
    assert [e["event"] for e in manager.log] == ["load", "evict"]


def test_director_and_critic_in_a_worker_process_gone_after_eviction(checkpoint, monkeypatch):
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(HERE / "qwen_worker_plugin.py"))
    manager = ResidencyManager()
    base = qwen_handle(checkpoint, residency="subprocess")
    with manager.use(base.as_role("director")) as worker:
        pid = worker.pid
        assert pid != os.getpid() and psutil.pid_exists(pid)
        result = worker.plan(REQUEST)
    check_plan(result)
    frames, portrait = clip_and_portrait()
    with manager.use(base.as_role("critic")) as worker:
        assert worker.pid == pid
        check_critique(worker.critique(frames, [portrait], "the astronaut walks toward camera"))
    assert manager.loads() == 1
    manager.evict("end of test")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_generation_schema_is_the_plan_schema_minus_what_the_request_fixes():
    schema = qwen.plan_generation_schema(3)
    shot = schema["properties"]["shots"]
    assert shot["minItems"] == shot["maxItems"] == 3
    assert not {"duration_s", "fps", "width", "height", "sentence"} & set(schema["properties"])
    assert not {"id", "duration_s", "seed", "flow_shift"} & set(shot["items"]["properties"])
    assert shot["items"]["properties"]["camera"]["enum"] == ["static", "push_in", "pull_out", "pan_left",
                                                             "pan_right", "tilt_up", "tilt_down"]
    assert qwen.plan_generation_schema(2, "ja")["properties"]["language"] == {"enum": ["ja"]}
    assert shot["items"]["properties"]["narration"]["maxLength"] == qwen.GENERATION_LIMITS["shot.narration"]
    narration = qwen.plan_generation_schema(2, None, 24)["properties"]["shots"]["items"]["properties"]["narration"]
    assert narration["maxLength"] == 24
    assert "$ref" not in json.dumps(schema)


# 1.25 x the table's fastest 16.7 characters/s (eSpeak NG French) over the longest shot less 0.5 s, at most 500.
@pytest.mark.parametrize("duration,shots,limit", [(10.0, 2, 93), (3.0, 2, 20), (2.0, 2, 10), (30.0, 1, 500)])
def test_narration_is_bounded_by_the_longest_shot_s_voice_window(duration, shots, limit):
    from cinereel.model_loaders.rules import DirectorRequest

    request = DirectorRequest("x", duration_s=duration, shots=shots)
    assert qwen.narration_char_limit(request) == limit


def test_incomplete_checkpoint_names_missing_files_and_where_it_looked(checkpoint, tmp_path):
    (tmp_path / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    (tmp_path / "model.safetensors.index.json").write_bytes((checkpoint / "model.safetensors.index.json").read_bytes())
    with pytest.raises(FileNotFoundError) as err:
        qwen.load_qwen(ModelHandle("qwen3.5", str(tmp_path), dtype="float32", device="cpu"))
    message = str(err.value)
    assert str(tmp_path) in message and "model-00001-of-00002.safetensors" in message
    assert "tokenizer.json" in message and "preprocessor_config.json" in message
    with pytest.raises(FileNotFoundError, match="Qwen/Qwen3.5-35B-A3B is not downloaded; run `hf download Qwen/"):
        qwen.load_qwen(ModelHandle("qwen3.5", "Qwen/Qwen3.5-35B-A3B", dtype="float32", device="cpu"))


def test_importing_the_backend_does_not_import_torch_or_transformers(pack_root):
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('cr', {str(pack_root / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(pack_root)!r}])\n"
            "m = importlib.util.module_from_spec(spec); sys.modules['cr'] = m; spec.loader.exec_module(m)\n"
            "import cr.model_loaders.qwen, cr.model_loaders.openai_compat\n"
            "from cr.model_loaders.residency import family\n"
            "family('qwen3.5'); family('openai-compatible')\n"
            "heavy = [n for n in ('torch', 'transformers', 'openai', 'llguidance') if n in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class ScriptedQwen(qwen.QwenDirectorCritic):
    """The Qwen director with its decoding replaced by fixed answers, recording the messages it is sent: the
    narration re-ask is code around the model, and random weights never write a line too long to speak."""

    def __init__(self, answers: list[str]):
        super().__init__(None, None, ModelHandle("qwen3.5", "scripted"), Path("."))
        self.answers, self.sent = answers, []

    def _generate(self, messages, schema, max_new_tokens, images, video, reserve=0):
        self.sent.append(messages)
        return self.answers[min(len(self.sent), len(self.answers)) - 1]


def qwen_draft(narration: str | None = None) -> str:
    from cinereel.model_loaders.preview import PreviewLLM

    plan = PreviewLLM().plan({**REQUEST, "language": "fr"})["plan"]
    for key in qwen.REQUEST_FIXED_FIELDS:
        plan.pop(key)
    for shot in plan["shots"]:
        for key in qwen.PIPELINE_SHOT_FIELDS:
            shot.pop(key)
        if narration is not None:
            shot["narration"] = narration
    return json.dumps(plan, ensure_ascii=False)


LONG_FRENCH = ("La ville retient son souffle tandis que la silhouette avance seule sous les néons, "
               "et chaque pas l'emmène un peu plus loin dans la nuit qui ne finit jamais")


def test_qwen_sends_narration_that_does_not_fit_back_with_the_exact_budget():
    director = ScriptedQwen([qwen_draft(LONG_FRENCH), qwen_draft()])
    result = director.plan({**REQUEST, "language": "fr", "voice_engine": "espeak-ng"})
    assert len(director.sent) == 2
    ask = director.sent[1][-1]["content"]
    table = json.loads((HERE.parent / "model_loaders" / "rules_data" / "speaking_rates.json").read_text("utf-8"))
    rate = table["engines"]["espeak-ng"]["languages"]["fr"]["per_second"]
    budget = int(4.5 * rate + 1e-9)
    assert f"{rate:g} words/s, eSpeak NG fr" in ask
    for number in (1, 2):
        assert f"shot {number} (shot-0{number}): {len(LONG_FRENCH.split())} words" in ask
        assert f"the shot has 4.50 s: at most {budget} words" in ask
    assert director.sent[1][-2] == {"role": "assistant", "content": qwen_draft(LONG_FRENCH)}
    assert all(len(s["narration"].split()) <= budget for s in result["plan"]["shots"])
    assert result["warnings"] == []
