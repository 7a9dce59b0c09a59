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
    # an earlier test on this shared server may have run the same loaders: ComfyUI would take them from its cache
    # and send no output for them (no handle, no badge). Free Memory resets the executor's cache; the queue's
    # worker wakes on the flag at once, long before the workflow below is loaded and queued.
    status, _ = frontend.server.post("/free", {"free_memory": True})
    assert status == 200
    time.sleep(1.0)
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
    assert "estimate on one H100: quality " in shots  # the plan's `cinereel estimate`, both motion presets
    scores = frontend.page.inner_text("[data-cinereel-panel=cinereel_scores]")
    # the preview's technical check as what it is: measured, not four scores no critic gave
    assert scores.count("attempt 1") == 6 and scores.count("technical check passed") == 6 and "composition" not in scores
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


# -- directing on the canvas: the shot editor, the live critic board, the keyframe strip ----------------------

SHORT = {"duration_s": 4.0, "shots": 2}  # a short preview reel: two 2-second shots
EDITOR = "[data-cinereel-panel=cinereel_editor]"
BOARD = "[data-cinereel-panel=cinereel_scores]"
STRIP = "[data-cinereel-panel=cinereel_strip]"


def set_widgets(frontend: Frontend, node_type: str, values: dict) -> None:
    frontend.page.evaluate("""([type, values]) => {
      const node = app.graph._nodes.find(n => n.type === type);
      for (const [name, value] of Object.entries(values)) {
        const widget = node.widgets.find(w => w.name === name);
        widget.value = value;
        widget.callback?.(value);
      }
    }""", [node_type, values])


def queue_and_wait(frontend: Frontend) -> dict:
    """Queue the graph from the page as the Run button does; its /history entry once it finished successfully."""
    before = set(frontend.server.get("/history"))
    frontend.page.evaluate("async () => { await app.queuePrompt(0, 1); }")  # its answer: false when node_errors is {}
    return wait_for_run(frontend, before)


def wait_for_run(frontend: Frontend, before: set) -> dict:
    """The /history entry of the run queued after ``before`` (the history's ids then), once it succeeded."""
    started = time.monotonic()
    while time.monotonic() - started < RUN_LIMIT_S:
        frontend.server.check_alive()
        history = frontend.server.get("/history")
        new = [history[k] for k in history if k not in before]
        if new and new[0].get("status", {}).get("status_str") in ("success", "error"):
            assert new[0]["status"]["status_str"] == "success", current.failure_of(new[0])
            frontend.settle()
            return new[0]
        time.sleep(1)
    raise AssertionError(f"the queued run did not finish in {RUN_LIMIT_S} s: {frontend.server.log_tail()}")


def run_folder(frontend: Frontend) -> Path:
    run_id = frontend.page.evaluate("() => app.graph._nodes.find(n => n.type === 'CineReelDirector').cinereel.runId")
    return frontend.server.output / "cinereel" / run_id


def plan_edits(frontend: Frontend) -> str:
    return frontend.page.evaluate("""() => app.graph._nodes.find(n => n.type === 'CineReelDirector')
      .widgets.find(w => w.name === 'plan_edits').value""")


@pytest.fixture(scope="module")
def short_run(frontend) -> Path:
    """The preview workflow as a two-shot, four-second reel, queued once; its run folder, the editor on show."""
    frontend.load(PREVIEW)
    set_widgets(frontend, "CineReelDirector", SHORT)
    queue_and_wait(frontend)
    frontend.page.wait_for_function(f"() => document.querySelectorAll('{EDITOR} [data-shot]').length === 2",
                                    timeout=60_000)
    return run_folder(frontend)


