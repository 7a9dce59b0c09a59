"""A current ComfyUI (0.3.64) server with the pack installed, driven through its HTTP API.

The ComfyUI source comes from ``$COMFYUI_PATH`` (a checkout) or from
``../shared/vendor/ComfyUI-0.3.64.tar.gz`` beside this repository, unpacked to a temporary folder;
nothing of it is copied into the repository. The server runs as a subprocess of the test venv's
Python (``main.py --cpu``, on 127.0.0.1 and a free port, its own ``--base-directory``) with the pack
linked into ``custom_nodes/ComfyUI-CineReel``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACK_ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.3.64"
ARCHIVE = PACK_ROOT.parent / "shared" / "vendor" / f"ComfyUI-{VERSION}.tar.gz"
PACK_FOLDER = "ComfyUI-CineReel"  # a hyphen, as users clone it
HOW_TO_ENABLE = (f"set COMFYUI_PATH to a ComfyUI checkout (or put ComfyUI-{VERSION}.tar.gz in ../shared/vendor/ "
                 "beside this repository) and install its requirements into this venv as README's 'Run the tests' says")


class Unavailable(Exception):
    """No current ComfyUI to test against here: the reason and how to enable the tests."""


# -- the ComfyUI source and its requirements ------------------------------------------

def comfy_source(scratch: Path) -> Path:
    """The ComfyUI folder to run: ``$COMFYUI_PATH``, else the vendored archive unpacked into ``scratch``."""
    configured = os.environ.get("COMFYUI_PATH")
    if configured:
        folder = Path(configured).expanduser()
        if not (folder / "main.py").is_file():
            raise Unavailable(f"COMFYUI_PATH={configured} has no main.py: point it at a ComfyUI checkout")
        return folder
    if not ARCHIVE.is_file():
        raise Unavailable(f"no ComfyUI here: {ARCHIVE} does not exist and COMFYUI_PATH is unset; {HOW_TO_ENABLE}")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(scratch, filter="data")
    (folder,) = [p for p in scratch.iterdir() if (p / "main.py").is_file()]
    return folder


def missing_requirements(requirements: Path) -> list[str]:
    """The lines of ComfyUI's requirements.txt that this Python's installed distributions do not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(installed.split("+")[0], prereleases=True):
            missing.append(f"{line} (installed: {installed})")
    return missing


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the server -------------------------------------------------------------------------

class ServerDied(RuntimeError):
    pass


class ComfyServer:
    """``main.py --cpu`` in a subprocess; JSON over HTTP; stopped with its whole process group."""

    def __init__(self, source: Path, base: Path):
        self.source, self.base = source, base
        self.output = base / "output"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        (self.base / "custom_nodes").mkdir(parents=True, exist_ok=True)  # --base-directory needs it first
        (self.base / "custom_nodes" / PACK_FOLDER).symlink_to(PACK_ROOT, target_is_directory=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "HF_HUB_CACHE": str(self.base / "hf-hub-cache")}  # empty: no checkpoint is "downloaded" here
        command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--base-directory", str(self.base)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.source, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll() if self.process else None
        if code is not None:
            raise ServerDied(f"ComfyUI exited with code {code}; the end of its log:\n{self.log_tail()}")

    def wait_until_ready(self, limit_s: float = 240.0) -> None:
        """Until ``/system_stats`` answers; raises with the log tail if the server dies or never answers."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self.get("/system_stats", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise ServerDied(f"ComfyUI did not answer within {limit_s:.0f} s; the end of its log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    # -- HTTP -----------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get(self, path: str, timeout: float = 60) -> Any:
        status, body = self.request("GET", path, timeout=timeout)
        assert status == 200, f"GET {path}: HTTP {status}: {body[:2000]!r}"
        return json.loads(body)

    def post(self, path: str, body: Any) -> tuple[int, bytes]:
        return self.request("POST", path, body)

    def run(self, prompt: dict, limit_s: float = 900.0) -> dict:
        """Queue an API-format prompt; its /history entry once it finished (success or error)."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
        assert status == 200, f"POST /prompt refused the prompt (HTTP {status}): {body[:4000].decode(errors='replace')}"
        prompt_id = json.loads(body)["prompt_id"]
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.check_alive()
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(1.0)
        raise AssertionError(f"prompt {prompt_id} did not finish within {limit_s:.0f} s; log:\n{self.log_tail()}")


def failure_of(entry: dict) -> str:
    """The execution error in a /history entry, readable."""
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return json.dumps(entry.get("status"))[:3000]


def saved_files(entry: dict, output: Path) -> dict[str, list[Path]]:
    """Per output node id, the files it wrote to the output folder (from its ``ui`` dict in /history)."""
    found: dict[str, list[Path]] = {}
    for node_id, ui in entry.get("outputs", {}).items():
        for items in ui.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                    found.setdefault(node_id, []).append(output / item.get("subfolder", "") / item["filename"])
    return found


# -- UI-format workflow -> API-format prompt, from /object_info ------------------------

def _inputs_in_order(info: dict) -> Iterator[tuple[str, list]]:
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            yield name, info["input"][section][name]


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """What the frontend sends when you press Queue, with each node's inputs as the server lists them."""
    from cinereel_testkit import convert_workflow

    return convert_workflow(workflow, lambda node_type: _inputs_in_order(object_info[node_type]))


# -- media a person could play ----------------------------------------------------------

def decode_errors(path: Path) -> str:
    """Decode every stream of ``path`` with ffmpeg (imageio-ffmpeg's); its error output, empty when clean."""
    from imageio_ffmpeg import get_ffmpeg_exe

    done = subprocess.run([get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, timeout=300)
    errors = done.stderr.decode("utf-8", "replace").strip()
    return errors or ("" if done.returncode == 0 else f"ffmpeg exit code {done.returncode}")
