"""The shot editor's server side: routes the browser calls while the user edits the Director's plan.

- ``POST /cinereel/validate_plan`` with ``{"plan": <edited plan>, "voice_engine": "kokoro" | "espeak-ng" | null}``
  answers ``{"problems": [{"path": "shots.2.flow_shift", "message": "must be <= 8, got 9"}]}`` (``[]``: valid).
- ``GET /cinereel/plan_rules``: the plan's JSON Schema, the shot types and camera moves, and the flow shift each
  shot type starts with, for the editor to mirror as the user types.

Registered only inside ComfyUI (``pipeline/comfy.py`` finds its server); headless nothing happens. The checks
import on the first request, not when ComfyUI starts.
"""

from __future__ import annotations

from typing import Any

from .pipeline.comfy import add_get_route, add_post_route

VALIDATE_ROUTE = "/cinereel/validate_plan"
RULES_ROUTE = "/cinereel/plan_rules"


def _validate(body: Any) -> dict[str, Any]:
    from .pipeline.plan_edits import validate_request

    return validate_request(body)


def _rules() -> dict[str, Any]:
    from .pipeline.plan_edits import plan_edit_rules

    return plan_edit_rules()


def register_routes() -> bool:
    """Add the routes to ComfyUI's server; False headless."""
    return add_post_route(VALIDATE_ROUTE, _validate) and add_get_route(RULES_ROUTE, _rules)
