"""Optimizer groups, the learning-rate schedule and checkpoints."""

from __future__ import annotations

import itertools

import pytest
import torch

from training import checkpoint
from training.optim import adamw, warmup_cosine


def test_schedule_warms_up_then_decays():
    f = [warmup_cosine(s, warmup=10, total=110) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.5, abs=1e-2)
    assert all(a >= b for a, b in itertools.pairwise(f[10:])) and f[-1] < 0.01


def test_no_weight_decay_on_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = adamw(model, lr=1e-3)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3 and opt.defaults["betas"] == (0.9, 0.95)


def test_checkpoints_are_atomic_and_refuse_another_dataset(tmp_path):
    data, other = tmp_path / "a", tmp_path / "b"
    for d, text in ((data, "{}"), (other, '{"x": 1}')):
        d.mkdir()
        (d / "manifest.json").write_text(text)
    path = tmp_path / "ckpt.pt"
    state = {key: {} for key in checkpoint.CHECKPOINT_KEYS} | {"step": 3}
    checkpoint.save(path, {**state, "manifest_sha256": checkpoint.manifest_hash(data)})
    assert not list(tmp_path.glob(".*.tmp"))
    assert checkpoint.load(path, data)["step"] == 3
    with pytest.raises(ValueError, match="another dataset"):
        checkpoint.load(path, other)
    checkpoint.save(path, {"step": 3})  # a file of torch's, but no checkpoint of ours
    with pytest.raises(ValueError, match="not a hydromae checkpoint"):
        checkpoint.load(path, data)
    torch.manual_seed(1)
    states = checkpoint.random_states()
    a = torch.rand(3)
    checkpoint.set_random_states(states)
    assert torch.equal(a, torch.rand(3))
