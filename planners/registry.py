"""Planners by name, as the command line's `--planner` flag chooses them."""

from __future__ import annotations

import difflib
from typing import Any

from planners.base import SamplingPlanner
from planners.cem import CEM
from planners.icem import ICEM
from planners.mppi import MPPI

__all__ = ["PLANNERS", "PRESETS", "make_planner"]

PLANNERS: dict[str, type[SamplingPlanner[Any]]] = {"cem": CEM, "mppi": MPPI, "icem": ICEM}

# Named published settings: "<planner>:<preset>" or the preset alone.
PRESETS: dict[str, Any] = {
    "cem:planet": CEM.planet,
    "mppi:tdmpc2": MPPI.tdmpc2,
    "mppi:classic": MPPI.classic,
    "icem:default": ICEM.default,
}


def make_planner(name: str, action_dim: int, preset: str | None = None, **overrides: Any) -> SamplingPlanner[Any]:
    """Build a planner by name.

    Args:
        name: "cem", "mppi" or "icem" (case-insensitive).
        action_dim: A.
        preset: optional published setting for that planner: "planet" (cem),
            "tdmpc2" or "classic" (mppi), "default" (icem). Overrides apply on top.
        **overrides: config fields, for example horizon=20, num_samples=256.

    Raises:
        ValueError: unknown planner or preset name (the message lists the valid ones).
        TypeError: an override that is not a field of that planner's config.
    """
    key = str(name).lower()
    if key not in PLANNERS:
        close = difflib.get_close_matches(key, PLANNERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown planner {name!r}{hint}; choose one of {sorted(PLANNERS)}")
    if preset is None:
        return PLANNERS[key](action_dim=action_dim, **overrides)
    full = f"{key}:{str(preset).lower()}"
    if full not in PRESETS:
        valid = sorted(p.split(":")[1] for p in PRESETS if p.startswith(key + ":"))
        raise ValueError(f"unknown preset {preset!r} for planner {key!r}; choose one of {valid}")
    return PRESETS[full](action_dim, **overrides)
