"""The OpenAI-compatible director/critic against a local server speaking the chat-completions protocol."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from cinereel.model_loaders import openai_compat  # noqa: F401  (registers the family)
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.preview import PreviewLLM
from cinereel.model_loaders.residency import ResidencyManager
from cinereel.model_loaders.vocabulary.critique import validate_critique
from cinereel.model_loaders.vocabulary.plan import validate_plan

REQUEST = {"sentence": "Two friends share street food at a Bangkok night market", "duration_s": 12.0, "shots": 3}
SECRET = "sk-test-0123456789-never-stored"
KEY_ENV = "CINEREEL_TEST_API_KEY"


def model_draft() -> dict:
    """What a good model writes: the rule director's plan without the fields the pipeline fixes."""
    plan = PreviewLLM().plan(REQUEST)["plan"]
    for key in ("version", "sentence", "duration_s", "fps", "width", "height"):
        plan.pop(key)
    for shot in plan["shots"]:
        for key in ("id", "duration_s", "seed", "flow_shift", "ref_weight"):
            shot.pop(key)
    return plan


LONG_NARRATION = ("Lanterns swing above the stalls while two old friends laugh, trade bowls of noodles, and argue "
                  "about which vendor makes the best mango sticky rice in the whole city tonight")
CRITIQUE = {"scores": {"composition": 8, "motion_coherence": 6, "character_consistency": 9, "lighting_fidelity": 7},
            "label": "OBJECT_MORPHING", "notes": "the lantern melts in frames 3 and 4"}


class Server:
    """A chat-completions server on 127.0.0.1 whose behaviour the test picks."""

    def __init__(self, mode: str = "good"):
        self.mode = mode
        self.requests: list[dict] = []
        self.plans_answered = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                status, payload = outer.answer(body)
                if status == "sleep":
                    time.sleep(3)
                    status = 200
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the client hung up on the slow answer, as intended

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict):
        if self.mode == "500":
            return 500, {"error": {"message": "CUDA out of memory", "type": "server_error"}}
        if self.mode == "no_json_schema" and body.get("response_format", {}).get("type") == "json_schema":
            return 400, {"error": {"message": "response_format json_schema is not supported", "type": "invalid"}}
        name = body.get("response_format", {}).get("json_schema", {}).get("name", "")
        is_critique = name == "cinereel_critique" or "critic" in body["messages"][0]["content"][:40]
        draft = model_draft()
        if not is_critique and self.mode in ("long_narration_once", "long_narration"):
            self.plans_answered += 1
            if self.mode == "long_narration" or self.plans_answered == 1:
                for shot in draft["shots"]:
                    shot["narration"] = LONG_NARRATION
        content = json.dumps(CRITIQUE if is_critique else draft, ensure_ascii=False)
        if self.mode == "malformed":
            content = '{"title": "Night market", "shots": [ {"type": "hero", '
        status = "sleep" if self.mode == "slow" else 200
        return status, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(mode="good"):
        servers.append(Server(mode))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


# The fake server answers at once, but on a busy machine "at once" has taken over a second (a CI run failed on
# a 1 s limit): the tests of timeouts set their own, far below the slow mode's 3 s sleep.
ANSWER_TIMEOUT_S = 30.0


def handle_for(base_url: str, **options) -> ModelHandle:
    return ModelHandle("openai-compatible", "qwen3.5-35b-a3b", options={
        "base_url": base_url, "model": "qwen3.5-35b-a3b", "api_key_env": KEY_ENV, "timeout_s": ANSWER_TIMEOUT_S,
        "max_retries": 0, **options})


def frames_and_portrait():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (3, 36, 64, 3), dtype=np.uint8), rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)


def test_plan_and_critique_over_the_chat_completions_protocol(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    srv = server()
    manager = ResidencyManager()
    handle = handle_for(srv.base_url)
    with manager.use(handle.as_role("director")) as llm:
        result = llm.plan(REQUEST)
    frames, portrait = frames_and_portrait()
    with manager.use(handle.as_role("critic")) as llm:
        critique = llm.critique(frames, [portrait], "two friends laugh over noodles")
    assert manager.loads() == 1

    plan = validate_plan(result["plan"])
    assert plan.duration_s == 12.0 and len(plan.shots) == 3 and (plan.width, plan.height) == (1280, 720)
    assert result["engine"] == "openai-compatible:qwen3.5-35b-a3b"
    assert validate_critique(critique) == critique and critique["label"] == "OBJECT_MORPHING"

    plan_request, critic_request = srv.requests
    assert plan_request["path"] == "/v1/chat/completions"
    assert plan_request["body"]["response_format"]["type"] == "json_schema"
    assert plan_request["body"]["response_format"]["json_schema"]["schema"]["properties"]["shots"]["maxItems"] == 3
    parts = critic_request["body"]["messages"][1]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 1 + 3 and all(u.startswith("data:image/png;base64,") for u in images)
    # The key came from the environment, reached the server, and is stored nowhere.
    assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in srv.requests)
    for stored in (handle.to_dict(), handle.key, result, critique):
        assert SECRET not in json.dumps(stored)


