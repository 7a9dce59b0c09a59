"""The pack in ComfyUI 0.3.64's real frontend, driven by a headless Chromium through Playwright.

Loads each shipped workflow the way a user does (the frontend's file input), queues the preview workflow
once, and checks what a person would see: no missing-node or error dialog, no console error or warning
from the pack, no CineReel event the frontend calls unhandled, no two nodes drawn over each other (after
loading and after the run, with every node inside its labelled group), the shot list, critic board and a
playing reel, the resident badge on the one resident loader, template thumbnails, and text never parsed as
HTML. Screenshots go to the test's tmp folder.

Uses the system Chromium (``/usr/bin/chromium``, or ``$CINEREEL_CHROMIUM``); never Playwright's own browser
download. Skips, saying why, without Chromium, Playwright or a current ComfyUI; fails instead where
CINEREEL_COMFY_REQUIRED=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from cinereel_testkit import PACK_ROOT, load_test_module, unavailable

current = load_test_module("comfy_current")

pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.browser, pytest.mark.xdist_group("comfyui-server")]

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
PREVIEW = PACK_ROOT / "workflows" / "CineReel preview reel (CPU, no weights).json"
GROUPS = {"Models", "Story", "Pictures", "Motion", "Sound", "Output"}
BATCH_GROUPS = {"Models", "Story", "Output"}
HOSTILE = "<img src=x onerror=window.__pwned=1>"
SENTENCE = f"A lone astronaut walks through a neon-lit Tokyo alley at dusk {HOSTILE}"
RUN_LIMIT_S = 600


def chromium() -> str | None:
    for candidate in (os.environ.get("CINEREEL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class Frontend:
    """One browser tab on the server's frontend; everything it logged, failed to load or threw."""

    def __init__(self, page, server, shots: Path):
        self.page, self.server, self.shots = page, server, shots
        self.console: list[dict] = []
        self.page_errors: list[str] = []
        page.on("console", lambda m: self.console.append({"type": m.type, "text": m.text,
                                                          "url": (m.location or {}).get("url", "")}))
        page.on("pageerror", lambda e: self.page_errors.append(f"{e}\n{getattr(e, 'stack', '') or ''}"))
        self.responses: list[tuple[int, str]] = []
        page.on("response", lambda r: self.responses.append((r.status, r.url)))

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def settle(self) -> None:
        """Two animation frames and a little more: DOM widgets and sizes laid out."""
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        time.sleep(0.5)

    def load(self, workflow: Path) -> dict:
        saved = json.loads(workflow.read_text(encoding="utf-8"))
        self.page.set_input_files("#comfy-file-input", str(workflow))
        expected = sorted(n["id"] for n in saved["nodes"])
        self.page.wait_for_function("ids => JSON.stringify(app.graph._nodes.map(n => n.id).sort((a, b) => a - b)) "
                                    "=== JSON.stringify(ids)", arg=expected, timeout=60_000)
        self.settle()
        return saved

    def graph(self) -> dict:
        return self.page.evaluate("""() => {
          const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
          return {
            nodes: app.graph._nodes.map(n => ({id: n.id, type: n.type, pos: Array.from(n.pos),
              size: Array.from(n.size), box: [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]})),
            groups: (app.graph._groups ?? app.graph.groups ?? []).map(g => ({title: g.title,
              box: Array.from(g._bounding ?? g.bounding)})),
          };
        }""")

    def visible_dialogs(self) -> list[str]:
        return self.page.evaluate("""() => [...document.querySelectorAll('.p-dialog, [role=dialog], .comfy-modal')]
          .filter(e => e.getClientRects().length && getComputedStyle(e).display !== 'none'
                       && getComputedStyle(e).visibility !== 'hidden')
          .map(e => (e.innerText || '').trim().slice(0, 500))""")

    def from_the_pack(self) -> list[str]:
        """Console errors and warnings, page errors and failed requests that concern the pack."""
        def ours(text: str) -> bool:
            return "cinereel" in text.lower()

        found = [f"console {m['type']}: {m['text'][:400]} ({m['url']})" for m in self.console
                 if m["type"] in ("error", "warning") and (ours(m["text"]) or ours(m["url"]))]
        found += [f"page error: {e[:600]}" for e in self.page_errors if ours(e)]
        found += [f"HTTP {status} {url}" for status, url in self.responses if status >= 400 and ours(url)]
        return found


def overlaps(boxes: list[tuple[str, list[float]]]) -> list[str]:
    found = []
    for i, (a, (ax, ay, aw, ah)) in enumerate(boxes):
        for b, (bx, by, bw, bh) in boxes[i + 1:]:
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append(f"{a} {[round(v) for v in (ax, ay, aw, ah)]} overlaps {b} "
                             f"{[round(v) for v in (bx, by, bw, bh)]}")
    return found