def test_an_edited_shot_alone_is_rendered_again(frontend, short_run):
    """Edit shot 2's prompt and camera in the editor, queue: only that shot's keyframe and clip are made again."""
    plan_before = json.loads((short_run / "plan.json").read_text(encoding="utf-8"))
    first, second = plan_before["shots"]
    camera = next(c for c in ("pan_left", "tilt_up") if c != second["camera"])
    frontend.page.fill(f'{EDITOR} [data-field="shots.1.prompt"]', "A red kite over the rooftops, wide and calm")
    frontend.page.select_option(f'{EDITOR} [data-field="shots.1.camera"]', camera)
    frontend.screenshot("editor-edited")
    stored = json.loads(plan_edits(frontend))
    assert stored["shots"][1]["prompt"] == "A red kite over the rooftops, wide and calm"
    assert stored["shots"][1]["camera"] == camera and stored["shots"][0] == first  # seeds intact, to the last digit
    assert "problem" not in frontend.page.inner_text(f"{EDITOR} [data-status]")
    made_before = json.loads((short_run / "manifest.json").read_text(encoding="utf-8"))

    queue_and_wait(frontend)
    report = json.loads((short_run / "report.json").read_text(encoding="utf-8"))
    plan_after = json.loads((short_run / "plan.json").read_text(encoding="utf-8"))
    assert plan_after["shots"][0] == first
    assert (plan_after["shots"][1]["prompt"], plan_after["shots"][1]["camera"]) == (
        "A red kite over the rooftops, wide and calm", camera)
    replaced = sorted(entry["artifact"] for entry in report["superseded"])
    pictures_and_clips = [rel for rel in replaced if rel.startswith(("keyframes/", "clips/", "portraits/"))]
    assert pictures_and_clips and all(second["id"] in rel for rel in pictures_and_clips), replaced
    assert any(rel.startswith("keyframes/") for rel in pictures_and_clips), replaced
    assert any(rel.startswith("clips/") for rel in pictures_and_clips), replaced
    made_after = json.loads((short_run / "manifest.json").read_text(encoding="utf-8"))
    kept = [rel for rel in made_before if first["id"] in rel and rel.startswith(("keyframes/", "clips/"))]
    assert kept and all(made_after[rel] == made_before[rel] for rel in kept), kept  # shot 1: not made again
    assert made_after["reel.mp4"] != made_before["reel.mp4"], "the assembly runs again with the edited shot"


def test_the_edit_survives_saving_and_reloading_the_workflow(frontend, short_run, tmp_path):
    edits = plan_edits(frontend)
    assert edits and "A red kite" in edits, "run test_an_edited_shot_alone_is_rendered_again first"
    saved = frontend.page.evaluate("() => JSON.stringify(app.graph.serialize())")  # what Save / Export writes
    path = tmp_path / "edited workflow.json"
    path.write_text(saved, encoding="utf-8")
    frontend.load(PREVIEW)  # another workflow in between: nothing carried over in memory
    assert plan_edits(frontend) == ""
    frontend.load(path)
    assert plan_edits(frontend) == edits
    frontend.page.wait_for_selector(f'{EDITOR} [data-field="shots.1.prompt"]', timeout=30_000)
    assert frontend.page.input_value(f'{EDITOR} [data-field="shots.1.prompt"]') == \
        "A red kite over the rooftops, wide and calm"
    frontend.screenshot("editor-reloaded")


def test_an_invalid_value_shows_beside_its_field_and_blocks_the_queue(frontend, short_run):
    frontend.page.wait_for_selector(f'{EDITOR} [data-field="shots.0.flow_shift"]', timeout=30_000)
    frontend.page.fill(f'{EDITOR} [data-field="shots.0.flow_shift"]', "12")
    problem = f'{EDITOR} [data-problem="shots.0.flow_shift"]'
    frontend.page.wait_for_function(f"() => document.querySelector('{problem}').textContent.includes('8')",
                                    timeout=10_000)
    assert "must be <= 8" in frontend.page.inner_text(problem)
    statuses = frontend.page.evaluate(f"() => [...document.querySelectorAll('{EDITOR} [data-status]')].map(e => e.textContent)")
    assert statuses == ["edited plan: 1 problem(s), the queue is blocked"], statuses
    assert json.loads(plan_edits(frontend))["shots"][0]["flow_shift"] == 12  # stored as typed, refused on queue
    frontend.screenshot("editor-invalid")
    before = set(frontend.server.get("/history"))
    posted = len([url for _, url in frontend.responses if url.endswith("/api/prompt")])
    queued = frontend.page.evaluate("async () => await app.queuePrompt(0, 1)")
    time.sleep(2)
    queue = frontend.server.get("/queue")
    assert queued is False and set(frontend.server.get("/history")) == before
    assert len([url for _, url in frontend.responses if url.endswith("/api/prompt")]) == posted  # never sent
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    toast = frontend.page.locator(".p-toast-message").filter(has_text="nothing was queued")
    toast.first.wait_for(timeout=10_000)
    assert "shots.0.flow_shift" in toast.first.inner_text()
    frontend.page.fill(f'{EDITOR} [data-field="shots.0.flow_shift"]', "5")
    frontend.page.wait_for_function(f"() => document.querySelector('{problem}').textContent === ''", timeout=10_000)
    # Closed on the elements themselves, not by a click at their place on the page: a toast that hides on its own
    # between Playwright's check and its click would pass the click to what lies under it.
    frontend.page.evaluate("() => document.querySelectorAll('.p-toast-close-button').forEach(b => b.click())")


