"""Action-repeat tables: how many control steps one agent action is held for.

Two published settings are provided, keyed by DM Control domain:

=================  =======  ==============================================
preset             domain   repeat
=================  =======  ==============================================
``"planet"``       cartpole 8
                   reacher  4
                   cheetah  4
                   ball_in_cup (cup) 4
                   finger   2
                   walker   2
                   others   2 (not in the paper; we use 2, as for finger)
``"tdmpc2"``       all      2
=================  =======  ==============================================

``"planet"`` is the table of Hafner et al. 2019 (PlaNet, Sec. 5), which Dreamer and the
iCEM paper reuse. ``"tdmpc2"`` is Hansen et al. 2024 (TD-MPC2): 2 on every task, which
gives 500 agent steps per 1000-step DMC episode. ``"tdmpc2"`` is the default preset of
:func:`envs.make`; goal-reaching tasks look their domain up in the same tables
(``reacher-pose`` uses the reacher entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DEFAULT_PRESET = "tdmpc2"

# Read-only so a caller cannot change the repeat of every env made afterwards by
# mutating the shared table.
ACTION_REPEAT_PRESETS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "planet": MappingProxyType(
            {
                "cartpole": 8,
                "reacher": 4,
                "cheetah": 4,
                "ball_in_cup": 4,
                "finger": 2,
                "walker": 2,
                "default": 2,
            }
        ),
        "tdmpc2": MappingProxyType({"default": 2}),
    }
)


def action_repeat_for(domain: str, preset: str = DEFAULT_PRESET) -> int:
    """Returns the action repeat of a DM Control domain under a preset.

    Args:
        domain: DM Control domain name, e.g. ``"cartpole"`` or ``"ball_in_cup"``.
        preset: A key of :data:`ACTION_REPEAT_PRESETS` (``"planet"`` or ``"tdmpc2"``).

    Returns:
        The number of control steps each agent action is repeated for.

    Raises:
        ValueError: If ``preset`` is not a known preset.
    """
    if preset not in ACTION_REPEAT_PRESETS:
        raise ValueError(
            f"Unknown action_repeat_preset {preset!r}; expected one of "
            f"{sorted(ACTION_REPEAT_PRESETS)}."
        )
    table = ACTION_REPEAT_PRESETS[preset]
    return table.get(domain, table["default"])
