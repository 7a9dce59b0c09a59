"""Director and critic on any OpenAI-compatible server (vLLM, SGLang, Ollama, LM Studio, llama.cpp...).

Registers the model family ``openai-compatible``. ``load_openai(handle)``
returns an object with the same ``plan`` and ``critique`` methods as the
Qwen3.5 backend, built on the official ``openai`` client and the same
prompts, generation schemas, post-processing and validation (``qwen.py``).

Handle options:

=============== ================ ==============================================================
option          default          meaning
=============== ================ ==============================================================
base_url        (required)       the server's API root, e.g. ``http://127.0.0.1:8000/v1``
model           checkpoint, else the server's first model (``GET /models``)
api_key_env     ``OPENAI_API_KEY`` NAME of the environment variable holding the key (must end in ``_API_KEY``);
                                 unset or empty: no Authorization header is sent
timeout_s       120              seconds to wait for one answer
max_retries     2                the client's retries on connection errors, 429 and 5xx
temperature     0.0              sampling temperature
seed            0                passed to servers that honour it
max_tokens      4096             answer budget of a plan (critic: ``critic_max_tokens``, 768)
structured      ``auto``         ``json_schema``, ``json_object`` or ``none``; ``auto`` tries them in
                                 that order, falling back when the server rejects one
director_prompt / critic_prompt  system prompt files, as for ``qwen3.5``
critic_frame_size 448            longest side, in pixels, of the images sent
=============== ================ ==============================================================

The API key is read from the environment when the client is made; it is never
stored in the handle, a plan, a critique, a report or a workflow, and never
printed. ``api_keys.py`` says where it may come from and go: a variable whose
name ends in ``_API_KEY``, never over plain HTTP to another machine. The
openai client itself never holds it (it gets a placeholder): a request hook
sets the ``Authorization`` header, after removing any the client added from the
environment (``OPENAI_CUSTOM_HEADERS``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``),
and redirects are not followed, so the key reaches only ``base_url``'s origin.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .api_keys import ApiKeyRefused, api_key_for, key_env_name
from .errors import ModelUnavailable
from .handles import ModelHandle
from .qwen import (
    CRITIC_PROMPT,
    DEFAULT_FRAME_SIZE,
    DIRECTOR_PROMPT,
    check_frames,
    critic_user_text,
    critique_from_answer,
    critique_generation_schema,
    director_request,
    director_user_message,
    narration_char_limit,
    parse_json_answer,
    plan_answerer,
    plan_generation_schema,
    plan_that_fits,
    read_prompt,
    to_pil,
)
from .residency import register_family

log = logging.getLogger("cinereel.openai")

FAMILY = "openai-compatible"
NO_KEY = "cinereel-no-key"  # what the openai client holds; the request hook replaces or removes its header
# Headers the openai client fills from the environment, never from the workflow: none of them leaves with a request.
ENVIRONMENT_HEADERS = ("authorization", "openai-organization", "openai-project")
DEFAULT_TIMEOUT_S = 120.0
STRUCTURED_MODES = ("json_schema", "json_object", "none")


class OpenAICompatError(ModelUnavailable):
    """The server could not be reached, failed, or answered unusable output. The message names the cause."""


class OpenAICompatLLM:
    """Director and critic roles over the chat-completions API. Plain data in and out."""

    def __init__(self, handle: ModelHandle):
        from openai import OpenAI

        base_url = handle.option("base_url")
        if not base_url or not isinstance(base_url, str):
            raise ValueError("the openai-compatible backend needs the option base_url "
                             "(for example 'http://127.0.0.1:8000/v1')")
        self.handle = handle
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(handle.option("timeout_s", DEFAULT_TIMEOUT_S))
        try:  # before any request: a variable that is not an API key, or a key bound for plain HTTP elsewhere
            key = api_key_for(self.base_url, handle.option("api_key_env"))
        except ApiKeyRefused as exc:
            raise OpenAICompatError(str(exc)) from None
        # The key lives only in the request hook; the handle holds the variable's name, the client a placeholder.
        self._client = OpenAI(base_url=self.base_url, api_key=NO_KEY, timeout=self.timeout_s,
                              max_retries=int(handle.option("max_retries", 2)),
                              http_client=guarded_http_client(self.base_url, key))
        structured = handle.option("structured", "auto")
        if structured not in ("auto", *STRUCTURED_MODES):
            raise ValueError(f"structured must be 'auto' or one of {', '.join(STRUCTURED_MODES)}, got {structured!r}")
        self._modes = list(STRUCTURED_MODES) if structured == "auto" else [structured]
        self._model = handle.option("model") or None
        self.engine = f"openai-compatible:{self._model}" if self._model else "openai-compatible"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatLLM(base_url={self.base_url!r}, model={self._model!r})"

    # -- roles --------------------------------------------------------------
    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        req = director_request(request)
        system = read_prompt(self.handle.option("director_prompt"), DIRECTOR_PROMPT, "director")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": director_user_message(req)}]
        schema = plan_generation_schema(req.shots, req.language_override, narration_char_limit(req))

        max_tokens = int(self.handle.option("max_tokens", 4096))
        answer = plan_answerer(req, lambda msgs, accept: self._ask_valid(msgs, schema, "cinereel_plan", max_tokens,
                                                                         accept, "plan"))
        plan, warnings = plan_that_fits(answer, messages, req)
        return {"plan": plan, "warnings": warnings, "engine": self.engine}

    def critique(self, frames: Any, portraits: Sequence[Any], prompt: str) -> dict[str, Any]:
        frames = check_frames(frames)
        size = int(self.handle.option("critic_frame_size", DEFAULT_FRAME_SIZE))
        who, shot, ask = critic_user_text(str(prompt or ""), len(portraits or []), len(frames))
        content: list[dict[str, Any]] = [{"type": "text", "text": who}]
        content += [_image_part(p, size) for p in portraits or []]
        content.append({"type": "text", "text": shot})
        content += [_image_part(f, size) for f in frames]
        content.append({"type": "text", "text": ask})
        system = read_prompt(self.handle.option("critic_prompt"), CRITIC_PROMPT, "critic")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        return self._ask_valid(messages, critique_generation_schema(), "cinereel_critique",
                               int(self.handle.option("critic_max_tokens", 768)), critique_from_answer, "critique")

    # -- protocol -----------------------------------------------------------
    def _ask_valid(self, messages: list[dict[str, Any]], schema: dict[str, Any], name: str, max_tokens: int,
                   accept: Any, what: str) -> Any:
        """One answer through ``accept``; one re-ask with the error; then a clear error."""
        answer = self._complete(messages, schema, name, max_tokens)
        try:
            return accept(answer)
        except ValueError as first:
            log.warning("%s from %s rejected, asking again: %s", what, self.base_url, first)
            retry = [*messages, {"role": "assistant", "content": answer},
                     {"role": "user", "content": f"That answer was rejected: {first}. Answer again with one "
                                                 "corrected JSON object that follows the schema, nothing else."}]
            second_answer = self._complete(retry, schema, name, max_tokens)
            try:
                return accept(second_answer)
            except ValueError as second:
                malformed = [not _is_json(a) for a in (answer, second_answer)]
                kind = "malformed JSON" if all(malformed) else f"an invalid {what}"
                raise OpenAICompatError(
                    f"the server at {self.base_url} (model {self._model!r}) answered {kind} twice: "
                    f"first {first} ({_excerpt(answer)}); then {second} ({_excerpt(second_answer)})") from None

    def _model_name(self) -> str:
        if self._model is None:
            models = self._call(lambda: self._client.models.list())
            ids = [m.id for m in models.data]
            if not ids:
                raise OpenAICompatError(f"the server at {self.base_url} lists no models; set the option 'model'")
            self._model = ids[0]
            self.engine = f"openai-compatible:{self._model}"
        return self._model

    def _complete(self, messages: list[dict[str, Any]], schema: dict[str, Any], name: str, max_tokens: int) -> str:
        model = self._model_name()
        while True:
            mode = self._modes[0]
            kwargs: dict[str, Any] = {}
            if mode == "json_schema":
                kwargs["response_format"] = {"type": "json_schema",
                                             "json_schema": {"name": name, "schema": schema, "strict": True}}
            elif mode == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
                messages = _with_schema_in_system(messages, schema)
            else:
                messages = _with_schema_in_system(messages, schema)
            try:
                response = self._call(lambda: self._client.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens,
                    temperature=float(self.handle.option("temperature", 0.0)),
                    seed=int(self.handle.option("seed", 0)), **kwargs))
            except _Unsupported as exc:
                if len(self._modes) > 1:
                    log.info("the server at %s rejected response_format %s (%s); falling back to %s",
                             self.base_url, mode, exc, self._modes[1])
                    self._modes.pop(0)
                    continue
                raise OpenAICompatError(f"the server at {self.base_url} rejected the request: {exc}") from None
            if not response.choices:
                raise OpenAICompatError(f"the server at {self.base_url} answered no choices")
            choice = response.choices[0]
            text = choice.message.content or ""
            if choice.finish_reason == "length":
                log.warning("the answer from %s hit max_tokens (%d)", self.base_url, max_tokens)
            return text

    def _call(self, fn: Any) -> Any:
        import openai

        started = time.monotonic()
        try:
            return fn()
        except openai.APITimeoutError:
            tries = 1 + self._client.max_retries
            raise OpenAICompatError(
                f"the server at {self.base_url} did not answer: {time.monotonic() - started:.1f} s waited in all, "
                f"{tries} {'try' if tries == 1 else 'tries'} of up to {self.timeout_s:g} s each (raise the option "
                "timeout_s for slow models)") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            refused = "refused" in str(cause).lower() or isinstance(cause, ConnectionRefusedError)
            reason = "connection refused — is the server running?" if refused else f"connection failed: {cause}"
            raise OpenAICompatError(f"cannot reach the OpenAI-compatible server at {self.base_url}: {reason}") from None
        except openai.AuthenticationError as exc:
            key_env = key_env_name(self.handle.option("api_key_env"))
            raise OpenAICompatError(f"the server at {self.base_url} refused the API key (HTTP 401); set the "
                                    f"environment variable {key_env}: {_status_message(exc)}") from None
        except openai.BadRequestError as exc:
            if "response_format" in str(exc) or "json_schema" in str(exc) or "json_object" in str(exc):
                raise _Unsupported(_status_message(exc)) from None
            raise OpenAICompatError(f"the server at {self.base_url} rejected the request (HTTP 400): "
                                    f"{_status_message(exc)}") from None
        except openai.APIStatusError as exc:
            raise OpenAICompatError(f"the server at {self.base_url} failed with HTTP {exc.status_code}: "
                                    f"{_status_message(exc)}") from None


def guarded_http_client(base_url: str, key: str | None) -> Any:
    """The openai client's HTTP client, sending to ``base_url``'s origin only, without following redirects, with
    ``Authorization: Bearer <key>`` when there is a key and no Authorization header at all when there is none."""
    from openai import DefaultHttpxClient

    origin = _origin(urlsplit(base_url))
    custom_env = os.environ.get("OPENAI_CUSTOM_HEADERS", "")
    custom = [line.partition(":")[0].strip().lower() for line in custom_env.split("\n")]

    def guard(request: Any) -> None:
        url = request.url
        if _origin(urlsplit(str(url))) != origin:
            raise OpenAICompatError(f"refusing to send a request to {url.scheme}://{url.host}, which is not the "
                                    f"configured server {base_url}")
        for name in {*ENVIRONMENT_HEADERS, *filter(None, custom)}:
            if name in request.headers:
                del request.headers[name]
        if key:
            request.headers["Authorization"] = f"Bearer {key}"

    return DefaultHttpxClient(event_hooks={"request": [guard]}, follow_redirects=False)


def _origin(parts: Any) -> tuple[str, str, int]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)


class _Unsupported(Exception):
    """The server rejected the structured-output mode."""


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _with_schema_in_system(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
    note = "\n\nThe answer must be one JSON object valid against this JSON Schema:\n" + json.dumps(schema)
    if messages and messages[0]["role"] == "system" and note not in messages[0]["content"]:
        return [{**messages[0], "content": messages[0]["content"] + note}, *messages[1:]]
    return messages


def _is_json(text: str) -> bool:
    try:
        parse_json_answer(text)
        return True
    except ValueError:
        return False


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _image_part(image: Any, max_side: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    to_pil(image, max_side).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def load_openai(handle: ModelHandle) -> OpenAICompatLLM:
    return OpenAICompatLLM(handle)


def unload_openai(model: OpenAICompatLLM) -> None:
    model._client.close()


register_family(FAMILY, load_openai, unload_openai)
