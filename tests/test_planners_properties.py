"""Property tests: over random shapes, bounds and settings, every result honours the contract."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planners import CEM, ICEM, MPPI

PLANNER_CLASSES = {"cem": CEM, "mppi": MPPI, "icem": ICEM}


@st.composite
def planning_problems(draw):
    action_dim = draw(st.integers(1, 4))
    lows = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=action_dim, max_size=action_dim))
    widths = draw(st.lists(st.floats(0, 4, allow_nan=False), min_size=action_dim, max_size=action_dim))
    num_samples = draw(st.integers(2, 40))
    config = dict(
        action_dim=action_dim,
        horizon=draw(st.integers(1, 7)),
        num_samples=num_samples,
        num_elites=draw(st.integers(1, num_samples)),
        iterations=draw(st.integers(1, 3)),
        init_std=draw(st.floats(0.01, 3)),
        momentum=draw(st.sampled_from([0.0, 0.1, 0.5])),
        noise_beta=draw(st.sampled_from([0.0, 0.5, 2.5])),
        action_low=lows,
        action_high=[lo + w for lo, w in zip(lows, widths)],
        output=draw(st.sampled_from(["mean", "best", "sample_elite"])),
    )
    name = draw(st.sampled_from(sorted(PLANNER_CLASSES)))
    batch = draw(st.integers(1, 4))
    nan_fraction = draw(st.sampled_from([0.0, 0.3, 1.0]))
    proposals = draw(st.integers(0, num_samples - 1)) if name != "icem" else 0
    return name, config, batch, nan_fraction, proposals, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(planning_problems())
def test_results_are_finite_in_bounds_and_well_shaped(problem):
    name, config, batch, nan_fraction, num_proposals, seed = problem
    planner = PLANNER_CLASSES[name](**config)
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(config["horizon"], config["action_dim"], generator=generator)
    low, high = torch.tensor(config["action_low"]), torch.tensor(config["action_high"])

    def objective(actions):
        assert bool(((actions >= low) & (actions <= high)).all()), "a candidate left the bounds"
        value = (actions * weights).sum(dim=(2, 3)) - actions.pow(2).sum(dim=(2, 3))
        drop = torch.rand(value.shape, generator=generator) < nan_fraction
        return torch.where(drop, torch.full_like(value, float("nan")), value)

    proposals = None
    if num_proposals > 0:
        proposals = torch.randn(batch, num_proposals, config["horizon"], config["action_dim"], generator=generator)
    result = planner.plan(objective, batch_size=batch, proposals=proposals, generator=generator)
    shape = (batch, config["horizon"], config["action_dim"])
    assert result.actions.shape == shape and result.action.shape == (batch, config["action_dim"])
    assert result.mean.shape == shape and result.std.shape == shape
    assert torch.isfinite(result.actions).all() and torch.isfinite(result.std).all()
    assert bool(((result.actions >= low) & (result.actions <= high)).all())
    assert torch.equal(result.action, result.actions[:, 0])
    assert result.warm_start is not None and result.warm_start.mean.shape == shape
