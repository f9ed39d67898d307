"""The multi-modal MAE and its loss, on a small grid with a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_H, SMALL_P, SMALL_W

from pipeline import MultiScaleMaskedCollate, strategies
from pipeline.history import HISTORY_FEATURES
from pipeline.masking import masked_count
from pipeline.normalize import Normalizer, VariableStats
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES
from training.baselines import interpolate_time, neighbour_mean
from training.hints import NEAR_DAYS, visible_nearness
from training.loss import LossConfig, mae_loss
from training.memory import CatchmentMemory
from training.model import Geometry, HydroMAE
from training.model_config import ModelConfig

T = 12


def normalizer() -> Normalizer:
    return Normalizer(
        {
            "precip": VariableStats("log1p", 0.5, 0.8),
            "soil": VariableStats("none", 0.3, 0.1),
            "temp": VariableStats("none", 9.0, 5.0),
            "evap": VariableStats("none", 1.5, 1.0),
            "riverflow": VariableStats("log1p", 0.7, 0.5),
        }
    )


def make_batch(path, mask_mode="unified", seed=0, nan_frac=0.0, n=4) -> tuple[dict, Geometry]:
    collate = MultiScaleMaskedCollate(
        seq_len=T, patch_size=SMALL_P, image_height=SMALL_H, image_width=SMALL_W,
        land_mask_path=path, mask_mode=mask_mode, seed=seed,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    samples = []
    days = np.arange(T)
    # the catchment covers every pixel of every valid patch alike
    pixels = np.full((collate.num_valid, collate.grid.patch_pixels),
                     1 / (collate.num_valid * collate.grid.patch_pixels), np.float32)  # fmt: skip
    for i in range(n):
        wave = np.sin(2 * np.pi * (days + 3 * i) / T)[:, None, None]
        s = {
            "precip": np.maximum(0, 3 * wave + rng.normal(0, 0.3, (T, SMALL_H, SMALL_W))),
            "soil": 0.3 + 0.05 * wave + rng.normal(0, 0.01, (T, SMALL_H, SMALL_W)),
            "temp": 9 + 4 * wave + rng.normal(0, 0.5, (T, SMALL_H, SMALL_W)),
            "evap": 1.5 + wave[:, 0, 0],
            "riverflow": 1.0 + 0.5 * np.roll(wave[:, 0, 0], 2),
            "static": np.array([100.0 + i, 250.0], dtype=np.float32),
            "catchment_weight": np.full(collate.num_valid, 1 / collate.num_valid, np.float32),
            "catchment_pixels": pixels,
            "doy": (days + 1).astype(np.int16),
            "sample_key": f"s{i}",
        }
        for name in IMAGE_MODALITIES:
            s[name] = s[name].astype(np.float32)
            s[name][:, ~collate.land_mask] = np.nan
            s[name][rng.random(s[name].shape) < nan_frac] = np.nan
        for name in VECTOR_MODALITIES:
            s[name] = s[name].astype(np.float32)
            s[name][rng.random(T) < nan_frac] = np.nan
        samples.append(s)  # the seed's full grids, with the schema's extra fields
    batch = collate(samples)
    geometry = Geometry(
        patch_rows=collate.grid.rows, patch_cols=collate.grid.cols,
        patch_pixels=collate.grid.patch_pixels,
        valid_patch_indices=tuple(collate.valid_patch_indices.tolist()),
        static_attributes=2, mask_mode=mask_mode,
    )  # fmt: skip
    return batch, geometry


def model_for(geometry: Geometry, decoder: str = "mae", seed: int = 0, **changes) -> HydroMAE:
    torch.manual_seed(seed)
    cfg = ModelConfig.preset("tiny")
    cfg.decoder = decoder
    for key, value in changes.items():
        setattr(cfg, key, value)
    return HydroMAE(cfg, geometry, normalizer())


def loss_of(model: HydroMAE, batch: dict) -> torch.Tensor:
    return mae_loss(model(batch), model.groups, model.geometry.patch_pixels, LossConfig())[0]


def with_masked_values_changed(batch: dict) -> dict:
    """The batch with wild values at every masked position, visible ones untouched."""
    changed = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    idx = batch["valid_patch_indices"]
    for name in IMAGE_MODALITIES:
        masked = batch[f"{name}_mask"][..., idx][..., None].expand_as(batch[name])  # [B, T, N, P]
        changed[name] = torch.where(masked, torch.full_like(batch[name], 1e3), batch[name])
    for name in VECTOR_MODALITIES:
        changed[name] = torch.where(batch[f"{name}_mask"], -50.0, batch[name])
    return changed


def test_encoder_never_sees_masked_values(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry).eval()
    h = model.forward_encoder(batch).h
    h2 = model.forward_encoder(with_masked_values_changed(batch)).h
    # visible tokens: 7 valid patches - 5 masked = 2 a day; 12 - 9 = 3 days of each of the
    # two series; 1 static token
    assert h.shape == (4, 1 + 2 * T + 2 * 3, 32)
    assert torch.equal(h, h2)


def test_visible_positions_and_sea_pixels_do_not_change_the_loss(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry)
    out = model(batch)
    base = mae_loss(out, model.groups, geometry.patch_pixels, LossConfig())[0]
    g = out["image"]
    untouchable = ~(g["mask"][..., None] & g["valid"])  # visible tokens, sea pixels
    g["pred"] = torch.where(untouchable, g["pred"] + 100.0, g["pred"])
    for name in VECTOR_MODALITIES:
        v = out[name]
        v["pred"] = torch.where(v["mask"][..., None], v["pred"], v["pred"] - 7.0)
    again = mae_loss(out, model.groups, geometry.patch_pixels, LossConfig())[0]
    assert torch.equal(base, again)
    assert (~g["valid"]).any()  # there were sea pixels in valid patches to ignore


def test_nan_inputs_never_make_the_loss_nan(small_mask_path):
    batch, geometry = make_batch(small_mask_path, nan_frac=0.3)
    model = model_for(geometry)
    loss = loss_of(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # a modality without a single target adds nothing, and no NaN
    batch["riverflow_valid"][:] = False
    out = model(batch)
    total, per = mae_loss(out, model.groups, geometry.patch_pixels, LossConfig())
    assert per["riverflow"] == 0 and torch.isfinite(total)


@pytest.mark.parametrize(("mask_mode", "decoder"), [("unified", "mae"), ("independent", "cross")])
def test_tiny_model_overfits_one_batch(small_mask_path, mask_mode, decoder):
    batch, geometry = make_batch(small_mask_path, mask_mode=mask_mode)
    model = model_for(geometry, decoder)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = loss_of(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


def test_both_decoders_and_layouts_train(small_mask_path):
    for mask_mode in ("unified", "independent"):
        for decoder in ("mae", "cross"):
            batch, geometry = make_batch(small_mask_path, mask_mode=mask_mode, seed=1)
            model = model_for(geometry, decoder)
            out = model(batch)
            images = {"image"} if mask_mode == "unified" else set(IMAGE_MODALITIES)
            assert set(out) == images | set(VECTOR_MODALITIES)
            loss = loss_of(model, batch)
            loss.backward()
            assert torch.isfinite(loss) and loss > 0


def test_crossmae_reconstructs_a_random_share_in_training(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry, "cross", cross_fraction=0.5)
    out = model.train()(batch)
    g = out["image"]
    assert (g["predicted"] & ~g["mask"]).sum() == 0  # only masked positions are queried
    assert g["predicted"].sum(1).tolist() == [round(5 * T * 0.5)] * 4
    out = model.eval()(batch)
    assert torch.equal(out["image"]["predicted"], out["image"]["mask"])


def test_all_token_encoder_ablation_keeps_every_position(small_mask_path):
    """The benchmark's reference (encoder_tokens="all"): every token encoded, a learned mask
    token in place of the masked ones, so masked values still cannot leak."""
    batch, geometry = make_batch(small_mask_path)
    for decoder in ("mae", "cross"):
        torch.manual_seed(0)
        cfg = ModelConfig.preset("tiny")
        cfg.decoder, cfg.encoder_tokens = decoder, "all"
        model = HydroMAE(cfg, geometry, normalizer())
        h = model.forward_encoder(batch).h
        assert h.shape == (4, 1 + 7 * T + 2 * T, 32)  # static, 7 valid patches x T days, 2 x T
        changed = dict(batch)
        changed["temp"] = torch.where(
            batch["temp_mask"][..., batch["valid_patch_indices"]][..., None], 1e3, batch["temp"]
        )
        assert torch.equal(model.forward_encoder(changed)[0], h)
        loss = loss_of(model, batch)
        loss.backward()
        assert torch.isfinite(loss) and model.encoder_mask_token.grad is not None


@pytest.mark.parametrize("memory", [False, True])
@pytest.mark.parametrize("decoder", ["mae", "cross"])
def test_predictions_never_depend_on_masked_values(small_mask_path, decoder, memory):
    """The decoder's hints and the catchment memory, like the encoder, read visible values
    only."""
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry, decoder, memory=memory).eval()
    assert model.cfg.hints
    out, out2 = model(batch), model(with_masked_values_changed(batch))
    for name in out:
        assert torch.equal(out[name]["pred"], out2[name]["pred"])


def test_hints_start_from_the_baselines(small_mask_path):
    """With the head silenced, the prediction is the hints' mix: all interpolation, or all
    neighbours, gives exactly the baselines' values at every scored position."""
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry, "cross").eval()
    with torch.no_grad():
        for head in model.decoder.head.values():
            head.weight.zero_()
            head.bias.zero_()
    idx = batch["valid_patch_indices"]
    for kind, baseline in ((0, "interpolation"), (1, "neighbours")):
        with torch.no_grad():
            model.decoder.hints.mix["image"].zero_()[kind] = 1.0
        out = model(batch)
        image = out["image"]
        for j, name in enumerate(IMAGE_MODALITIES):
            cols = slice(j * geometry.patch_pixels, (j + 1) * geometry.patch_pixels)
            truth = image["target"][..., cols].reshape(batch[name].shape)  # [B, T, N, P]
            valid = image["valid"][..., cols].reshape(truth.shape)
            masked = batch[f"{name}_mask"][..., idx]  # [B, T, N]
            known = valid & ~masked[..., None]
            expected = (
                interpolate_time(truth, known)
                if baseline == "interpolation"
                else neighbour_mean(truth, valid, masked, model.decoder.hints.adjacency)
            )
            pred = image["pred"][..., cols].reshape(truth.shape)
            scored = valid & masked[..., None]
            assert scored.any()
            torch.testing.assert_close(pred[scored], expected[scored])
        for name in VECTOR_MODALITIES:
            vector = out[name]
            known = vector["valid"] & ~vector["mask"][..., None]  # [B, T, 1]
            scored = vector["valid"] & vector["mask"][..., None]
            expected = interpolate_time(vector["target"], known)
            torch.testing.assert_close(vector["pred"][scored], expected[scored])
            torch.testing.assert_close(vector["mix"][scored], expected[scored])


