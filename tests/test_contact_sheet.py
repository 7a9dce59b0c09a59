"""contact_sheet.png is redrawn after each stage: each clip's middle frame is decoded once, not at every redraw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cinereel.model_loaders.rules import DirectorRequest
from cinereel.nodes.pipeline import contact_sheet
from cinereel.nodes.pipeline.headless import make_reel
from cinereel.nodes.pipeline.video import write_clip


def test_a_redrawn_sheet_decodes_only_the_clips_that_changed(tmp_path: Path, monkeypatch) -> None:
    reel = make_reel(DirectorRequest("A lighthouse keeper climbs the stairs at dawn in Lisbon", duration_s=2.0,
                                     shots=2, resolution="480p"), tmp_path)
    decoded: list[str] = []
    real = contact_sheet.middle_frame

    def counting(clip: Path, frames: int | None = None):
        decoded.append(Path(clip).name)
        return real(clip, frames)

    monkeypatch.setattr(contact_sheet, "middle_frame", counting)
    monkeypatch.setattr(contact_sheet, "_thumbnails", {})
    sheet = contact_sheet.refresh_contact_sheet(reel)
    clips = sorted(Path(reel.artifacts[f"clip:{shot.id}"]).name for shot in reel.plan.shots)
    assert sorted(decoded) == clips
    first = sheet.read_bytes()

    decoded.clear()
    assert contact_sheet.refresh_contact_sheet(reel).read_bytes() == first and decoded == []

    changed = reel.artifact_path(f"clip:{reel.plan.shots[1].id}")
    frames = np.full((17, reel.plan.height, reel.plan.width, 3), 200, dtype=np.uint8)
    write_clip(frames, reel.plan.fps, changed)  # a re-render in place: new content, new modification time
    contact_sheet.refresh_contact_sheet(reel)
    assert decoded == [changed.name]
    layout = contact_sheet.SheetLayout.of(reel.plan)
    from PIL import Image

    with Image.open(sheet) as img:
        kept = np.asarray(img.convert("RGB").crop(layout.kept_box(1)), dtype=np.float32)
    assert abs(kept.mean() - 200) < 4  # the sheet shows the new clip, not the remembered frame
