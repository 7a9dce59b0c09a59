"""CineReel's ComfyUI nodes, one module per pipeline stage, and the plain code under them."""

from ..model_loaders.residency import RESIDENCY
from . import adapters, assemble, batch, director, gate, keyframes, loaders, mix, motion, music, unload, voice

_MODULES = (loaders, director, keyframes, motion, gate, voice, music, mix, assemble, unload, adapters, batch)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in _MODULES:
    for _node_id, (_cls, _display) in _module.NODES.items():
        NODE_CLASS_MAPPINGS[_node_id] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_node_id] = _display


def _show_resident(entry: dict, resident) -> None:
    from .pipeline.comfy import send_ui_event

    send_ui_event("cinereel.residency", {"event": entry["event"], "model": f"{entry['family']}:{entry['checkpoint']}",
                                         "resident": resident.label if resident else None,
                                         "resident_key": resident.key if resident else None,
                                         "seconds": round(entry["seconds"], 2)})


def _residency_now() -> dict:
    resident = RESIDENCY.resident
    return {"resident": resident.label if resident else None, "resident_key": resident.key if resident else None,
            "log": RESIDENCY.log}


def _join_comfy() -> None:
    """Inside ComfyUI: its Unload Models / Free Memory evict our model too; GET /cinereel/residency tells what is
    resident (and every load and eviction so far)."""
    from .pipeline.comfy import add_get_route, follow_residency

    RESIDENCY.add_listener(follow_residency)
    add_get_route("/cinereel/residency", _residency_now)


RESIDENCY.add_listener(_show_resident)
_join_comfy()