def test_norm_pix_loss_stays_finite_on_a_dry_patch(small_mask_path):
    """Per-patch target normalisation: a patch with no variance (no rain) gives targets of
    0, not a division by zero, thanks to the variance floor."""
    batch, geometry = make_batch(small_mask_path)
    batch["precip"] = torch.where(batch["precip_valid"], 0.0, batch["precip"])  # dry
    cfg = ModelConfig.preset("tiny")
    cfg.hints = False  # hints are in normalised units, not per-patch standardised ones
    model = HydroMAE(cfg, geometry, normalizer())
    out = model(batch)
    loss, per = mae_loss(out, model.groups, geometry.patch_pixels, LossConfig(norm_pix_loss=True))
    plain = mae_loss(out, model.groups, geometry.patch_pixels, LossConfig())[1]
    loss.backward()
    assert torch.isfinite(loss)
    assert per["precip"] != plain["precip"]  # the targets did change
    assert per["evap"] == plain["evap"]  # vectors are not patches


def test_rain_history_is_the_catchments_rain_lagged(small_mask_path):
    """The vector queries' rain feature: the catchment_weight-weighted rain of each day and
    of the days before (0 before the window), from the precipitation hint."""
    _, geometry = make_batch(small_mask_path)
    model = model_for(geometry, "cross")
    b, n, p = 4, len(geometry.valid_patch_indices), geometry.patch_pixels
    rain = torch.arange(T, dtype=torch.float32)[None, :, None, None].expand(b, T, n, p)
    rain = rain * (1 + torch.arange(n))[None, None, :, None]  # patch n: (n + 1) x day
    hint = torch.stack([torch.zeros_like(rain), rain], dim=3).reshape(b, T * n, 2, p)
    v = torch.ones(b, T * n, 3 * p)
    mask = torch.rand(b, T * n) < 0.7
    weight = torch.zeros(b, n)
    weight[:, 1], weight[:, 2] = 0.25, 0.75  # rain 2 x day and 3 x day: 2.75 x day
    history = model.decoder.hints.rain_history({"catchment_weight": weight}, hint, v, mask, days=T)
    assert history.shape == (b, T, 4)
    days = torch.arange(T, dtype=torch.float32)
    for lag in range(4):
        expected = torch.where(days >= lag, 2.75 * (days - lag), 0.0)
        torch.testing.assert_close(history[:, :, lag], expected.expand(b, -1))