def inside(inner: list[float], outer: list[float]) -> bool:
    x, y, w, h = inner
    gx, gy, gw, gh = outer
    return gx <= x and gy <= y and x + w <= gx + gw and y + h <= gy + gh


def layout_problems(graph: dict) -> list[str]:
    problems = overlaps([(f"node {n['id']} {n['type']}", n["box"]) for n in graph["nodes"]])
    problems += overlaps([(f"group {g['title']}", g["box"]) for g in graph["groups"]])
    titles = [g["title"] for g in graph["groups"]]
    # the batch template renders every stage inside its Batch node: no stage groups
    groups = BATCH_GROUPS if any(n["type"] == "CineReelBatch" for n in graph["nodes"]) else GROUPS
    if set(titles) != groups or len(titles) != len(groups):
        problems.append(f"groups are {titles}, not one each of {sorted(groups)}")
    for n in graph["nodes"]:
        holders = [g["title"] for g in graph["groups"] if inside(n["box"], g["box"])]
        if len(holders) != 1:
            problems.append(f"node {n['id']} {n['type']} {[round(v) for v in n['box']]} is inside {holders or 'no group'}")
    return problems


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed in this venv: `.venv/bin/pip install -e '.[test]'` (README)")
    executable = chromium()
    if executable is None:
        unavailable("no Chromium here: install the system one (`apt-get install chromium`) or set CINEREEL_CHROMIUM "
                    "to a Chromium binary (Playwright's own browser download is not used)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def frontend(browser, comfy_server, tmp_path_factory) -> Frontend:
    status, body = comfy_server.post("/api/settings/Comfy.TutorialCompleted", True)  # no first-run dialog
    assert status == 200, body
    shots = tmp_path_factory.mktemp("browser-screenshots")
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    ui = Frontend(page, comfy_server, shots)
    page.goto(comfy_server.url, timeout=180_000)
    page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=180_000)
    ui.settle()
    print(f"\nscreenshots: {shots}")
    yield ui
    page.close()


@pytest.fixture(scope="module")
def preview_run(frontend) -> dict:
    """The preview workflow, its sentence set to text with HTML in it, queued from the page; the page once the
    reel is in the Assemble node."""
    frontend.load(PREVIEW)
    typed = frontend.page.evaluate("""text => {
      const director = app.graph._nodes.find(n => n.type === 'CineReelDirector');
      const widget = director.widgets.find(w => w.name === 'sentence');
      widget.value = text;
      widget.callback?.(text);
      return widget.value;
    }""", SENTENCE)
    assert typed == SENTENCE
    before = set(frontend.server.get("/history"))
    frontend.page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    started = time.monotonic()
    entry = None
    while time.monotonic() - started < RUN_LIMIT_S:
        frontend.server.check_alive()
        history = frontend.server.get("/history")
        new = [history[k] for k in history if k not in before]
        if new and new[0].get("status", {}).get("status_str") in ("success", "error"):
            entry = new[0]
            break
        time.sleep(2)
    assert entry is not None, f"the queued preview did not finish in {RUN_LIMIT_S} s: {frontend.server.log_tail()}"
    assert entry["status"]["status_str"] == "success", current.failure_of(entry)
    frontend.page.wait_for_function("""() => [...document.querySelectorAll('[data-cinereel-panel=cinereel_video] video')]
      .some(v => v.readyState === 4)""", timeout=120_000)
    frontend.settle()
    frontend.screenshot("preview-after-run")
    return {"entry": entry, "seconds": round(time.monotonic() - started, 1)}


# -- tests ------------------------------------------------------------------------------

