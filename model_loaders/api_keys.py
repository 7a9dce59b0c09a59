"""Where an OpenAI-compatible server's API key may come from and where it may go.

A workflow is shared as a file and runs on someone else's machine, with their environment. So:

- the key is read only from an environment variable whose name ends in ``_API_KEY`` (the loader's
  ``api_key_env``, default ``OPENAI_API_KEY``): a workflow cannot name ``HOME``,
  ``AWS_SECRET_ACCESS_KEY`` or any other variable and have its value sent to a server of its choosing;
- the key never travels over plain HTTP to a host that is not this machine (127.0.0.0/8, ::1,
  ``localhost``): a workflow whose ``base_url`` is ``http://`` elsewhere is refused while a key is set;
- a ``base_url`` carrying a password (``http://user:secret@host``) is refused: it would sit in the workflow;
- with no key set, no ``Authorization`` header is sent at all.

Plain functions, no network and no third-party imports: the loader checks them before anything is sent,
and the preflight (``make_handle``) before anything loads.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
KEY_ENV_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*_API_KEY$")


class ApiKeyRefused(ValueError):
    """The settings would read a key from the wrong place or send it where it must not go."""


def key_env_name(option: object) -> str:
    return option if isinstance(option, str) and option else DEFAULT_API_KEY_ENV


def key_env_problem(name: str) -> str | None:
    if KEY_ENV_PATTERN.match(name):
        return None
    return (f"api_key_env {name!r} is not an API-key variable: CineReel reads the key only from an environment "
            f"variable whose name ends in _API_KEY (for example {DEFAULT_API_KEY_ENV} or MY_SERVER_API_KEY)")


def is_loopback_host(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: addresses that never leave this machine."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(base_url: str) -> str | None:
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"base_url {base_url!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"base_url {base_url!r} must start with http:// or https:// and name a host"
    if parts.password is not None:
        return (f"base_url {_without_password(base_url)} carries a password, which would be stored in the "
                "workflow; put the key in an environment variable ending in _API_KEY and name it in api_key_env")
    return None


def _without_password(base_url: str) -> str:
    parts = urlsplit(base_url)
    return base_url.replace(f":{parts.password}@", ":***@", 1) if parts.password else base_url


def key_problems(base_url: object, api_key_env: object, environ: Mapping[str, str] | None = None) -> list[str]:
    """Everything wrong with where the key would come from and go; [] when the server may be called."""
    environ = os.environ if environ is None else environ
    name = key_env_name(api_key_env)
    problems = [p for p in (key_env_problem(name),) if p]
    if not isinstance(base_url, str) or not base_url:
        return problems
    bad_url = url_problem(base_url)
    if bad_url:
        return [*problems, bad_url]
    parts = urlsplit(base_url)
    if not problems and environ.get(name) and parts.scheme == "http" and not is_loopback_host(parts.hostname):
        problems.append(f"refusing to send the API key in {name} over plain HTTP to {parts.hostname}, which is not "
                        "this machine: use https://, reach the server through a loopback address (for example "
                        f"an SSH tunnel to http://127.0.0.1:PORT), or unset {name} if the server needs no key")
    return problems


def api_key_for(base_url: str, api_key_env: object, environ: Mapping[str, str] | None = None) -> str | None:
    """The key to send to ``base_url`` (None: send no Authorization header); raises ``ApiKeyRefused``."""
    environ = os.environ if environ is None else environ
    problems = key_problems(base_url, api_key_env, environ)
    if problems:
        raise ApiKeyRefused("; ".join(problems))
    return environ.get(key_env_name(api_key_env)) or None