# -- where the key comes from and goes (issue #10, part 6) ---------------------------------

ENVIRONMENT_JUNK = {"OPENAI_API_KEY": "sk-the-users-openai-key", "OPENAI_ADMIN_KEY": "sk-admin",
                    "OPENAI_ORG_ID": "org-private", "OPENAI_PROJECT_ID": "proj-private",
                    "OPENAI_CUSTOM_HEADERS": "Authorization: Bearer sk-custom\nX-Team-Token: team-secret"}


def _critique(base_url: str, **options) -> None:
    from cinereel.model_loaders.openai_compat import load_openai

    load_openai(handle_for(base_url, **options)).critique(frames_and_portrait()[0], [], "an empty street")


def test_missing_key_sends_no_authorization_and_nothing_the_openai_client_reads_from_the_environment(
        server, monkeypatch):
    """The openai client would fill a missing key from OPENAI_API_KEY and add headers from OPENAI_CUSTOM_HEADERS,
    OPENAI_ORG_ID and OPENAI_PROJECT_ID: a workflow naming an unset variable must not send any of them."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    for name, value in ENVIRONMENT_JUNK.items():
        monkeypatch.setenv(name, value)
    srv = server()
    _critique(srv.base_url)
    headers = srv.requests[0]["headers"]
    assert "authorization" not in headers
    assert not {"openai-organization", "openai-project", "x-team-token"} & set(headers)
    assert not any(secret in json.dumps(srv.requests) for secret in ENVIRONMENT_JUNK.values())


def test_a_loopback_server_gets_the_key_of_an_API_KEY_variable_and_only_it(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    for name, value in ENVIRONMENT_JUNK.items():
        monkeypatch.setenv(name, value)
    srv = server()
    _critique(srv.base_url)
    assert srv.base_url.startswith("http://127.0.0.1:")
    assert srv.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert "x-team-token" not in srv.requests[0]["headers"]


@pytest.mark.parametrize("variable", ["HOME", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY_FILE", "_API_KEY",
                                      "GITHUB_TOKEN"])
def test_a_variable_that_is_not_an_API_key_is_refused_before_any_request(server, monkeypatch, capsys, tmp_path,
                                                                          variable):
    from cinereel.model_loaders.openai_compat import OpenAICompatError
    from cinereel.nodes.pipeline.backends import make_handle
    from cinereel.nodes.pipeline.cli import main
    from cinereel.nodes.pipeline.preflight import PreflightError

    monkeypatch.setenv(variable, SECRET)
    srv = server()
    with pytest.raises(OpenAICompatError, match="ends in _API_KEY") as err:
        _critique(srv.base_url, api_key_env=variable)
    assert repr(variable) in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(PreflightError, match=f"llm: api_key_env '{variable}' is not an API-key variable"):
        make_handle("llm", "OpenAI-compatible server", base_url=srv.base_url, api_key_env=variable)
    out = tmp_path / "out"
    assert main([REQUEST["sentence"], "--llm", "openai", "--set", f"llm.base_url={srv.base_url}",
                 "--set", f"llm.api_key_env={variable}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error:") and "ends in _API_KEY" in err and err.count("\n") == 1
    assert SECRET not in err and not out.exists()
    assert srv.requests == []


REMOTE = "http://203.0.113.7:8000/v1"  # TEST-NET-3: another machine; only the proxy below ever sees a request


@pytest.fixture
def proxy(server, monkeypatch):
    """A loopback HTTP proxy (the test server): requests for REMOTE reach it, so it sees what would have gone out."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    srv = server()
    monkeypatch.setenv("HTTP_PROXY", srv.base_url.rsplit("/", 1)[0])
    return srv


def test_the_key_never_travels_over_plain_http_to_another_machine(proxy, monkeypatch):
    from cinereel.model_loaders.openai_compat import OpenAICompatError
    from cinereel.nodes.pipeline.backends import make_handle
    from cinereel.nodes.pipeline.preflight import PreflightError

    monkeypatch.setenv(KEY_ENV, SECRET)
    refusal = f"refusing to send the API key in {KEY_ENV} over plain HTTP to 203.0.113.7"
    with pytest.raises(OpenAICompatError, match=refusal) as err:
        _critique(REMOTE)
    assert SECRET not in str(err.value)
    with pytest.raises(PreflightError, match=refusal):
        make_handle("llm", "OpenAI-compatible server", base_url=REMOTE, api_key_env=KEY_ENV)
    assert proxy.requests == []

    # The same route without a key: the request goes out (through the proxy) carrying no Authorization header.
    monkeypatch.setenv(KEY_ENV, "")
    _critique(REMOTE)
    (request,) = proxy.requests
    assert request["path"] == f"{REMOTE}/chat/completions" and "authorization" not in request["headers"]