def one_sample(batch: dict, i: int) -> dict:
    """Sample ``i`` of a batch as a batch of one."""
    b = len(batch["sample_key"])
    return {
        k: (v[i : i + 1] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == b else v)
        if not isinstance(v, list)
        else v[i : i + 1]
        for k, v in batch.items()
    }


@pytest.mark.parametrize("memory", [False, True])
@pytest.mark.parametrize("decoder", ["mae", "cross"])
def test_a_batch_of_mixed_strategies_gives_each_sample_what_it_gives_alone(
    small_mask_path, decoder, memory
):
    """Samples of one batch may hide different numbers of tokens (a strategy each): the
    padding that evens them out changes no sample's prediction."""
    batch, geometry = make_batch(small_mask_path)
    mixed = strategies.apply(batch, ["seed", "withhold", "block", "riverflow"], [0, 0, 0.7, 0])
    model = model_for(geometry, decoder, memory=memory).eval()
    with torch.no_grad():
        out = model(mixed)
        for i in range(4):
            alone = model(one_sample(mixed, i))
            for name in out:
                assert torch.equal(out[name]["predicted"][i], alone[name]["predicted"][0])
                where = out[name]["predicted"][i]
                torch.testing.assert_close(
                    out[name]["pred"][i][where], alone[name]["pred"][0][where], rtol=1e-4, atol=1e-5
                )


@pytest.mark.parametrize("memory", [False, True])
@pytest.mark.parametrize("decoder", ["mae", "cross"])
def test_simulate_shows_the_model_no_riverflow_value(small_mask_path, decoder, memory):
    batch, geometry = make_batch(small_mask_path)
    sim = strategies.apply(batch, ["simulate"] * 4)
    model = model_for(geometry, decoder, memory=memory).eval()
    changed = dict(sim)
    changed["riverflow"] = torch.rand_like(sim["riverflow"]) * 100
    with torch.no_grad():
        out, again = model(sim), model(changed)
    for name in out:
        assert torch.equal(out[name]["pred"], again[name]["pred"]), name
    flow = out["riverflow"]
    assert flow["predicted"].all() and flow["mask"].all()  # every day predicted and scored
    assert not out["evap"]["mask"].any()


