"""DINO-WM world model (models/dino_wm.py): config, frame-causal predictor, training loss,
rollouts, goal objective, controller use, checkpoints. Tiny configs, CPU, seconds."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from models.dino_wm import (
    TINY_ENCODER,
    DinoWM,
    DinoWMConfig,
    FrameCausalPredictor,
    frame_causal_mask,
    pool_patches,
)
from models.dinov2 import build_dinov2
from models.objectives import dino_goal_objective, make_goal_objective
from planners import CEM, MPCController


def tiny_encoder():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init is intended here
        return build_dinov2(TINY_ENCODER, None, device="cpu")


def tiny_model(action_dim: int = 2, proprio_dim: int = 3, seed: int = 0, **overrides) -> DinoWM:
    torch.manual_seed(seed)
    return DinoWM(DinoWMConfig.tiny(action_dim, proprio_dim, **overrides), encoder=tiny_encoder()).eval()


def images(m: int, seed: int, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (m, 3, size, size), generator=g, dtype=torch.uint8)


# -- config ------------------------------------------------------------------------------


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="image_size=30"):
        DinoWMConfig.paper(2, 0, image_size=30)
    with pytest.raises(ValueError, match="encoder 'vitx14'"):
        DinoWMConfig(action_dim=2, proprio_dim=0, proprio_emb_dim=0, encoder="vitx14")
    with pytest.raises(ValueError, match="proprio_emb_dim=10"):
        DinoWMConfig(action_dim=2, proprio_dim=0)
    with pytest.raises(ValueError, match="dropout=1.5"):
        DinoWMConfig.cpu(2, 0, dropout=1.5)
    with pytest.raises(ValueError, match="history=0"):
        DinoWMConfig.tiny(2, 0, history=0)


def test_pool_patches_averages_each_block_of_the_grid():
    # A 4 x 4 grid, row-major, feature value = patch index; 2 x 2 blocks -> 4 tokens.
    features = torch.arange(16, dtype=torch.float32).view(1, 16, 1)
    pooled = pool_patches(features, grid_size=4, pool=2)
    expected = torch.tensor([(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4])
    torch.testing.assert_close(pooled.view(4), expected)
    assert pool_patches(features, 4, 1) is features
    with pytest.raises(ValueError, match="15 patches"):
        pool_patches(features[:, :15], grid_size=4, pool=2)


def test_patch_pool_gives_the_predictor_fewer_tokens_of_the_same_image():
    with pytest.raises(ValueError, match=r"patch_pool=3 must divide the encoder's patch grid of 4 x 4"):
        DinoWMConfig.tiny(2, 3, image_size=56, patch_pool=3)
    full = tiny_model(image_size=56, decoder=True)
    pooled = tiny_model(image_size=56, patch_pool=2, decoder=True)
    assert (full.config.num_patches, pooled.config.num_patches) == (16, 4)
    frames = images(3, seed=1, size=56)
    f_full, f_pooled = full.encode_features(frames), pooled.encode_features(frames)  # same frozen encoder
    assert f_pooled.shape == (3, 4, full.config.embed_dim)
    grid = f_full.view(3, 4, 4, -1)
    torch.testing.assert_close(f_pooled[:, 0], grid[:, :2, :2].mean(dim=(1, 2)))  # top-left block
    torch.testing.assert_close(f_pooled[:, 3], grid[:, 2:, 2:].mean(dim=(1, 2)))  # bottom-right block
    # The whole model works on the pooled grid: observe, rollout, and pictures of full size.
    z = pooled.encode(frames.float() / 255.0)
    assert z.shape == (3, *pooled.config.latent_shape)
    assert pooled.rollout(z, torch.zeros(3, 2, 2)).shape == (3, 2, *pooled.config.latent_shape)
    assert pooled.decoder(f_pooled).shape[-2:] == (56, 56)


def test_presets_have_the_paper_sizes():
    paper = DinoWMConfig.paper(action_dim=2, proprio_dim=4)
    assert (paper.image_size, paper.num_patches, paper.embed_dim, paper.token_dim) == (196, 196, 384, 404)
    assert (paper.frameskip, paper.history, paper.depth, paper.num_heads, paper.head_dim, paper.mlp_dim) == (5, 3, 6, 16, 64, 2048)
    assert paper.latent_shape == (3, 196, 404)
    # ANCHORS: about 19-20M predictor parameters.
    n = sum(p.numel() for p in FrameCausalPredictor(paper).parameters())
    assert 19e6 < n < 20.5e6, n
    cpu = DinoWMConfig.cpu(action_dim=2, proprio_dim=0)
    assert (cpu.image_size, cpu.encoder_grid_size, cpu.num_patches, cpu.history) == (112, 8, 16, 1)
    assert (cpu.token_dim, cpu.proprio_emb_dim, cpu.depth) == (394, 0, 4)
    assert DinoWMConfig.from_dict(DinoWMConfig.tiny(2, 3).to_dict()) == DinoWMConfig.tiny(2, 3)


# -- predictor ---------------------------------------------------------------------------


def test_mask_is_a_frame_causal_buffer_not_saved():
    model = tiny_model()
    p, hh = model.config.num_patches, model.config.history
    buffers = dict(model.named_buffers())
    assert "predictor.mask" in buffers and "predictor.mask" not in model.state_dict()
    mask = buffers["predictor.mask"]
    assert mask.shape == (hh * p, hh * p) and mask.dtype == torch.bool
    frame = torch.arange(hh * p) // p
    for i in range(hh * p):
        for j in range(hh * p):
            assert bool(mask[i, j]) == bool(frame[j] <= frame[i])
    assert torch.equal(mask, frame_causal_mask(hh, p))


def test_later_frames_never_change_earlier_predictions():
    model = tiny_model(history=4)
    c = model.config
    p = c.num_patches
    torch.manual_seed(1)
    tokens = torch.randn(2, c.history * p, c.token_dim)
    base = model.predictor(tokens)
    for t in range(c.history - 1):
        changed = tokens.clone()
        changed[:, (t + 1) * p : (t + 2) * p] += torch.randn(2, p, c.token_dim)  # frame t+1 only
        out = model.predictor(changed)
        assert torch.allclose(out[:, : (t + 1) * p], base[:, : (t + 1) * p], atol=1e-6), f"frames <= {t} changed"
        assert not torch.allclose(out[:, (t + 1) * p : (t + 2) * p], base[:, (t + 1) * p : (t + 2) * p], atol=1e-3)


def _point_mass_data(model: DinoWM, num: int, seed: int):
    """Features linear in a 2-D point that moves by the mean action of each model step."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(c.num_patches, 2, c.embed_dim, generator=torch.Generator().manual_seed(123)) * 0.7
    t = c.history + 1
    state = torch.rand(num, 1, 2, generator=g) * 2 - 1
    actions = torch.rand(num, t, c.action_chunk_dim, generator=g) * 2 - 1  # [B, T, A * fs]
    step = 0.8 * actions.view(num, t, c.frameskip, c.action_dim).mean(dim=2)  # [B, T, 2]
    states = torch.cat([state, state + step[:, :-1].cumsum(dim=1)], dim=1)  # [B, T, 2]
    features = torch.einsum("bts,psd->btpd", states, proj)  # [B, T, P, D]
    return features, states, actions


