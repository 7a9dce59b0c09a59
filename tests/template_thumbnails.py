"""Make the template thumbnails beside the shipped workflows: ``workflows/<name>.jpg``.

ComfyUI (0.3.64, frontend 1.27) shows ``<name>.jpg`` beside ``<name>.json`` in its template browser. Each
thumbnail is a real frame of a reel the preview backends made headless (the CLI) from the workflow's own
sentence and aspect. The real-model workflow has no real output on a machine without the checkpoints and a
GPU: its thumbnail is a preview frame with a caption that says so.

    .venv/bin/python tests/template_thumbnails.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = PACK_ROOT / "workflows"
FRAME_AT_S = 7.5  # the middle of shot 2, the first hero shot
LONG_SIDE = 640
PREVIEW_CAPTION = "preview-backend frame: real-model output not shown"


def director_inputs(workflow: dict) -> tuple[str, str]:
    """The sentence and aspect of the Director (of the Batch node: its first sentence)."""
    (director,) = [n for n in workflow["nodes"] if n["type"] in ("CineReelDirector", "CineReelBatch")]
    sentence, _duration, _shots, aspect = director["widgets_values"][:4]
    return sentence.splitlines()[0], aspect


def uses_preview_backends(workflow: dict) -> bool:
    return all(str(n["widgets_values"][0]).startswith("preview")
               for n in workflow["nodes"] if n["type"].startswith("CineReel") and n["type"].endswith("Loader"))


def render_preview_reel(sentence: str, aspect: str, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "cinereel", sentence, "--aspect", aspect, "--gate", "--out", str(out),
                           "--json"], check=True, capture_output=True, text=True)
    (reel,) = out.glob("cinereel/*/reel.mp4")
    assert reel.is_file(), done.stdout[-2000:]
    return reel


def grab_frame(reel: Path, at_s: float, target: Path, caption: str | None = None) -> None:
    from imageio_ffmpeg import get_ffmpeg_exe
    from PIL import Image, ImageDraw, ImageFont

    png = target.with_suffix(".frame.png")
    subprocess.run([get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-ss", str(at_s), "-i", str(reel),
                    "-frames:v", "1", str(png)], check=True)
    with Image.open(png) as frame:
        image = frame.convert("RGB")
    png.unlink()
    scale = LONG_SIDE / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    if caption:
        draw = ImageDraw.Draw(image, "RGBA")
        font = ImageFont.load_default(size=max(14, image.width // 34))
        box = draw.textbbox((0, 0), caption, font=font)
        height = box[3] - box[1] + 16
        draw.rectangle([0, image.height - height, image.width, image.height], fill=(0, 0, 0, 170))
        draw.text((10, image.height - height + 8 - box[1]), caption, font=font, fill=(255, 255, 255, 255))
    image.save(target, "JPEG", quality=85, optimize=True)


def main() -> None:
    reels: dict[tuple[str, str], Path] = {}
    with tempfile.TemporaryDirectory(prefix="cinereel-thumbnails-") as scratch:
        for path in sorted(WORKFLOWS.glob("*.json")):
            workflow = json.loads(path.read_text(encoding="utf-8"))
            inputs = director_inputs(workflow)
            if inputs not in reels:
                reels[inputs] = render_preview_reel(*inputs, Path(scratch) / f"run{len(reels)}")
            caption = None if uses_preview_backends(workflow) else PREVIEW_CAPTION
            grab_frame(reels[inputs], FRAME_AT_S, path.with_suffix(".jpg"), caption)
            print(path.with_suffix(".jpg").relative_to(PACK_ROOT), "from", inputs, "captioned" if caption else "")


if __name__ == "__main__":
    main()
