"""Lay the shipped workflows out in labelled groups at the sizes ComfyUI 0.3.64's frontend draws: the heights were
measured in the browser (node.computeSize() after loading, and after a preview run for the nodes that show results);
tests/test_browser.py checks the outcome.  Usage: .venv/bin/python tests/workflow_layout.py workflows/*.json
"""

import json
import sys
from pathlib import Path

TITLE = 30      # a node's title bar, drawn above its pos
HEADER = 46     # a group's title bar
PAD = 20        # inside a group, around its nodes
GAP = 30        # between two nodes (title bar to body)
COLGAP = 40     # between two groups side by side

# [width, height as loaded (measured), height to reserve after a run (measured + margin)]
SIZE = {
    "CineReelLLMLoader": (340, 322, 322), "CineReelKeyframeLoader": (340, 322, 322),
    "CineReelMotionLoader": (340, 346, 346), "CineReelVoiceLoader": (340, 178, 178),
    "CineReelMusicLoader": (340, 226, 226),
    "CineReelDirector": (420, 354, 680),
    "CineReelKeyframes": (340, 46, 120), "CineReelAnimate": (340, 78, 150), "CineReelCriticGate": (380, 214, 800),
    "CineReelNarrate": (340, 102, 180), "CineReelScoreMusic": (340, 78, 150), "CineReelMix": (340, 130, 200),
    "CineReelAssemble": (440, 106, 664), "CineReelToImage": (320, 82, 150), "PreviewImage": (320, 258, 300),
    "CineReelUnloadModels": (320, 58, 130), "CineReelBatch": (420, 456, 1000),
}
COLOURS = {"Models": "#3f789e", "Story": "#a1309b", "Pictures": "#b58b2a", "Motion": "#8A8", "Sound": "#88A",
           "Output": "#b06634"}
# groups, left to right; each group is a list of columns, each column a list of node types, top to bottom
LAYOUT = [
    [("Models", [["CineReelLLMLoader", "CineReelKeyframeLoader", "CineReelMotionLoader", "CineReelVoiceLoader",
                  "CineReelMusicLoader"]])],
    [("Story", [["CineReelDirector", "CineReelBatch"]])],
    [("Pictures", [["CineReelKeyframes"]]), ("Motion", [["CineReelAnimate", "CineReelCriticGate"]])],
    [("Sound", [["CineReelNarrate", "CineReelScoreMusic", "CineReelMix"]])],
    [("Output", [["CineReelAssemble"], ["CineReelToImage", "PreviewImage", "CineReelUnloadModels"]])],
]


def lay_out(workflow: dict, tall_preview: bool = False) -> dict:
    by_type = {n["type"]: n for n in workflow["nodes"]}
    size = dict(SIZE)
    if tall_preview:  # a 720x1280 frame in Preview Image
        size["PreviewImage"] = (320, 258, 600)
    groups, x = [], 0
    for stack in LAYOUT:
        y, stack_w = 0, 0
        for title, columns in stack:
            columns = [[t for t in col if t in by_type] for col in columns]
            columns = [c for c in columns if c]
            if not columns:
                continue
            gx, gy = x, y
            cx, bottom = gx + PAD, gy + HEADER
            for col in columns:
                cy = gy + HEADER + TITLE
                width = max(size[t][0] for t in col)
                for t in col:
                    w, h, reserve = size[t]
                    node = by_type[t]
                    node["pos"] = [cx, cy]
                    node["size"] = [width, h]
                    cy += reserve + TITLE + GAP
                bottom = max(bottom, cy - GAP)
                cx += width + PAD
            gw, gh = cx - gx, bottom + PAD - gy
            groups.append({"id": len(groups) + 1, "title": title, "bounding": [gx, gy, gw, gh],
                           "color": COLOURS[title], "font_size": 24, "flags": {}})
            y += gh + COLGAP
            stack_w = max(stack_w, gw)
        x += stack_w + COLGAP
    workflow["groups"] = groups
    return workflow


LOADER_WIDGETS = {"CineReelLLMLoader": 12, "CineReelKeyframeLoader": 12, "CineReelMotionLoader": 13,
                  "CineReelVoiceLoader": 6, "CineReelMusicLoader": 8}

if __name__ == "__main__":
    for name in sys.argv[1:]:
        path = Path(name)
        w = json.loads(path.read_text(encoding="utf-8"))
        for n in w["nodes"]:
            want = LOADER_WIDGETS.get(n["type"])
            if want and len(n["widgets_values"]) == want - 1:
                n["widgets_values"].append(False)  # allow_download, the loaders' newest (last) widget: off
        tall = any(n["type"] == "CineReelDirector" and n["widgets_values"][3] == "9:16" for n in w["nodes"])
        lay_out(w, tall)
        path.write_text(json.dumps(w, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(path, [(g["title"], g["bounding"]) for g in w["groups"]])
