"""The shipped workflows as ComfyUI templates, and the files the registry metadata points to (no server needed;
tests/test_browser.py checks the same workflows as the frontend draws them)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from cinereel_testkit import PACK_ROOT, _is_widget

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
IDS = [p.stem for p in WORKFLOWS]
GROUPS = {"Models", "Story", "Pictures", "Motion", "Sound", "Output"}
NODE_TITLE = 30  # drawn above a node's pos


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_four_templates_ship_with_readable_names():
    """Frontend 1.27 titles a custom node's template with its file name: no ids, no underscores."""
    assert IDS == ["CineReel 720p reel (real models, GPU)", "CineReel batch of preview reels (CPU, no weights)",
                   "CineReel preview reel (CPU, no weights)", "CineReel vertical preview reel 9x16 (social media, CPU)"]


def story_node(workflow: dict) -> dict:
    """The node that takes the sentence: the Director, or the Batch node of the batch template."""
    (node,) = [n for n in workflow["nodes"] if n["type"] in ("CineReelDirector", "CineReelBatch")]
    return node


def groups_of(workflow: dict) -> set[str]:
    """A batch renders every stage inside its one node: its template has no stage groups."""
    return {"Models", "Story", "Output"} if story_node(workflow)["type"] == "CineReelBatch" else GROUPS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=IDS)
def test_a_thumbnail_beside_each_template_in_its_aspect(workflow):
    from PIL import Image

    aspect = story_node(load(workflow))["widgets_values"][3]
    with Image.open(workflow.with_suffix(".jpg")) as thumbnail:
        assert thumbnail.format == "JPEG"
        width, height = thumbnail.size
    assert max(width, height) == 640 and (width > height) == (aspect == "16:9"), (aspect, width, height)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=IDS)
def test_every_widget_value_is_saved_in_input_order(workflow):
    """As many values as the node has widgets (the loaders' newest, allow_download, included and off)."""
    import cinereel

    for node in load(workflow)["nodes"]:
        cls = cinereel.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            continue  # a core node
        spec = cls.INPUT_TYPES()
        count = sum(1 + bool(len(decl) > 1 and decl[1].get("control_after_generate"))
                    for section in ("required", "optional") for decl in spec.get(section, {}).values()
                    if _is_widget(decl[0]))
        assert len(node.get("widgets_values", [])) == count, (node["type"], node.get("widgets_values"))
        if node["type"].endswith("Loader"):
            assert list(spec["optional"])[-1] == "allow_download" and node["widgets_values"][-1] is False


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=IDS)
def test_nodes_sit_in_labelled_groups_without_overlapping(workflow):
    saved = load(workflow)
    groups = {g["title"]: g["bounding"] for g in saved["groups"]}
    assert set(groups) == groups_of(saved) and len(saved["groups"]) == len(groups_of(saved))
    boxes = [(n["id"], [n["pos"][0], n["pos"][1] - NODE_TITLE, n["size"][0], n["size"][1] + NODE_TITLE])
             for n in saved["nodes"]]
    for i, (a, (ax, ay, aw, ah)) in enumerate(boxes):
        for b, (bx, by, bw, bh) in boxes[i + 1:]:
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), (a, b)
        holders = [t for t, (gx, gy, gw, gh) in groups.items()
                   if gx <= ax and gy <= ay and ax + aw <= gx + gw and ay + ah <= gy + gh]
        assert len(holders) == 1, (a, holders)


def test_every_file_the_registry_metadata_names_exists():
    """[tool.comfy]'s Icon (a URL into this repository's main branch) and includes, and the project's readme and
    license files."""
    meta = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    comfy = meta["tool"]["comfy"]
    prefix = "https://raw.githubusercontent.com/cinereel/comfyui-cinereel/main/"
    assert comfy["Icon"].startswith(prefix), comfy["Icon"]
    icon = PACK_ROOT / comfy["Icon"][len(prefix):]
    assert icon.is_file(), icon
    root = ElementTree.parse(icon).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox")
    for included in comfy.get("includes", []):
        assert (PACK_ROOT / included).exists(), included
    project = meta["project"]
    for name in [project["readme"], *project.get("license-files", [])]:
        assert (PACK_ROOT / name).is_file(), name
    # the icon and thumbnails are installed with the package too
    data = meta["tool"]["setuptools"]["package-data"]["cinereel"]
    assert "js/*.svg" in data and "workflows/*.jpg" in data