def test_teacher_forced_loss_falls_on_a_moving_point():
    model = tiny_model(action_dim=2, proprio_dim=2, seed=3).train()
    features, proprio, actions = _point_mass_data(model, 256, seed=0)
    test = _point_mass_data(model, 128, seed=1)
    with torch.no_grad():
        before, parts_before = model.loss(*test)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss, parts = model.loss(features[idx], proprio[idx], actions[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, parts_after = model.loss(*test)
    assert set(parts) == {"visual", "proprio"}
    assert float(after) < 0.25 * float(before), (float(before), float(after))
    assert float(parts_after["visual"]) < 0.25 * float(parts_before["visual"])
    # Better than copying the current frame: the model uses the actions.
    copy = (test[0][:, 1:] - test[0][:, :-1]).pow(2).mean()
    assert float(parts_after["visual"]) < 0.5 * float(copy), (float(parts_after["visual"]), float(copy))
    # The planning path (`next` on a window) makes the prediction training taught.
    model.eval()
    feats, prop, acts = test
    hh = model.config.history
    with torch.no_grad():
        z = model.latent_from_features(feats[:, :hh], prop[:, :hh], acts[:, : hh - 1])
        predicted = model.next(z, acts[:, hh - 1])[:, -1, :, : model.config.embed_dim]
    error = (predicted - feats[:, hh]).pow(2).mean()
    copy_last = (feats[:, hh] - feats[:, hh - 1]).pow(2).mean()
    assert float(error) < 0.5 * float(copy_last), (float(error), float(copy_last))


# -- planner protocol ----------------------------------------------------------------------


def test_rollout_equals_stepping_next_and_rows_are_independent():
    model = tiny_model()
    c = model.config
    z = model.encode_obs(images(6, seed=0), torch.randn(6, c.proprio_dim))
    z = model.observe(z, torch.rand(6, c.action_dim) * 2 - 1, images(6, seed=1))
    actions = torch.rand(6, 4, c.action_chunk_dim) * 2 - 1
    with torch.no_grad():
        windows = model.rollout(z, actions)
        assert windows.shape == (6, 4, *c.latent_shape)
        step = z
        for t in range(4):
            step = model.next(step, actions[:, t])
            assert torch.allclose(windows[:, t], step, atol=1e-5)
        frames = model.predict_frames(z, actions)
        assert torch.allclose(frames, windows[:, :, -1, :, : c.frame_dim], atol=1e-6)
        # Rows are independent: a sub-batch and a changed neighbour give the same rows.
        sub = model.rollout(z[2:4], actions[2:4])
        assert torch.allclose(sub, windows[2:4], atol=1e-5)
        other = actions.clone()
        other[0] = -other[0]
        changed = model.rollout(z, other)
        assert torch.allclose(changed[1:], windows[1:], atol=1e-5)
        assert not torch.allclose(changed[0], windows[0], atol=1e-4)


def test_an_action_of_size_a_is_repeated_over_the_frameskip():
    model = tiny_model()
    z = model.encode(images(3, seed=0))
    a = torch.rand(3, 2, model.config.action_dim) * 2 - 1
    repeated = a.repeat(1, 1, model.config.frameskip)  # [a, a] per model step
    with torch.no_grad():
        assert torch.allclose(model.rollout(z, a), model.rollout(z, repeated), atol=1e-6)
    with pytest.raises(ValueError, match="size 3"):
        model.next(z, torch.zeros(3, 3))


def test_observe_slides_the_window_and_records_the_action():
    model = tiny_model()
    c = model.config
    first, second = images(2, seed=0), images(2, seed=1)
    with torch.no_grad():
        z0 = model.observe(None, None, first)
        assert torch.allclose(z0, model.encode(first))
        # A fresh window repeats the first frame's visual + proprio channels.
        assert torch.allclose(z0[:, 0, :, : c.frame_dim], z0[:, -1, :, : c.frame_dim])
        assert torch.equal(z0[:, -1, :, c.frame_dim :], torch.zeros_like(z0[:, -1, :, c.frame_dim :]))
        action = torch.tensor([[0.5, -0.5], [1.0, 0.2]])
        z1 = model.observe(z0, action, second)
        assert torch.allclose(z1[:, -1], model.encode(second)[:, -1])
        assert torch.allclose(z1[:, -2, :, : c.frame_dim], z0[:, -1, :, : c.frame_dim])
        emb = model.embed_actions(action).unsqueeze(1).expand(2, c.num_patches, c.action_emb_dim)
        assert torch.allclose(z1[:, -2, :, c.frame_dim :], emb)
        assert torch.allclose(z1[:, 0], z0[:, 1])
    with pytest.raises(ValueError, match="action_prev"):
        model.observe(z0, None, second)


@pytest.mark.parametrize("history", [1, 2, 3])
def test_observe_keeps_history_frames_when_the_controller_steps(history):
    # The cpu preset has history 1: a window that grew by a frame per step broke planning
    # on the second call. Drive the real controller for three steps.
    model = tiny_model(history=history)
    c = model.config
    goal = images(1, seed=9)[0]
    planner = CEM(action_dim=c.action_dim * c.frameskip, horizon=2, num_samples=8, num_elites=2, iterations=1)
    controller = MPCController(model, planner, objective=dino_goal_objective, device="cpu", seed=0)
    for seed in range(3):
        action = controller.act(images(1, seed=seed)[0].numpy(), goal=goal.numpy())
        assert action.shape == (c.action_dim * c.frameskip,)
        assert tuple(controller._latent.shape) == (1, *c.latent_shape), seed
    with torch.no_grad():
        z = model.observe(model.encode(images(2, seed=0)), torch.zeros(2, c.action_dim), images(2, seed=1))
        assert tuple(z.shape[1:]) == c.latent_shape
        assert torch.allclose(z[:, -1], model.encode(images(2, seed=1))[:, -1])


def test_goal_objective_scores_the_candidate_that_reaches_the_goal_best():
    model = tiny_model()
    c = model.config
    z0 = model.encode_obs(images(2, seed=0), torch.randn(2, c.proprio_dim))
    actions = torch.rand(2, 6, 3, c.action_dim) * 2 - 1  # [B, N, H, A]
    with torch.no_grad():
        reached = model.predict_frames(z0.repeat_interleave(6, 0), actions.flatten(0, 1))[:, -1].view(2, 6, c.num_patches, -1)
        goal_frames = torch.stack([reached[0, 4], reached[1, 1]])  # [B, P, L]
        goal_windows = torch.cat([z0[:, :-1], model._with_action(goal_frames, None).unsqueeze(1)], dim=1)
        for goal in (goal_frames, goal_windows):
            for alpha in (0.0, 2.0):
                scores = dino_goal_objective(model, z0, goal, alpha=alpha)(actions)
                assert scores.shape == (2, 6)
                assert scores.argmax(dim=1).tolist() == [4, 1]
                assert scores[0, 4].abs() < 1e-6 and bool((scores[:, :] <= 1e-6).all())
        # alpha weighs the proprio channels only.
        d = c.embed_dim
        want = -(reached[0, 0, :, :d] - goal_frames[0, :, :d]).pow(2).mean() - 2.0 * (
            reached[0, 0, :, d:] - goal_frames[0, :, d:]
        ).pow(2).mean()
        got = make_goal_objective(alpha=2.0)(model, z0, goal_frames)(actions)[0, 0]
        assert torch.allclose(got, want, atol=1e-6)
        # An encoded goal image is accepted as is.
        assert torch.isfinite(dino_goal_objective(model, z0, model.encode(images(2, seed=5)))(actions)).all()
    with pytest.raises(ValueError, match="needs a goal"):
        dino_goal_objective(model, z0, None)


def test_goal_objective_on_proprio_positions_ignores_the_velocities():
    model = tiny_model(proprio_dim=3)  # read as 2 positions + 1 velocity
    c, d = model.config, model.config.embed_dim
    z0 = model.encode_obs(images(1, seed=0), torch.randn(1, c.proprio_dim))
    actions = torch.rand(1, 4, 3, c.action_dim) * 2 - 1
    weight = model.proprio_encoder.weight.detach()  # [E, 3]

    def goal_off_by(delta_z: torch.Tensor) -> torch.Tensor:
        """Candidate 0's predicted last frame, with its proprio embedding moved by W @ delta_z."""
        with torch.no_grad():
            frame = model.predict_frames(z0, actions[:, 0])[:, -1].clone()  # [1, P, L]
        frame[..., d:] += weight @ delta_z
        return frame

    with torch.no_grad():
        velocity_only = goal_off_by(torch.tensor([0.0, 0.0, 1.5]))
        assert abs(float(dino_goal_objective(model, z0, velocity_only, alpha=2.0, proprio_dims=2)(actions)[0, 0])) < 1e-5
        # DINO-WM's embedding MSE does count the velocity.
        assert float(dino_goal_objective(model, z0, velocity_only, alpha=2.0)(actions)[0, 0]) < -1e-4
        position = goal_off_by(torch.tensor([0.3, -0.4, 1.5]))
        got = float(make_goal_objective(alpha=2.0, proprio_dims=2)(model, z0, position)(actions)[0, 0])
        assert abs(got - (-2.0 * (0.3**2 + 0.4**2) / 2)) < 1e-4
    for bad in (0, 4):
        with pytest.raises(ValueError, match=f"proprio_dims={bad}.*proprio_dim=3"):
            dino_goal_objective(model, z0, position, alpha=1.0, proprio_dims=bad)


def test_runs_inside_the_mpc_controller_with_cem_and_a_goal_image():
    model = tiny_model(action_dim=2, proprio_dim=0)
    planner = CEM(action_dim=2, horizon=3, num_samples=24, num_elites=4, iterations=2)
    ctrl = MPCController(model, planner, objective=dino_goal_objective, device="cpu", seed=0)
    ctrl.reset()
    frames, goal = images(3, seed=0), images(1, seed=9)[0]
    for t in range(3):
        action = ctrl.act(frames[t].numpy(), goal=goal.numpy())
        assert action.shape == (2,) and bool(((action >= -1) & (action <= 1)).all())
    # The controller carried the window: the last three frames, oldest first.
    c = model.config
    with torch.no_grad():
        expected = model.encode_features(frames)  # [3, P, D]
    assert ctrl._latent is not None and ctrl._latent.shape == (1, *c.latent_shape)
    assert torch.allclose(ctrl._latent[0, :, :, : c.embed_dim], expected, atol=1e-6)


def test_reward_objective_is_refused():
    model = tiny_model(proprio_dim=0)
    with pytest.raises(TypeError, match="reward"):
        MPCController(model, CEM(action_dim=2, horizon=2), objective="reward", device="cpu")


# -- encoder, decoder, checkpoints ---------------------------------------------------------


def test_encoder_is_frozen_and_outside_the_trainable_state():
    model = tiny_model(decoder=True)
    keys = list(model.state_dict())
    assert not any(k.split(".")[0] in ("encoder", "_encoder") or "patch_embed" in k for k in keys), keys
    own = {id(p) for p in model.parameters()}
    assert all(id(p) not in own and not p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.training
    features = model.encode_features(images(2, seed=0)).requires_grad_(True)
    model.decoder_loss(features, images(2, seed=0)).backward()
    assert features.grad is None  # the decoder trains on detached features
    assert model.decoder.net[0].weight.grad is not None
    # .to()/.double() move the unregistered encoder with the model.
    model.double()
    assert next(model.encoder.parameters()).dtype == torch.float64
    assert model.encode(images(1, seed=0)).dtype == torch.float64


def test_missing_encoder_weights_file_is_named(tmp_path):
    model = DinoWM(DinoWMConfig.tiny(2, 0), encoder_weights=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        model.encode(images(1, seed=0))


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = tiny_model(decoder=True)
    c = model.config
    model.set_normalization(torch.tensor([0.1, -0.2]), torch.tensor([0.5, 2.0]), torch.ones(3), torch.full((3,), 3.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "dinowm.pt"
    model.save(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model"] == "dinowm" and ckpt["encoder"]["name"] == "tiny"
    loaded = DinoWM.load(path, encoder=model.encoder)
    obs, prop = images(3, seed=0), torch.randn(3, 3)
    actions = torch.rand(3, 2, c.action_dim)
    with torch.no_grad():
        z, z2 = model.encode_obs(obs, prop), loaded.encode_obs(obs, prop)
        assert torch.equal(z, z2)
        assert torch.equal(model.rollout(z, actions), loaded.rollout(z2, actions))
    with pytest.raises(ValueError, match="'told' model, not a 'dinowm'"):
        DinoWM.from_checkpoint({**ckpt, "model": "told"})
    with pytest.raises(ValueError, match="action_dim=2, but the task has action_dim=3"):
        DinoWM.from_checkpoint(ckpt, encoder=model.encoder, action_dim=3)
    deeper = DinoWM(dataclasses.replace(c, depth=3), encoder=model.encoder)
    with pytest.raises(ValueError, match="depth: 2 vs 3"):
        deeper.load_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError):
        DinoWM.load(tmp_path / "missing.pt")