def test_shots_are_added_moved_and_deleted_and_the_type_sets_the_flow_shift(frontend, short_run):
    frontend.page.wait_for_selector(f"{EDITOR} [data-shot]", timeout=30_000)
    cards = f"{EDITOR} [data-shot]"
    ids = frontend.page.eval_on_selector_all(cards, "cards => cards.map(c => c.dataset.shot)")
    original = json.loads(plan_edits(frontend))
    frontend.page.locator(f'{EDITOR} [data-shot="{ids[0]}"] [data-action=add]').click()
    added = json.loads(plan_edits(frontend))
    assert [s["id"] for s in added["shots"]] == [ids[0], "shot-03", ids[1]]
    assert added["duration_s"] == pytest.approx(sum(s["duration_s"] for s in added["shots"]))
    assert added["shots"][1]["seed"] != added["shots"][0]["seed"]
    frontend.page.locator(f'{EDITOR} [data-shot="shot-03"] [data-action=down]').click()
    assert frontend.page.eval_on_selector_all(cards, "cards => cards.map(c => c.dataset.shot)") == [*ids, "shot-03"]
    frontend.page.locator(f'{EDITOR} [data-shot="shot-03"] [data-action=delete]').click()
    assert json.loads(plan_edits(frontend)) == original
    frontend.page.select_option(f'{EDITOR} [data-field="shots.1.type"]', "hero")
    assert frontend.page.input_value(f'{EDITOR} [data-field="shots.1.flow_shift"]') == "5"
    assert json.loads(plan_edits(frontend))["shots"][1]["flow_shift"] == 5
    frontend.page.select_option(f'{EDITOR} [data-field="shots.1.type"]', original["shots"][1]["type"])
    frontend.page.fill(f'{EDITOR} [data-field="shots.1.flow_shift"]', str(original["shots"][1]["flow_shift"]))
    assert json.loads(plan_edits(frontend)) == original


def test_rerender_gives_one_shot_a_new_seed_and_lock_keeps_a_shot(frontend, short_run):
    frontend.page.wait_for_selector(f'{EDITOR} [data-shot]', timeout=30_000)
    queue_and_wait(frontend)  # whatever the earlier tests left edited is rendered first
    first, second = json.loads(plan_edits(frontend))["shots"]
    frontend.page.locator(f'{EDITOR} [data-shot="{second["id"]}"] [data-action=lock]').check()
    assert json.loads(plan_edits(frontend))["shots"][1]["locked"] is True
    made_before = json.loads((short_run / "manifest.json").read_text(encoding="utf-8"))
    before = set(frontend.server.get("/history"))
    frontend.page.locator(f'{EDITOR} [data-shot="{first["id"]}"] [data-action=rerender]').click()  # queues
    wait_for_run(frontend, before)
    stored = json.loads(plan_edits(frontend))["shots"]
    plan = json.loads((short_run / "plan.json").read_text(encoding="utf-8"))["shots"]
    assert stored[0]["seed"] != first["seed"] and plan[0]["seed"] == stored[0]["seed"]
    assert plan[1]["locked"] is True and plan[1]["seed"] == second["seed"]
    made_after = json.loads((short_run / "manifest.json").read_text(encoding="utf-8"))
    pictures = [rel for rel in made_before if rel.startswith(("portraits/", "keyframes/", "clips/"))]
    changed = sorted(rel for rel in pictures if made_after.get(rel) != made_before[rel])  # the portraits stay too
    assert changed and all(first["id"] in rel for rel in changed), changed
    assert {rel.split("/")[0] for rel in changed} == {"keyframes", "clips"}, changed
    frontend.page.locator(f"{EDITOR} [data-action=reset]").click()
    assert plan_edits(frontend) == ""
    assert "the next queue renders the director's plan" in frontend.page.inner_text(f"{EDITOR} [data-status]")