def test_every_template_has_a_readable_title_and_a_thumbnail(frontend):
    names = frontend.page.evaluate(f"async () => (await (await fetch('/api/workflow_templates')).json())"
                                   f"[{json.dumps(current.PACK_FOLDER)}]")
    assert sorted(names) == sorted(p.stem for p in WORKFLOWS)
    for name in names:  # the title the template browser shows is the file name (frontend 1.27)
        assert name.startswith("CineReel ") and "_" not in name, name
    sizes = frontend.page.evaluate("""async ([module, names]) => Promise.all(names.map(name => new Promise(done => {
      const image = new Image();  // the URL the template browser builds for a custom node's thumbnail
      image.onload = () => done([name, image.naturalWidth, image.naturalHeight]);
      image.onerror = () => done([name, 0, 0]);
      image.src = `/api/workflow_templates/${module}/${name}.jpg`;
    })))""", [current.PACK_FOLDER, names])
    for name, width, height in sizes:
        assert width >= 320 and height >= 320 * 9 // 16, f"{name}.jpg: {width}x{height}"
    frontend.page.evaluate("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    try:
        frontend.page.get_by_text(current.PACK_FOLDER).first.click(timeout=30_000)
        for name in names:
            frontend.page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        # the cards fetched every thumbnail (the frontend shows them through blob URLs, so ask the network log)
        fetched = f"/api/workflow_templates/{current.PACK_FOLDER}/"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = {unquote(url.split(fetched, 1)[1]) for status, url in frontend.responses
                   if status == 200 and fetched in url and url.endswith(".jpg")}
            if got >= {f"{name}.jpg" for name in names}:
                break
            time.sleep(0.5)
        frontend.screenshot("templates")
        assert got == {f"{name}.jpg" for name in names}
    finally:
        frontend.page.keyboard.press("Escape")
        frontend.settle()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_the_workflow_loads_without_dialogs_in_groups_at_the_size_drawn(frontend, workflow):
    saved = frontend.load(workflow)
    frontend.screenshot(f"loaded {workflow.stem}")
    assert frontend.visible_dialogs() == []
    graph = frontend.graph()
    assert layout_problems(graph) == []
    # the sizes saved are the sizes drawn: the frontend did not have to grow any node to fit its widgets
    drawn = {n["id"]: n["size"] for n in graph["nodes"]}
    for node in saved["nodes"]:
        assert drawn[node["id"]] == pytest.approx(node["size"], abs=1), (node["type"], node["size"], drawn[node["id"]])


def test_the_queued_preview_shows_its_shots_scores_and_a_playing_reel(frontend, preview_run):
    assert frontend.visible_dialogs() == []
    shots = frontend.page.inner_text("[data-cinereel-panel=cinereel_shots]")
    for k in range(1, 7):
        assert f"shot-0{k}" in shots
    assert "done: " in shots and "assemble" in shots  # the stages of the run, from cinereel.stage events
    scores = frontend.page.inner_text("[data-cinereel-panel=cinereel_scores]")
    assert scores.count("attempt 1") == 6 and "mean" in scores
    video = frontend.page.evaluate("""async () => {
      const v = document.querySelector('[data-cinereel-panel=cinereel_video] video');
      v.muted = true;
      await v.play();
      const start = v.currentTime;
      await new Promise(r => setTimeout(r, 1500));
      return {readyState: v.readyState, duration: v.duration, width: v.videoWidth, height: v.videoHeight,
              advanced: v.currentTime - start, paused: v.paused, error: v.error && v.error.code};
    }""")
    frontend.screenshot("preview-playing")
    assert video["error"] is None and video["readyState"] == 4, video
    assert video["duration"] == pytest.approx(30.0, abs=0.2) and (video["width"], video["height"]) == (1280, 720)
    assert not video["paused"] and video["advanced"] > 0.2, video


def test_nothing_overlaps_after_the_run(frontend, preview_run):
    assert layout_problems(frontend.graph()) == []


def test_only_the_resident_loader_wears_the_badge(frontend, preview_run):
    now = frontend.server.get("/cinereel/residency")
    badges = frontend.page.evaluate("""() => app.graph._nodes.filter(n => n.type.endsWith('Loader'))
      .map(n => ({type: n.type, resident: n.cinereelResident ?? null, key: n.cinereelHandle?.key ?? null}))""")
    assert len(badges) == 5 and all(b["key"] for b in badges), badges
    wearing = [b for b in badges if b["resident"]]
    assert [(b["type"], b["key"], b["resident"]) for b in wearing] == [
        ("CineReelMusicLoader", now["resident_key"], now["resident"])], badges


def test_text_is_never_parsed_as_html(frontend, preview_run):
    found = frontend.page.evaluate(f"""() => ({{
      pwned: window.__pwned ?? null,
      injected: document.querySelectorAll('img[src="x"]').length,
      shown: [...document.querySelectorAll('[data-cinereel-panel]')].some(p => p.textContent.includes({json.dumps(HOSTILE)})),
    }})""")
    assert found == {"pwned": None, "injected": 0, "shown": True}


def test_the_pack_logs_no_error_or_warning_and_every_event_is_handled(frontend, preview_run):
    unhandled = [m["text"][:300] for m in frontend.console
                 if "Unhandled message" in m["text"] or "Unknown message type" in m["text"]]
    assert unhandled == []
    assert frontend.from_the_pack() == []