@pytest.mark.parametrize("base_url, allowed", [
    ("http://127.0.0.1:8000/v1", True), ("http://127.8.9.10/v1", True), ("http://localhost:11434/v1", True),
    ("http://LOCALHOST./v1", True), ("http://[::1]:8000/v1", True), ("https://api.example.com/v1", True),
    ("https://10.0.0.5/v1", True),
    ("http://10.0.0.5:8000/v1", False), ("http://api.example.com/v1", False), ("http://[::ffff:8.8.8.8]/v1", False),
    ("http://localhost.example.com/v1", False), ("http://0.0.0.0:8000/v1", False), ("http://128.0.0.1/v1", False),
    ("http://user:hunter2@127.0.0.1:8000/v1", False), ("ftp://127.0.0.1/v1", False),
])
def test_where_a_key_may_go(base_url, allowed):
    from cinereel.model_loaders.api_keys import key_problems

    with_key = key_problems(base_url, "X_API_KEY", {"X_API_KEY": "k"})
    assert (with_key == []) is allowed, with_key
    assert "hunter2" not in json.dumps(with_key)
    without_key = key_problems(base_url, "X_API_KEY", {})
    assert without_key == [] or "password" in without_key[0] or "must start with" in without_key[0]


def test_falls_back_to_json_mode_when_json_schema_is_rejected(server):
    srv = server("no_json_schema")
    from cinereel.model_loaders.openai_compat import load_openai

    validate_plan(load_openai(handle_for(srv.base_url)).plan(REQUEST)["plan"])
    assert [r["body"]["response_format"]["type"] for r in srv.requests] == ["json_schema", "json_object"]


def test_malformed_json_twice_is_a_clear_error(server):
    srv = server("malformed")
    from cinereel.model_loaders.openai_compat import OpenAICompatError, load_openai

    with pytest.raises(OpenAICompatError, match="answered malformed JSON twice") as err:
        load_openai(handle_for(srv.base_url)).plan(REQUEST)
    assert srv.base_url in str(err.value) and len(srv.requests) == 2
    assert "rejected" in srv.requests[1]["body"]["messages"][-1]["content"]  # the re-ask carried the error


def test_server_down_timeout_and_http_500_name_the_cause(server):
    from cinereel.model_loaders.openai_compat import OpenAICompatError, load_openai

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with pytest.raises(OpenAICompatError, match="connection refused") as err:
        load_openai(handle_for(down)).plan(REQUEST)
    assert down in str(err.value)

    slow = server("slow")
    model = load_openai(handle_for(slow.base_url, timeout_s=0.5))
    # Bounded waiting, as the openai client received it: 0.5 s, no retry (handle_for), then the error.
    assert (model._client.timeout, model._client.max_retries) == (0.5, 0)
    with pytest.raises(OpenAICompatError, match=r"did not answer: [0-9.]+ s waited in all, 1 try of up to 0\.5 s "
                                                r"each") as err:
        model.plan(REQUEST)
    assert slow.base_url in str(err.value)
    retrying = load_openai(handle_for(slow.base_url, timeout_s=0.3, max_retries=1))
    with pytest.raises(OpenAICompatError, match=r"2 tries of up to 0\.3 s each") as err:
        retrying.plan(REQUEST)
    waited = float(re.search(r"([0-9.]+) s waited in all", str(err.value)).group(1))
    assert waited >= 0.6, "the total covers both tries, not the last one"

    broken = server("500")
    with pytest.raises(OpenAICompatError, match="HTTP 500: CUDA out of memory") as err:
        load_openai(handle_for(broken.base_url)).plan(REQUEST)
    assert broken.base_url in str(err.value)


@pytest.mark.parametrize("mode, cause", [("malformed", "malformed JSON twice"), ("500", "HTTP 500"),
                                         ("slow", "s waited in all, 3 tries of up to 1 s each")])