def test_the_critic_board_fills_live_during_a_gated_run_and_the_strip_shows_the_pictures(frontend):
    """A preview gate set above the technical check's pass (9 > 8) with one retry: every shot gets two attempts."""
    frontend.load(PREVIEW)
    set_widgets(frontend, "CineReelDirector", {**SHORT, "seed": 7})
    set_widgets(frontend, "CineReelCriticGate", {"threshold": 9.0, "max_retries": 1})
    frontend.page.evaluate("""() => {
      window.__board = [];
      let running = null;
      app.api.addEventListener('executing', ({detail}) => { running = detail?.node ?? detail; });
      app.api.addEventListener('cinereel.gate', ({detail}) => { if (detail?.attempt) setTimeout(() => window.__board.push({
        running: String(running),
        rows: document.querySelectorAll('[data-cinereel-panel=cinereel_scores] [data-attempt]').length}), 0); });
    }""")
    queue_and_wait(frontend)
    gate_id = frontend.page.evaluate("() => String(app.graph._nodes.find(n => n.type === 'CineReelCriticGate').id)")
    live = frontend.page.evaluate("() => window.__board")
    assert len(live) == 4 and all(entry["running"] == gate_id for entry in live), live  # during the gate's run
    assert [entry["rows"] for entry in live] == sorted(entry["rows"] for entry in live) and live[0]["rows"] >= 1
    rows = frontend.page.evaluate(f"""() => [...document.querySelectorAll('{BOARD} [data-attempt]')].map(r => ({{
      attempt: r.dataset.attempt, kept: r.dataset.kept, text: r.innerText,
      thumb: r.querySelector('img') ? r.querySelector('img').naturalWidth : 0}}))""")
    frontend.screenshot("critic-board")
    shots = sorted({r["attempt"].split("@")[0] for r in rows})
    assert len(shots) == 2 and sorted(r["attempt"] for r in rows) == [f"{s}@{k}" for s in shots for k in (1, 2)]
    for shot in shots:
        assert [r["kept"] for r in rows if r["attempt"].startswith(shot)].count("1") == 1, rows
    for r in rows:
        assert "technical check" in r["text"] and "composition" not in r["text"], r  # measured, not scored
        assert r["thumb"] > 0, r
    frontend.page.locator(f'{BOARD} [data-attempt="{shots[0]}@2"]').click()
    frontend.page.wait_for_function(f"""() => {{
      const v = document.querySelector('{BOARD} video[data-cinereel-player]');
      return v && v.dataset.playing === '{shots[0]}@2' && v.readyState >= 2 && !v.error; }}""", timeout=30_000)

    plan = json.loads((run_folder(frontend) / "plan.json").read_text(encoding="utf-8"))
    expected = {f"portrait:{c['id']}" for c in plan["characters"]} | {f"keyframe:{s['id']}" for s in plan["shots"]}
    frontend.page.wait_for_function(f"""n => [...document.querySelectorAll('{STRIP} img')]
      .filter(i => i.complete && i.naturalWidth > 0).length === n""", arg=len(expected), timeout=30_000)
    shown = frontend.page.evaluate(f"() => [...document.querySelectorAll('{STRIP} img')].map(i => i.dataset.picture)")
    frontend.screenshot("keyframe-strip")
    assert set(shown) == expected and len(shown) == len(expected)
    graph = frontend.graph()
    assert layout_problems(graph) == [], ("\n".join(layout_problems(graph)), [(n["type"], n["size"]) for n in graph["nodes"]])


# last, so it sees everything every test above made the page log
def test_the_pack_logs_no_error_or_warning_and_every_event_is_handled(frontend, preview_run):
    unhandled = [m["text"][:300] for m in frontend.console
                 if "Unhandled message" in m["text"] or "Unknown message type" in m["text"]]
    assert unhandled == []
    assert frontend.from_the_pack() == []
