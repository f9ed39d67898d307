"""Optimizer groups, the learning-rate schedule, checkpoints and the catchment's weather."""

from __future__ import annotations

import itertools

import pytest
import torch

from pipeline.catchment import every_catchment_means
from training import checkpoint
from training.catchment import catchment_weather
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


def test_the_catchments_weather_weighs_each_visible_valid_pixel_by_its_share():
    """The series' and the memory's catchment weather: the mean over the catchment's own
    pixels, not over its patches; masked patches and invalid pixels left out, and the share
    of the catchment they leave seen."""
    x = torch.arange(16.0).view(1, 2 * 2, 4)  # [B, T*N, P]: 2 days, 2 patches, 4 pixels
    v = torch.ones_like(x)
    v[0, 1, 3] = 0  # day 0, patch 1, pixel 3 missing
    mask = torch.tensor([[False, False, True, False]])  # day 1: patch 0 masked
    pixels = torch.zeros(1, 2, 4)
    pixels[0, 0, 0], pixels[0, 1, 2], pixels[0, 1, 3] = 0.5, 0.25, 0.25  # the catchment's cells
    got = catchment_weather([(("precip",), (x, v, mask))], {"catchment_pixels": pixels}, 2, 4)
    day0 = (0.5 * 0 + 0.25 * 6) / 0.75  # x[day 0, patch 0, pixel 0] and [patch 1, pixel 2]
    day1 = (0.25 * 14 + 0.25 * 15) / 0.5  # patch 1's pixels 2 and 3 on day 1
    torch.testing.assert_close(got, torch.tensor([[[day0, 0.75], [day1, 0.5]]]))
    # rain on pixels of its patches that are not the catchment's changes nothing
    outside = x.clone()
    outside[0, :, 1] += 100.0
    again = catchment_weather(
        [(("precip",), (outside, v, mask))], {"catchment_pixels": pixels}, 2, 4
    )
    torch.testing.assert_close(again, got)
    # every catchment at once (pipeline.history) gives the same means
    means, covered = every_catchment_means(
        x.view(2, 2, 4), (v > 0).view(2, 2, 4) & ~mask.view(2, 2, 1), pixels
    )
    torch.testing.assert_close(means[:, 0], torch.tensor([day0, day1]))
    torch.testing.assert_close(covered[:, 0], torch.tensor([0.75, 0.5]))