def test_a_reel_whose_critic_cannot_answer_finishes_with_its_clips_flagged(server, tmp_path, capsys, mode, cause):
    """Garbage, a server error or a timeout from the critic after the client's own retries: the gate counts a
    failed critique with the reason critic_unavailable, re-renders nothing, keeps the clip and the reel ends.
    The keyframe gate before it (on by default with a real critic) keeps each keyframe unjudged alike."""
    from cinereel.nodes.pipeline.cli import main
    from cinereel_testkit import sample_plan_dict

    plan = sample_plan_dict(width=448, height=256, duration_s=2.0)
    for shot in plan["shots"]:
        shot.update(duration_s=1.0, narration="")  # what is under test is the gate, not the voice
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    critic = server(mode)
    out = tmp_path / "out"
    code = main([REQUEST["sentence"], "--plan", str(plan_file), "--gate", "--max-retries", "2", "--llm", "openai",
                 "--set", f"llm.base_url={critic.base_url}", "--set", "llm.model=qwen3.5-35b-a3b",
                 "--set", f"llm.timeout_s={1 if mode == 'slow' else ANSWER_TIMEOUT_S:g}", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    report = json.loads((Path(summary["run_dir"]) / "report.json").read_text(encoding="utf-8"))
    shots = report["gate"]["shots"]
    assert [s["shot"] for s in shots] == ["shot_01", "shot_02"]
    for shot in shots:
        (attempt,) = shot["attempts"]  # a new render cannot make the critic answer
        assert shot["flagged"] and shot["reason"] == "critic_unavailable" and shot["chosen_attempt"] == 1
        assert attempt["reason"] == "critic_unavailable" and cause in attempt["notes"]
    assert report["gate"]["flagged"] == ["shot_01", "shot_02"]
    assert sorted(p.name for p in (Path(summary["run_dir"]) / "clips").glob("*.mp4")) == [
        "shot_01.attempt1.mp4", "shot_02.attempt1.mp4"]
    assert Path(summary["reel"]).stat().st_size > 0
    assert [(s["verdict"], len(s["attempts"])) for s in report["keyframe_gate"]["shots"]] == [("unjudged", 1)] * 2
    warnings = [line for line in captured.err.splitlines() if line.startswith("cinereel: warning: ")]
    assert len(warnings) == 4 and all("critic_unavailable" in w and cause in w for w in warnings), captured.err
    assert sum("at the keyframe gate" in w for w in warnings) == 2
    assert report["warnings"] == [w[len("cinereel: warning: "):] for w in warnings]


def kokoro_budget(duration_s: float) -> int:
    """Words Kokoro holds in a shot by the rate table (en-US), the voice starting 0.25 s in, ending 0.25 s early."""
    table = json.loads((Path(__file__).resolve().parents[1] / "model_loaders" / "rules_data" / "speaking_rates.json")
                       .read_text(encoding="utf-8"))
    return int((duration_s - 0.5) * table["engines"]["kokoro"]["languages"]["en-US"]["per_second"] + 1e-9)


def test_narration_too_long_for_the_voice_is_sent_back_with_each_shot_s_exact_budget(server):
    from cinereel.model_loaders.openai_compat import load_openai

    srv = server("long_narration_once")
    result = load_openai(handle_for(srv.base_url)).plan({**REQUEST, "voice_engine": "kokoro"})
    assert len(srv.requests) == 2, "one answer, one request to shorten it"
    first, again = (r["body"]["messages"] for r in srv.requests)
    assert again[: len(first)] == first
    assert again[-2]["role"] == "assistant" and LONG_NARRATION in again[-2]["content"]
    ask = again[-1]["content"]
    budget = kokoro_budget(4.0)
    assert "Kokoro en-US" in ask
    for number in (1, 2, 3):
        assert (f"shot {number} (shot-0{number}): {len(LONG_NARRATION.split())} words" in ask
                and f"the shot has 3.50 s: at most {budget} words" in ask), ask
    plan = validate_plan(result["plan"])
    assert [s.narration for s in plan.shots] == [s["narration"] for s in model_draft()["shots"]]
    assert all(len(s.narration.split()) <= budget for s in plan.shots)
    assert result["warnings"] == []


def test_narration_that_stays_too_long_is_cut_at_a_word_boundary_with_a_warning(server):
    from cinereel.model_loaders.openai_compat import load_openai
    from cinereel.model_loaders.qwen import NARRATION_REASKS

    srv = server("long_narration")
    result = load_openai(handle_for(srv.base_url)).plan({**REQUEST, "voice_engine": "kokoro"})
    assert len(srv.requests) == 1 + NARRATION_REASKS
    budget = kokoro_budget(4.0)
    words = LONG_NARRATION.split()
    for shot in validate_plan(result["plan"]).shots:
        assert shot.narration == " ".join(words[:budget])
    assert len(result["warnings"]) == 3
    assert all("cut at a word boundary" in w and "Kokoro en-US" in w for w in result["warnings"])