@pytest.mark.parametrize("memory", [False, True])
def test_forcing_shows_the_model_no_soil_moisture_and_no_riverflow(small_mask_path, memory):
    """``forcing``: rain, temperature and evaporation seen on every day; soil moisture and
    riverflow never, in the window or in the history before it (change every value of
    both: predictions unchanged)."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    batch = with_history(batch, h)
    forced = strategies.apply(batch, ["forcing"] * 4)
    assert not forced["soil_valid"].any() and forced["riverflow_mask"].all()
    assert not (forced["precip_mask"].any() or forced["temp_mask"].any())
    assert not forced["evap_mask"].any()
    soil = HISTORY_FEATURES.index("soil")
    assert not forced["history_valid"][..., soil].any()
    others = [i for i in range(len(HISTORY_FEATURES)) if i != soil]
    assert forced["history_valid"][..., others].all()
    assert batch["history_valid"].all()  # the batch given is not changed
    model = model_for(geometry, "cross", history_days=h, memory=memory).eval()
    changed = dict(forced)
    changed["riverflow"] = torch.rand_like(forced["riverflow"]) * 100
    changed["soil"] = torch.rand_like(forced["soil"])
    history = forced["history"].clone()
    history[..., soil] = torch.rand_like(history[..., soil]) * 5
    changed["history"] = history
    with torch.no_grad():
        out, again = model(forced), model(changed)
    for name in out:
        assert torch.equal(out[name]["pred"], again[name]["pred"]), name
    with torch.no_grad():  # under simulate soil moisture is seen, and it matters
        seen = model(strategies.apply({**batch, "soil": changed["soil"]}, ["simulate"] * 4))
        before = model(strategies.apply(batch, ["simulate"] * 4))
    assert not torch.equal(seen["riverflow"]["pred"], before["riverflow"]["pred"])
    if memory:  # the memory reads the history's soil moisture where it is seen
        with torch.no_grad():
            read = model(strategies.apply({**batch, "history": history}, ["simulate"] * 4))
        assert not torch.equal(read["riverflow"]["pred"], before["riverflow"]["pred"])


def test_the_model_withholds_what_a_training_batchs_strategies_withhold(small_mask_path):
    """A training batch carries its strategies' masks (the collate's ``hide``) and their
    names (``strategy``); the model withholds what they withhold (``forcing``'s soil
    moisture, window and history) itself: the same predictions as a batch given with its
    validity already changed (``apply``), different from the soil seen."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    batch = with_history(batch, h)
    names = ["seed", "forcing", "withhold", "forcing"]
    drawn = {**strategies.hide(batch, names), "strategy": names}
    assert drawn["soil_valid"] is batch["soil_valid"]  # hide changes the masks alone
    model = model_for(geometry, "cross", history_days=h, memory=True).eval()
    with torch.no_grad():
        out = model(drawn)
        applied = model(strategies.apply(batch, names))
        shown = model({k: v for k, v in drawn.items() if k != "strategy"})
    for name in out:
        assert torch.equal(out[name]["pred"], applied[name]["pred"]), name
    flow = out["riverflow"]["pred"]  # [B, T, 1]
    assert torch.equal(flow[[0, 2]], shown["riverflow"]["pred"][[0, 2]])
    assert not torch.equal(flow[[1, 3]], shown["riverflow"]["pred"][[1, 3]])


def test_the_encoder_takes_the_catchments_patches_first_within_its_budget(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    weight = torch.zeros_like(batch["catchment_weight"])
    weight[:, 3] = 1.0  # the catchment lies in the 4th valid patch only
    sim = strategies.apply({**batch, "catchment_weight": weight}, ["simulate"] * 4)
    model = model_for(geometry).eval()
    encoded = model.forward_encoder(sim)
    h, restore = encoded.h, encoded.restore
    budget = 7 - masked_count(7, 0.75)  # the specification's visible count: 2 of 7 a day
    assert model.image_budget == budget
    assert h.shape[1] == 1 + budget * T + T  # images within budget, every evap day, no flow
    keep = restore["image"][3].view(4, T, 7)  # [B, T, N]: encoded
    assert (keep.sum(-1) == budget).all() and keep[:, :, 3].all()
    assert keep.any(dim=1).sum(-1).min() > budget  # other patches take turns over the days


def test_the_history_before_the_window_reaches_the_prediction_and_is_required(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    h = 10
    rng = np.random.default_rng(0)
    history = torch.from_numpy(rng.uniform(0.0, 2.0, (4, h, 4)).astype(np.float32))
    valid = torch.ones(4, h, 4, dtype=torch.bool)
    valid[0, :3] = False  # days before the record
    batch = {**batch, "history": history, "history_valid": valid}
    model = model_for(geometry, "cross", history_days=h).eval()
    sim = strategies.apply(batch, ["simulate"] * 4)
    with torch.no_grad():
        out = model(sim)["riverflow"]["pred"]
        wetter = model({**sim, "history": history + 1.0})["riverflow"]["pred"]
        hidden = model({**sim, "history": torch.where(valid, history, 1e3)})["riverflow"]["pred"]
    assert not torch.allclose(out, wetter)  # the days before the window matter
    assert torch.equal(out, hidden)  # invalid days' values never do
    without = {k: v for k, v in sim.items() if not k.startswith("history")}
    with pytest.raises(ValueError, match="history_days=10"):
        model(without)
    with pytest.raises(ValueError, match="multiple of history_bin"):
        model_for(geometry, history_days=12)


@pytest.mark.parametrize("decoder", ["mae", "cross"])
def test_the_catchment_memory_carries_the_days_before_the_window(small_mask_path, decoder):
    """With the history's summary on the static token silenced, the days before the window
    reach the riverflow prediction through the memory alone; invalid days never do."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    rng = np.random.default_rng(1)
    history = torch.from_numpy(rng.uniform(0.0, 2.0, (4, h, 4)).astype(np.float32))
    valid = torch.ones(4, h, 4, dtype=torch.bool)
    valid[1, :4] = False
    sim = strategies.apply({**batch, "history": history, "history_valid": valid}, ["simulate"] * 4)
    model = model_for(geometry, decoder, history_days=h, memory=True).eval()
    with torch.no_grad():
        model.history[-1].weight.zero_()
        model.history[-1].bias.zero_()
        out = model(sim)["riverflow"]["pred"]
        wetter = model({**sim, "history": history + 1.0})["riverflow"]["pred"]
        hidden = model({**sim, "history": torch.where(valid, history, 1e3)})["riverflow"]["pred"]
        model.cfg.memory = False  # the same weights without the memory: the history is out
        forgotten = model(sim)["riverflow"]["pred"]
        assert torch.equal(forgotten, model({**sim, "history": history + 1.0})["riverflow"]["pred"])
    assert not torch.allclose(out, wetter)
    assert torch.equal(out, hidden)
    assert not torch.allclose(out, forgotten)


def test_the_history_flow_is_a_target_of_the_memory_never_an_input(small_mask_path):
    """With ``history_flow`` the memory predicts riverflow on the days before the window and
    the loss counts it on the days the gauge has a value; no prediction reads those values."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    rng = np.random.default_rng(2)
    history = torch.from_numpy(rng.uniform(0.0, 2.0, (4, h, 4)).astype(np.float32))
    flow = torch.from_numpy(rng.uniform(0.0, 3.0, (4, h)).astype(np.float32))
    flow_valid = torch.ones(4, h, dtype=torch.bool)
    flow_valid[2, :4] = False  # before the gauge's record
    batch = {**batch, "history": history, "history_valid": torch.ones(4, h, 4, dtype=torch.bool),
             "history_flow": flow, "history_flow_valid": flow_valid}  # fmt: skip
    sim = strategies.apply(batch, ["simulate"] * 4)
    model = model_for(geometry, "cross", history_days=h, memory=True, history_flow=True).eval()
    with torch.no_grad():
        out = model(sim)
        wild = model({**sim, "history_flow": flow * 100 + 7})
    for name, _ in model.groups:
        assert torch.equal(out[name]["pred"], wild[name]["pred"])
    assert torch.equal(out["history_flow"]["pred"], wild["history_flow"]["pred"])
    pred, target = out["history_flow"]["pred"], out["history_flow"]["target"]
    assert pred.shape == (4, h)
    want = model.normalizer.normalize("riverflow", flow)
    assert torch.allclose(target[flow_valid], want[flow_valid])
    plain, _ = mae_loss(out, model.groups, model.geometry.patch_pixels, LossConfig())
    cfg = LossConfig(history_flow=0.5)
    total, per = mae_loss(out, model.groups, model.geometry.patch_pixels, cfg)
    direct = ((pred - target)[flow_valid] ** 2).mean()
    assert torch.allclose(per["history_flow"], direct)
    assert torch.allclose(total, plain + 0.5 * direct)
    model.train()
    loss, _ = mae_loss(model(sim), model.groups, model.geometry.patch_pixels, cfg)
    loss.backward()
    assert model.memory.flow.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs memory"):
        model_for(geometry, history_days=h, history_flow=True)


def with_history(batch: dict, h: int, seed: int = 2) -> dict:
    """``batch`` with ``h`` days of history and the history's flow (all valid)."""
    rng = np.random.default_rng(seed)
    b = len(batch["sample_key"])
    history = torch.from_numpy(rng.uniform(0.0, 2.0, (b, h, 4)).astype(np.float32))
    flow = torch.from_numpy(rng.uniform(0.0, 3.0, (b, h)).astype(np.float32))
    every = torch.ones(b, h, dtype=torch.bool)
    return {**batch, "history": history, "history_valid": every[..., None].expand(-1, -1, 4),
            "history_flow": flow, "history_flow_valid": every}  # fmt: skip


def test_rainfall_runoff_sequences_train_the_memorys_own_flow_head(small_mask_path):
    """A rainfall-runoff sequence is read as the days before a window are: the same weather
    gives the same riverflow from the same LSTM and head; the loss adds the weighted mean
    squared error on its target days, and the gradient reaches the memory."""
    batch, geometry = make_batch(small_mask_path)
    h = 15
    batch = with_history(batch, h)
    static = torch.rand(4, geometry.static_attributes)
    batch["static"], batch["static_valid"] = static, torch.ones_like(static, dtype=torch.bool)
    target = batch["history_flow"].clone()
    known = torch.zeros(4, h, dtype=torch.bool)
    known[:, -5:] = True  # the last 5 days are the target days
    known[1, -1] = False  # a missing gauge value
    runoff = {
        "runoff": batch["history"], "runoff_valid": batch["history_valid"],
        "runoff_flow": target, "runoff_flow_valid": known,
        "runoff_static": static, "runoff_static_valid": batch["static_valid"],
        "runoff_catchment": torch.tensor([2, 0, 1, 2]),
    }  # fmt: skip
    sim = strategies.apply({**batch, **runoff}, ["simulate"] * 4)
    model = model_for(geometry, "cross", history_days=h, memory=True, history_flow=True).eval()
    with torch.no_grad():
        out = model(sim)
    assert out["runoff"]["pred"].shape == (4, h)
    assert torch.allclose(out["runoff"]["pred"], out["history_flow"]["pred"], atol=1e-6)
    pred, want = out["runoff"]["pred"], model.normalizer.normalize("riverflow", target)
    assert torch.allclose(out["runoff"]["target"][known], want[known])
    plain, _ = mae_loss(out, model.groups, model.geometry.patch_pixels, LossConfig())
    total, per = mae_loss(out, model.groups, model.geometry.patch_pixels, LossConfig(runoff=2.0))
    direct = ((pred - want)[known] ** 2).mean()
    assert torch.allclose(per["runoff"], direct) and torch.allclose(total, plain + 2 * direct)
    # a per-catchment NSE loss scales every riverflow target by its own catchment's spread:
    # a sequence's (runoff_catchment) and the history's (the window's catchment)
    stds, eps = torch.tensor([0.5, 2.0, 4.0]), 0.1
    cfg = LossConfig(runoff=1.0, history_flow=1.0, flow_units="catchment",
                     catchment_flow_std=stds, nse_eps=eps)  # fmt: skip
    windows = torch.tensor([1, 0, 2, -1])  # the last: padding
    _, nse = model.forward_loss(out, cfg, windows)

    def scaled(h: dict, of: torch.Tensor) -> torch.Tensor:
        mm = [
            model.normalizer.denormalize("riverflow", h[k].clamp(-8, 8)) for k in ("pred", "target")
        ]
        err = (mm[0] - mm[1]) / (stds[of.clamp_min(0)] + eps)[:, None]
        return (err**2)[h["valid"]].mean()

    torch.testing.assert_close(nse["runoff"], scaled(out["runoff"], runoff["runoff_catchment"]))
    torch.testing.assert_close(nse["history_flow"], scaled(out["history_flow"], windows))
    assert not torch.isclose(nse["runoff"], direct)
    # the memory's terms in units of their own: the window's flow stays normalised
    own = LossConfig(runoff=1.0, history_flow=1.0, memory_flow_units="catchment",
                     catchment_flow_std=stds, nse_eps=eps)  # fmt: skip
    _, split = model.forward_loss(out, own, windows)
    _, window = model.forward_loss(out, LossConfig(runoff=1.0, history_flow=1.0), windows)
    for key in ("runoff", "history_flow"):
        torch.testing.assert_close(split[key], nse[key])
    torch.testing.assert_close(split["riverflow"], window["riverflow"])
    assert not torch.isclose(split["riverflow"], nse["riverflow"])
    model.train()
    model(sim)["runoff"]["pred"].sum().backward()
    assert model.memory.lstm.weight_ih_l0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="flow head"):
        model_for(geometry, history_days=h, memory=True).memory.runoff(torch.zeros(1, h, 1))


def test_a_flow_fill_makes_the_memorys_riverflow_a_kind_of_riverflows_hint(small_mask_path):
    """With ``flow_fill`` riverflow's mix weighs the memory's own riverflow against the
    interpolation: with all the weight on it, the mix is the memory's riverflow."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    sim = strategies.apply(with_history(batch, h), ["simulate"] * 4)
    model = model_for(
        geometry, "cross", history_days=h, memory=True, history_flow=True, flow_fill=True
    ).eval()
    assert model.decoder.hints.mix["riverflow"].shape == (2, 1)
    with torch.no_grad():
        model.decoder.hints.mix["riverflow"].copy_(torch.tensor([[0.0], [1.0]]))
        out = model(sim)["riverflow"]
    at = out["predicted"]  # [B, T]: every day under simulate
    assert at.all()
    assert torch.allclose(out["mix"][at], out["memory"][at])
    for missing in ({"history_flow": False}, {"hints": False}):
        with pytest.raises(ValueError, match="flow_fill"):
            settings = {"history_flow": True, "flow_fill": True, **missing}
            model_for(geometry, history_days=h, memory=True, **settings)


def test_visible_nearness_is_how_far_the_nearest_visible_days_are():
    """exp(-days / NEAR_DAYS) to the last visible day and to the next, per series; 1 on a
    visible day, 0 on a side with none."""
    seen = torch.zeros(2, 12, 2, dtype=torch.bool)
    seen[0, [3, 8], 0] = True
    seen[1, 5, 1] = True
    near = visible_nearness(seen).view(2, 12, 2, 2)  # [B, T, series, (before, after)]
    for b, t, k in np.ndindex(2, 12, 2):
        days = np.flatnonzero(seen[b, :, k].numpy())
        before, after = days[days <= t], days[days >= t]
        want = [
            np.exp(-(t - before[-1]) / NEAR_DAYS) if before.size else 0.0,
            np.exp(-(after[0] - t) / NEAR_DAYS) if after.size else 0.0,
        ]
        np.testing.assert_allclose(near[b, t, k].numpy(), want, rtol=1e-6)
    assert not near[0, :, 1].any()  # the first sample's second series: nothing visible


@pytest.mark.parametrize("decoder", ["mae", "cross"])
def test_with_nearness_the_gate_weighs_the_fills_by_how_near_a_visible_day_is(
    small_mask_path, decoder
):
    """With ``nearness`` the gate reads how near riverflow's visible days are: a gate that
    moves weight from the memory's flow to interpolation by the nearness gives each masked
    day exactly that mix; and the prediction still reads visible values only."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    batch = with_history(batch, h)
    model = model_for(
        geometry, decoder, history_days=h, memory=True, history_flow=True, flow_fill=True,
        gated_mix=True, nearness=True,
    ).eval()  # fmt: skip
    hints = model.decoder.hints
    gate = hints.gate["riverflow"]  # [decoder_dim + 2] -> [kinds 2 x 1 modality]
    assert gate.in_features == model.cfg.decoder_dim + 2
    with torch.no_grad():
        hints.mix["riverflow"].copy_(torch.tensor([[0.0], [1.0]]))
        gate.weight.zero_()
        gate.weight[0, -2:] = 0.5  # interpolation: + the mean nearness
        gate.weight[1, -2:] = -0.5  # the memory's flow: - the same
        out = model(batch)["riverflow"]
        changed = model(with_masked_values_changed(batch))["riverflow"]
    x, v, mask = model.forward_encoder(batch).parts["riverflow"]
    seen = (v > 0) & ~mask[..., None]  # [B, T, 1]
    interp = interpolate_time(x, seen)[..., 0]  # [B, T]
    near = visible_nearness(seen).mean(-1)  # [B, T]
    want = near * interp + (1 - near) * out["memory"][..., 0]
    at = out["mask"] & out["predicted"]
    assert at.any() and (near[at] > 0.1).any() and (near[at] < 0.9).any()
    torch.testing.assert_close(out["mix"][..., 0][at], want[at])
    assert torch.equal(out["pred"], changed["pred"])


def test_the_memorys_flow_fill_never_reads_the_windows_flow_and_learns_on_its_days(
    small_mask_path,
):
    """With ``flow_fill`` the memory's riverflow is a simulation: the same whether the
    window's flow is visible or withheld, and with every visible flow value changed; the
    memory's query terms still read the visible flow. Its targets are the history's days
    and every valid day of the window, visible or masked."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    batch = with_history(batch, h)
    model = model_for(
        geometry, "cross", history_days=h, memory=True, history_flow=True, flow_fill=True
    ).eval()
    withheld = strategies.apply(batch, ["ungauged"] * 4)  # riverflow masked, nothing else
    changed = {**batch, "riverflow": batch["riverflow"] * 3 + 1}
    with torch.no_grad():
        (terms, flow), (_, same), (moved, also) = (
            model.forward_memory(model.forward_encoder(b)) for b in (batch, withheld, changed)
        )
    _, v, mask = model.forward_encoder(batch).parts["riverflow"]
    assert ((v[..., 0] > 0) & ~mask).any()  # the seed's masks leave some flow visible
    torch.testing.assert_close(flow, same)
    torch.testing.assert_close(flow, also)
    assert not torch.allclose(terms["riverflow"], moved["riverflow"])
    with torch.no_grad():
        out = model(batch)
    target = out["history_flow"]
    assert target["pred"].shape == target["valid"].shape == (4, h + T)
    x, v, _ = model.forward_encoder(batch).parts["riverflow"]
    torch.testing.assert_close(target["target"][:, h:], x[..., 0])
    assert torch.equal(target["valid"][:, h:], v[..., 0] > 0)
    torch.testing.assert_close(target["pred"][:, h:], out["riverflow"]["memory"][..., 0])
    torch.testing.assert_close(target["pred"][:, h:], flow[:, h:])


def test_a_detached_memory_learns_from_its_own_flow_terms_alone(small_mask_path):
    """With ``memory_detach`` the window's loss trains the memory's query embedding and
    never its LSTM or flow head (the decoder reads its states and flow through a
    stop-gradient), while the memory's own riverflow term still reaches the LSTM; the
    predictions are those of the same weights without it."""
    batch, geometry = make_batch(small_mask_path)
    h = 10
    batch = with_history(batch, h)
    settings = dict(history_days=h, memory=True, history_flow=True, flow_fill=True)
    grads = {}
    for detach in (False, True):
        model = model_for(geometry, "cross", memory_detach=detach, **settings)
        out = model(batch)
        window = mae_loss(out, model.groups, model.geometry.patch_pixels, LossConfig())[0]
        window.backward(retain_graph=True)
        memory = [*model.memory.lstm.parameters(), *model.memory.flow.parameters()]
        lstm = [p.grad for p in memory]
        embed = model.memory.embed["riverflow"].weight.grad
        grads[detach] = (out["riverflow"]["pred"].detach(), lstm, embed)
        if detach:  # the memory's own term: the history's and the window's days' flow
            model.zero_grad()
            mse = out["history_flow"]["pred"].sub(out["history_flow"]["target"]).pow(2)
            mse[out["history_flow"]["valid"]].mean().backward()
            assert all(p.grad.abs().sum() > 0 for p in memory)
    with pytest.raises(ValueError, match="memory_detach"):  # nothing would train its LSTM
        model_for(geometry, "cross", history_days=h, memory=True, memory_detach=True)
    (pred, lstm, embed), (same, frozen, learned) = grads[False], grads[True]
    torch.testing.assert_close(pred, same)
    assert all(g is not None and g.abs().sum() > 0 for g in lstm)
    assert all(g is None or not g.any() for g in frozen)
    assert embed.abs().sum() > 0 and learned.abs().sum() > 0


def test_the_catchment_memory_runs_forward_in_time():
    """A day's memory, and its riverflow on a day before the window, depend on that day and
    the days before it, never on later ones."""
    torch.manual_seed(0)
    memory = CatchmentMemory(5, width=8, decoder_dim=16, groups=["riverflow"], history_flow=True)
    x = torch.randn(2, 20, 5)
    later = x.clone()
    later[:, 15:] += 1.0  # days 15.. of 20: the window's (the last 10) from its 6th day
    with torch.no_grad():
        (a, flow), (b, same) = memory(x, days=10), memory(later, days=10)
        a, b = a["riverflow"], b["riverflow"]
        history = x.clone()
        history[:, 6:] += 1.0  # from the 7th day of the history on
        changed = memory(history, days=10)[1]
    assert a.shape == (2, 10, 16) and flow.shape == (2, 20)
    assert torch.equal(a[:, :5], b[:, :5]) and not torch.allclose(a[:, 5:], b[:, 5:])
    assert torch.equal(flow[:, :15], same[:, :15])  # every day before the change
    assert not torch.allclose(flow[:, 15:], same[:, 15:])
    assert torch.equal(changed[:, :6], flow[:, :6])
    assert not torch.allclose(changed[:, 6:], flow[:, 6:])
    plain = CatchmentMemory(5, width=8, decoder_dim=16, groups=["riverflow"])
    assert plain(x, days=10)[1] is None


def test_a_group_with_nothing_masked_gets_its_values_as_fills(small_mask_path):
    """The hints skip the image fills when no patch of the batch is masked (``simulate``):
    exact, because both baselines give a visible position its own value."""
    batch, geometry = make_batch(small_mask_path)
    sim = strategies.apply(batch, ["simulate"] * 4)
    model = model_for(geometry, "cross").eval()
    parts = model.forward_encoder(sim).parts
    x, v, mask = parts["image"]
    assert not mask.any()
    fills = model.decoder.hints.fills(IMAGE_MODALITIES, x, v, mask, days=T)
    b, length, w = x.shape
    values = x.view(b, T, -1, w)  # [B, T, N, 3P]
    hidden = mask.view(b, T, -1)
    by_baselines = torch.stack(
        [
            interpolate_time(values, ~hidden[..., None]),
            neighbour_mean(values, v.view(values.shape) > 0, hidden, model.decoder.hints.adjacency),
        ],
        dim=3,
    ).view(b, length, 2, w)
    assert torch.equal(fills, by_baselines)


def test_a_physical_flow_loss_is_the_mse_in_mm_per_day_over_the_flow_variance(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry, "cross")
    out = model(batch)
    cfg = LossConfig(flow_units="physical", flow_std=0.5)
    total, per = model.forward_loss(out, cfg)
    flow = out["riverflow"]
    norm = model.normalizer
    scored = (flow["mask"] & flow["predicted"])[..., None] & flow["valid"]
    error = (
        norm.denormalize("riverflow", flow["pred"]) - norm.denormalize("riverflow", flow["target"])
    ) / 0.5
    torch.testing.assert_close(per["riverflow"], (error**2)[scored].mean())
    _, plain = model.forward_loss(out, LossConfig())
    for name in ("precip", "soil", "temp", "evap"):  # the other modalities unchanged
        torch.testing.assert_close(per[name], plain[name])
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="denormalize"):
        mae_loss(out, model.groups, geometry.patch_pixels, cfg)


def test_a_catchment_flow_loss_scales_each_sample_by_its_own_catchments_spread(small_mask_path):
    batch, geometry = make_batch(small_mask_path)
    model = model_for(geometry, "cross")
    out = model(batch)
    stds = torch.tensor([0.5, 2.0, 4.0])
    catchment = torch.tensor([2, 0, 1, -1])  # the last: padding, never out of range
    cfg = LossConfig(flow_units="catchment", catchment_flow_std=stds, nse_eps=0.1)
    _, per = model.forward_loss(out, cfg, catchment)
    flow = out["riverflow"]
    norm = model.normalizer
    scale = torch.tensor([4.1, 0.6, 2.1, 0.6]).view(-1, 1, 1)
    error = (
        norm.denormalize("riverflow", flow["pred"]) - norm.denormalize("riverflow", flow["target"])
    ) / scale
    scored = (flow["mask"] & flow["predicted"])[..., None] & flow["valid"]
    torch.testing.assert_close(per["riverflow"], (error**2)[scored].mean())
    _, pooled = model.forward_loss(out, LossConfig(flow_units="physical", flow_std=0.6))
    assert not torch.isclose(per["riverflow"], pooled["riverflow"])  # the scale is per sample
    with pytest.raises(ValueError, match="catchment"):
        model.forward_loss(out, cfg)  # the samples' catchments are needed


@pytest.mark.parametrize("decoder", ["mae", "cross"])
def test_a_gated_mix_starts_as_the_plain_mix_and_learns_a_weight_per_position(
    small_mask_path, decoder
):
    """``gated_mix``: zero at first (the same predictions as one mix per group, from the
    same weights); once trained, each masked position's mix of the fills differs, and it
    still reads visible values only."""
    batch, geometry = make_batch(small_mask_path)
    plain = model_for(geometry, decoder).eval()
    gated = model_for(geometry, decoder, gated_mix=True).eval()
    missing = gated.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".gate." in key for key in missing)
    with torch.no_grad():
        before, out = plain(batch), gated(batch)
    for name in out:
        torch.testing.assert_close(out[name]["pred"], before[name]["pred"])
    gated.train()
    loss_of(gated, batch).backward()
    assert float(gated.decoder.hints.gate["image"].weight.grad.abs().sum()) > 0
    gated.eval()
    with torch.no_grad():
        for layer in gated.decoder.hints.gate.values():
            layer.weight.normal_(0, 0.5)
        out = gated(batch)
        changed = gated(with_masked_values_changed(batch))
    image = out["image"]
    masked = image["mask"] & image["predicted"]  # [B, L]
    # the mix is no longer one weighted sum of the fills: recover each position's weights
    # of interpolation against neighbours for precipitation, they must differ
    hint = gated.decoder.hints.fills(
        IMAGE_MODALITIES, *gated.forward_encoder(batch).parts["image"], days=T
    )
    p = geometry.patch_pixels
    mix, interp, near = image["mix"][..., :p], hint[:, :, 0, :p], hint[:, :, 1, :p]
    spread = (interp - near).abs().amax(-1) > 1e-3  # [B, L]
    rows = masked & spread
    weight = ((mix - near) * (interp - near)).sum(-1) / ((interp - near) ** 2).sum(-1)
    assert rows.sum() > 3 and float(weight[rows].std()) > 1e-2
    for name in out:
        assert torch.equal(out[name]["pred"], changed[name]["pred"])
