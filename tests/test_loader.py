"""The streaming loader: sources, samples per catchment, ranks x workers, resume, faults, HTTP.

One small dataset per module: 100 synthetic days, 3 catchments, window 20, stride 10, the
train split (60 days) in 5 windows over 3 uneven shards (2, 2, 1 windows); the same data in
one shard for the windows left over in training. Ranks and workers are simulated
in-process (``WindowDataset.rank_batches`` interleaves the workers' streams as the
DataLoader does); one test checks that real worker processes agree.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import io
import itertools
import json
import logging
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import config
from pipeline.catchment import expand
from pipeline.collate import expand_windows
from pipeline.files import encode_json
from pipeline.history import HISTORY_FEATURES, CatchmentHistory
from pipeline.loader import LoaderConfig, _worker_start, build_loader, resolve_rank
from pipeline.location import shard_label
from pipeline.manifest import Manifest
from pipeline.npy import decode_npy
from pipeline.plan import stream_plan
from pipeline.runoff import RunoffSequences
from pipeline.schema import SHARDS, STORE
from pipeline.shard import ShardError, read_shard
from pipeline.stages import window_pool
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig
from preprocessing.synth import generate

SPLITS = {
    "train": "2000-01-01:2000-02-29",  # 60 days: windows at days 0, 10, 20, 30, 40
    "val": "2000-03-01:2000-03-20",
    "test": "2000-03-21:2000-04-09",
}
TENSORS = ("precip", "soil", "temp", "evap", "riverflow", "static", "catchment_weight", "doy")
MASKS = ("precip_mask", "soil_mask", "temp_mask", "evap_mask", "riverflow_mask")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    generate(raw, start="2000-01-01", days=100, catchments=3, seed=1, progress=False)
    return raw


def preprocess(raw: Path, out: Path, samples_per_shard: int, **more) -> Path:
    settings = dict(window=20, stride=10, progress=False, out=out, **SPLITS, **more)
    settings["samples_per_shard"] = samples_per_shard
    run_job(config.load(PreprocessConfig, raw / "preprocess.toml", settings))
    return out


@pytest.fixture(scope="module")
def dataset(raw, tmp_path_factory) -> Path:
    """The train split's 5 windows in 3 shards of 2, 2 and 1."""
    return preprocess(raw, tmp_path_factory.mktemp("data") / "dataset", 2)


@pytest.fixture(scope="module")
def one_shard(raw, tmp_path_factory) -> Path:
    """The same data with the train split's 5 windows in one shard."""
    return preprocess(raw, tmp_path_factory.mktemp("one") / "dataset", 8)


def loader(dataset, **options):
    options.setdefault("num_workers", 0)
    options.setdefault("rank", 0)
    options.setdefault("world_size", 1)
    return build_loader(source=str(dataset), **options)


def keys(batches) -> list[list[str]]:
    return [list(b["sample_key"]) for b in batches]


def flat(batches) -> list[str]:
    return [k for b in batches for k in b["sample_key"]]


def by_key(batches, names=TENSORS) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for b in batches:
        for i, key in enumerate(b["sample_key"]):
            if not key.startswith("pad-"):
                out[key] = {n: b[n][i] for n in names}
    return out


def simulate(dataset, world, workers, epoch=0, **options) -> list[list[dict]]:
    """Every rank's batches of ``epoch``, each rank's workers simulated in-process."""
    out = []
    for rank in range(world):
        ld = loader(dataset, rank=rank, world_size=world, num_workers=0, **options)
        out.append(list(ld.dataset.rank_batches(epoch, workers=workers)))
    return out


def all_samples(dataset, split="train") -> set[str]:
    m = Manifest.read(dataset)
    return {f"{s:%Y%m%d}-{g}" for s in m.splits[split].window_starts for g in m.catchments.ids}


# ----------------------------------------------------------------- sources and samples
def test_zarr_and_shards_give_bit_identical_samples(dataset):
    m = Manifest.read(dataset)
    runs = {
        reader: list(loader(dataset, reader=reader, mode="val", batch_size=4))
        for reader in ("shards", "zarr")
    }
    a, b = by_key(runs["shards"], (*TENSORS, "precip_valid")), by_key(runs["zarr"])
    assert set(a) == set(b) == all_samples(dataset)
    for key in a:
        for name in TENSORS:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    # and both equal the plain reader's windows, expanded (physical units, NaN -> 0 + valid)
    table = m.catchment_table()
    window = next(read_shard(dataset / SHARDS / "train-000000.tar"))
    sample = expand(window, table)[2]
    got = a[sample["sample_key"]]
    ref = torch.from_numpy(sample["precip"]).reshape(20, 94, 100)
    assert torch.equal(got["precip"][got["precip_valid"]], ref[got["precip_valid"]])
    assert torch.equal(torch.isfinite(ref) & got["precip_valid"], got["precip_valid"])
    assert got["precip"].shape == (20, 94, 100)
    # Zarr windows at any stride: stride 5 cuts 9 windows, those at the manifest's starts agree
    ld = loader(dataset, reader="zarr", mode="val", batch_size=3, stride=5)
    c = by_key(list(ld))
    assert len(c) == 9 * 3 and set(a) < set(c)
    for key in a:
        assert torch.equal(a[key]["temp"], c[key]["temp"])


def test_batches_follow_the_schema(dataset):
    ld = loader(dataset, batch_size=4)
    batch = next(iter(ld))
    assert batch["precip"].shape == (4, 20, 94, 100) and batch["precip"].dtype == torch.float32
    assert batch["precip_mask"].shape == (4, 20, 522)
    assert (batch["precip_mask"].sum(-1) == 70).all() and (batch["evap_mask"].sum(-1) == 15).all()
    assert batch["evap"].shape == (4, 20) and batch["static"].shape == (4, 3)
    assert batch["catchment_weight"].shape == (4, 94) and batch["doy"].dtype == torch.int16
    assert batch["weight"].tolist() == [1.0] * 4 and len(batch["sample_key"]) == 4
    assert batch["valid_patch_indices"].tolist() == list(Manifest.read(dataset).valid_patch_indices)


def test_k_random_catchments_per_window(dataset):
    starts = {k.split("-")[0] for k in all_samples(dataset)}
    picks = {}
    for reader in ("shards", "zarr"):
        for epoch in (0, 1):
            ld = loader(dataset, reader=reader, catchments_per_window=2, batch_size=2)
            ld.set_epoch(epoch)
            got = Counter(k.split("-")[0] for k in flat(ld))
            assert set(got) <= starts and all(n == 2 for n in got.values())  # K = 2 each
            assert sum(got.values()) == 5 * 2
            picks[reader, epoch] = sorted(flat(ld))
    assert picks["shards", 0] == picks["zarr", 0]  # keyed by (seed, epoch, window)
    assert picks["shards", 0] != picks["shards", 1]  # and drawn again each epoch


def test_a_batch_mixes_windows(dataset):
    for reader in ("shards", "zarr"):
        batches = list(loader(dataset, reader=reader, batch_size=4, shuffle_windows=4))
        mixed = [len({k.split("-")[0] for k in b}) > 1 for b in keys(batches)]
        assert sum(mixed) >= len(mixed) - 1 and len(mixed) == 3, reader


# ----------------------------------------------------------------- ranks x workers
@pytest.mark.parametrize("reader", ["shards", "zarr"])
def test_training_gives_every_rank_the_same_batches(dataset, reader):
    for epoch in (0, 1):
        ranks = simulate(dataset, 2, 2, epoch, reader=reader, batch_size=2)
        counts = [len(r) for r in ranks]
        assert counts[0] == counts[1] > 0  # no DDP hang on the uneven shards (2, 2, 1)
        seen = flat(ranks[0]) + flat(ranks[1])
        assert len(seen) == len(set(seen))  # disjoint shares
        assert set(seen) <= all_samples(dataset)
        assert all(w == 1.0 for r in ranks for b in r for w in b["weight"].tolist())
    ld = loader(dataset, reader=reader, batch_size=2, rank=1, world_size=2, num_workers=2)
    assert len(ld) == counts[1]  # len() tells the trainer the count in advance


@pytest.mark.parametrize(("reader", "world", "workers"), [("shards", 2, 2), ("zarr", 2, 2),
                                                          ("shards", 3, 1)])  # fmt: skip
def test_evaluation_gives_every_sample_exactly_once_padded(dataset, reader, world, workers):
    ranks = simulate(dataset, world, workers, reader=reader, mode="eval", batch_size=2)
    assert len({len(r) for r in ranks}) == 1  # ranks stay equal
    real, pads = [], 0
    for rank in ranks:
        for b in rank:
            for key, weight, c in zip(
                b["sample_key"], b["weight"].tolist(), b["catchment_index"].tolist(), strict=True
            ):
                if weight == 0.0:
                    pads += 1
                    assert c == -1 and key.startswith("pad-")
                else:
                    assert weight == 1.0
                    real.append(key)
            assert not b["precip_valid"][b["weight"] == 0].any()  # padding holds nothing valid
    assert sorted(real) == sorted(all_samples(dataset))  # every sample exactly once
    assert pads == sum(len(r) for r in ranks) * 2 - 15 > 0


def test_shuffling_changes_each_epoch_and_is_reproducible(dataset):
    for reader in ("shards", "zarr"):
        a0 = simulate(dataset, 1, 2, 0, reader=reader, batch_size=3)[0]
        a1 = simulate(dataset, 1, 2, 1, reader=reader, batch_size=3)[0]
        b0 = simulate(dataset, 1, 2, 0, reader=reader, batch_size=3)[0]
        assert keys(a0) != keys(a1), reader
        assert keys(a0) == keys(b0), reader  # streaming: reproducible for fixed ranks x workers
        for x, y in zip(a0, b0, strict=True):
            for name in (*TENSORS, *MASKS):
                assert torch.equal(x[name], y[name])


def test_zarr_order_is_independent_of_the_workers(dataset):
    runs = [
        simulate(dataset, 1, w, 3, reader="zarr", batch_size=2, shuffle_windows=2)[0]
        for w in (1, 2, 3)
    ]
    assert keys(runs[0]) == keys(runs[1]) == keys(runs[2])
    for name in MASKS:
        assert all(torch.equal(x[name], y[name]) for x, y in zip(runs[0], runs[2], strict=True))


def windows_of(batches) -> set[str]:
    return {k.split("-")[0] for k in flat(batches) if not k.startswith("pad-")}


def test_left_over_windows_rotate_so_every_window_is_read(one_shard):
    """One shard of 5 windows, 2 slots of 2 windows: 1 left over, a different one each
    epoch, never the same two epochs running; ranks stay equal."""
    starts = {k.split("-")[0] for k in all_samples(one_shard)}
    assert len(Manifest.read(one_shard).split_shards("train")) == 1 and len(starts) == 5
    left, seen = [], set()
    for epoch in range(4):
        (batches,) = simulate(one_shard, 1, 2, epoch, batch_size=3)
        assert len(batches) == 4 and all(w == 1.0 for b in batches for w in b["weight"].tolist())
        read = windows_of(batches)
        assert len(read) == 4 and len(flat(batches)) == 12  # 4 windows x 3 catchments, once
        left += sorted(starts - read)
        seen |= read
        if epoch == 1:
            assert seen == starts  # every window within two epochs
        ranks = simulate(one_shard, 2, 1, epoch, batch_size=3)  # 2 ranks x 1 worker
        assert len(ranks[0]) == len(ranks[1]) == 2
        assert not windows_of(ranks[0]) & windows_of(ranks[1])
    assert all(a != b for a, b in itertools.pairwise(left))  # 4 epochs, 4 different ones
    assert len(set(left)) == 4


def test_the_streaming_plan_covers_each_window_once_and_rotates_the_rest():
    """The plan alone, for several shard layouts and slot counts: a pure function; the
    slots' pieces are disjoint and equal in size and leave out ``total % slots`` windows;
    in one shard, never the same window two epochs running."""
    for counts in ([5], [2, 2, 1], [3, 1, 4, 1, 5], [7]):
        every = {(s, i) for s, n in enumerate(counts) for i in range(n)}
        for world, workers in ((1, 2), (2, 1), (1, 3), (2, 2), (3, 1)):
            size = sum(counts) // (world * workers)
            left = []
            for epoch in range(3):
                read = []
                for rank, worker in itertools.product(range(world), range(workers)):
                    kw = dict(seed=5, epoch=epoch, rank=rank, world=world, worker=worker,
                              workers=workers, per_window=3, batch_size=2)  # fmt: skip
                    plan = stream_plan(counts, train=True, **kw)
                    assert plan == stream_plan(counts, train=True, **kw)
                    assert plan.windows == sum(n for _, _, n in plan.pieces) == size
                    assert plan.batches == size * 3 // 2
                    assert all(f >= 0 and f + n <= counts[s] for s, f, n in plan.pieces)
                    read += [(s, f + i) for s, f, n in plan.pieces for i in range(n)]
                assert len(read) == len(set(read)) == size * world * workers
                left.append(every - set(read))
            if len(counts) == 1:
                assert all(not (a & b) for a, b in itertools.pairwise(left)), (counts, left)


def test_masks_are_keyed_by_sample_not_by_worker(dataset):
    one = by_key(simulate(dataset, 1, 1, 2, batch_size=2)[0], MASKS)
    two = by_key(simulate(dataset, 1, 2, 2, batch_size=2)[0], MASKS)
    common = set(one) & set(two)
    assert len(common) >= 6
    for key in common:
        for name in MASKS:
            assert torch.equal(one[key][name], two[key][name])
    three = by_key(simulate(dataset, 1, 1, 3, batch_size=2)[0], MASKS)  # another epoch
    key = next(iter(set(one) & set(three)))
    assert not torch.equal(one[key]["precip_mask"], three[key]["precip_mask"])


# ----------------------------------------------------------------- resume
@pytest.mark.parametrize("reader", ["shards", "zarr"])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(dataset, reader):
    opts = dict(reader=reader, batch_size=2, shuffle_windows=2)
    full = loader(dataset, **opts)
    full.set_epoch(4)
    expected = list(full)
    assert len(expected) == len(full) == 7

    first = loader(dataset, **opts)
    first.set_epoch(4)
    it = iter(first)
    got = [next(it) for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 4, "batches": 3}

    resumed = loader(dataset, **opts)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert keys(got + rest) == keys(expected)
    for x, y in zip(rest, expected[3:], strict=True):
        for name in (*TENSORS, *MASKS):
            assert torch.equal(x[name], y[name])
    assert resumed.state_dict() == {"epoch": 5, "batches": 0}


def test_real_workers_match_the_simulation_resume_and_reshuffle(dataset):
    """Worker processes (forkserver): the plan, per-epoch shuffling, resume."""
    opts = dict(batch_size=1, shuffle_windows=2, prefetch_factor=2)
    sim = {e: simulate(dataset, 2, 2, e, **opts)[1] for e in (0, 1)}
    ld = loader(dataset, rank=1, world_size=2, num_workers=2, **opts)  # persistent workers
    epochs = {}
    for epoch in (0, 1):
        ld.set_epoch(epoch)
        epochs[epoch] = list(ld)
        assert keys(epochs[epoch]) == keys(sim[epoch])
    assert keys(epochs[0]) != keys(epochs[1])
    for x, y in zip(epochs[1], sim[1], strict=True):
        for name in (*TENSORS, *MASKS):
            assert torch.equal(x[name], y[name])

    # stop after one batch while the workers have prefetched more; resume in fresh workers
    ld.set_epoch(1)
    it = iter(ld)
    taken = [next(it) for _ in range(3)]
    state = ld.state_dict()
    assert state == {"epoch": 1, "batches": 3} and keys(taken) == keys(sim[1])[:3]
    again = loader(dataset, rank=1, world_size=2, num_workers=2, persistent_workers=False, **opts)
    again.load_state_dict(state)
    assert keys(list(again)) == keys(sim[1])[3:]
    again.set_epoch(0)  # non-persistent workers shuffle each epoch too
    assert keys(list(again)) == keys(sim[0])

    # batches dropped as they come: their buffers are recycled, each sent once
    ld.set_epoch(0)
    for x, y in zip(ld, sim[0], strict=True):
        assert x["sample_key"] == y["sample_key"]
        for name in (*TENSORS, *MASKS):
            assert torch.equal(x[name], y[name])
    assert 0 < len(ld._mapped) <= 2 * (opts["prefetch_factor"] + 4)


def test_batch_buffers_are_recycled_but_never_while_held(dataset):
    ld = loader(dataset, batch_size=2)
    expected = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for b in ld]
    held = []
    for i, batch in enumerate(ld):  # keep batches 0 and 3, drop the others at once
        if i in (0, 3):
            held.append(batch)
    del batch
    for got, want in zip(held, [expected[0], expected[3]], strict=True):
        for name in (*TENSORS, *MASKS, "precip_valid"):
            assert torch.equal(got[name], want[name]), name
    pool = ld.dataset._pool
    assert sum(s is not None for s in pool.storages) <= 4  # 7 batches, few buffers


FREE_AND_REUSE = """
import resource, sys
import numpy as np
from pipeline.heap import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def rounds(n):  # 16 windows' worth of 3.6 MB arrays, written, then all freed
    for _ in range(n):
        arrays = [np.ones(900_000, np.float32) for _ in range(16)]
        del arrays
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
def test_workers_keep_freed_memory_so_new_windows_do_not_fault(dataset):
    """Freed window-sized blocks are reused, not faulted in again from the kernel."""

    def faults(mode: str) -> tuple[str, int]:
        run = subprocess.run(
            [sys.executable, "-c", FREE_AND_REUSE, mode], capture_output=True, text=True, check=True
        )
        applied, count = run.stdout.split()
        return applied, int(count)

    (_, plain), (applied, kept) = faults("plain"), faults("keep")
    assert applied == "True"
    assert plain > 50_000 and kept < plain / 100  # 10 rounds x 58 MB: 140,000 faults, or 0
    assert loader(dataset, num_workers=1, batch_size=2).worker_init_fn is _worker_start


# ----------------------------------------------------------------- faults
@pytest.fixture
def broken(dataset, tmp_path) -> Path:
    """A copy of the dataset whose shards can be damaged."""
    copy = tmp_path / "broken"
    shutil.copytree(dataset, copy)
    return copy


def tar_offsets(path: Path) -> list[tuple[str, int]]:
    with tarfile.open(path) as tar:
        return [(m.name, m.offset) for m in tar.getmembers()]


def test_corrupt_and_truncated_shards_are_reported_skipped_and_counted(broken, caplog):
    shards = broken / SHARDS
    # a damaged header in the middle of train-000000 (tarfile would stop there silently)
    _, offset = tar_offsets(shards / "train-000000.tar")[8]  # second window's 3rd member
    data = bytearray((shards / "train-000000.tar").read_bytes())
    data[offset + 100 : offset + 140] = b"\xff" * 40
    (shards / "train-000000.tar").write_bytes(bytes(data))
    # train-000001 cut in the middle of its second window
    data = (shards / "train-000001.tar").read_bytes()
    (shards / "train-000001.tar").write_bytes(data[: len(data) * 3 // 4])
    caplog.set_level(logging.WARNING, logger="pipeline.loader")
    ld = loader(broken, mode="eval", batch_size=2)
    batches = list(ld)
    assert len(batches) == len(ld) == 8  # the plan's count, whatever was lost
    assert sorted(ld.stats.corrupt_shards) == ["train-000000.tar", "train-000001.tar"]
    real = [k for b in batches for k, w in zip(b["sample_key"], b["weight"], strict=True) if w]
    starts = sorted({k.split("-")[0] for k in real})
    assert starts == ["20000101", "20000121", "20000210"]  # the windows before the damage
    assert ld.stats.padded_samples == 16 - 9
    assert "train-000000.tar" in caplog.text and "train-000001.tar" in caplog.text
    assert "corrupt" in caplog.text


def test_a_window_with_a_missing_member_is_reported_not_split(broken, caplog):
    path = broken / SHARDS / "train-000000.tar"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name != "20000111.riverflow.npy":
                tar.addfile(member, io.BytesIO(data))
    caplog.set_level(logging.WARNING, logger="pipeline.loader")
    ld = loader(broken, mode="val", batch_size=3)
    real = {k for b in ld for k, w in zip(b["sample_key"], b["weight"], strict=True) if w}
    assert real == {k for k in all_samples(broken) if not k.startswith("20000111")}
    assert ld.stats.bad_windows == 1 and ld.stats.corrupt_shards == []
    assert "train-000000.tar" in caplog.text and "riverflow.npy" in caplog.text


def window_starts(batches) -> list[str]:
    """The windows whose real samples arrived, sorted."""
    real = [k for b in batches for k, w in zip(b["sample_key"], b["weight"], strict=True) if w]
    return sorted({k.split("-")[0] for k in real})


def test_a_member_that_fails_its_checksum_drops_its_window(broken, caplog):
    """64 bytes overwritten inside a member's data (size and headers intact): the window
    is reported by shard, window and member, counted, dropped and padded."""
    path = broken / SHARDS / "train-000000.tar"
    with tarfile.open(path) as tar:
        member = tar.getmember("20000111.soil.npy")
        clean = decode_npy(tar.extractfile(member).read())
    data = bytearray(path.read_bytes())
    data[member.offset_data + 1000 : member.offset_data + 1064] = b"\x7f" * 64
    path.write_bytes(bytes(data))
    with tarfile.open(path) as tar:  # still a well-formed tar, the member's values altered
        altered = decode_npy(tar.extractfile("20000111.soil.npy").read())
    assert altered.shape == clean.shape and not np.array_equal(altered, clean, equal_nan=True)

    caplog.set_level(logging.WARNING, logger="pipeline.loader")
    for workers in (0, 2):
        ld = loader(broken, mode="val", batch_size=3, num_workers=workers)
        batches = list(ld)
        assert len(batches) == len(ld) == {0: 5, 2: 6}[workers]
        assert window_starts(batches) == ["20000101", "20000121", "20000131", "20000210"]
        assert ld.stats.bad_window_keys == [("train-000000.tar", "20000111")]
        assert ld.stats.bad_windows == 1 and ld.stats.corrupt_shards == []
        assert ld.stats.padded_samples == len(ld) * 3 - 12
    assert "train-000000.tar" in caplog.text and "20000111" in caplog.text
    assert "soil.npy fails its crc32 check" in caplog.text

    got = []
    with pytest.raises(ShardError, match=r"train-000000\.tar.*20000111.*soil\.npy.*crc32"):
        for window in read_shard(path):
            got.append(window["__key__"])
    assert got == ["20000101"]  # the good window before it, then the error


def test_a_shard_without_checksums_is_refused(broken, caplog):
    """A shard written before the per-window checksums (dataset format 1) is refused by
    the strict reader and reported corrupt by the loader, saying why."""
    path = broken / SHARDS / "train-000001.tar"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name.endswith(".meta.json"):
                meta = json.loads(data)
                assert set(meta) == {"start", "split", "crc32"}
                del meta["crc32"]
                data = encode_json(meta)
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"train-000001\.tar.*'crc32'.*older format"):
        list(read_shard(path))
    caplog.set_level(logging.WARNING, logger="pipeline.loader")
    ld = loader(broken, mode="val", batch_size=3)
    assert window_starts(ld) == ["20000101", "20000111", "20000210"]
    assert ld.stats.corrupt_shards == ["train-000001.tar"] and ld.stats.bad_windows == 0
    assert "older format" in caplog.text


TRUNCATIONS = {  # where train-000000.tar (windows 20000101, 20000111) is cut: what is kept
    "inside the first window": ("20000101.soil.npy", "data", 100, []),
    "between the windows": ("20000111.precip.npy", "header", 0, ["20000101"]),
    "inside the second window's first header": ("20000111.precip.npy", "header", 100, ["20000101"]),
    "inside the second window's first member": ("20000111.precip.npy", "data", 100, ["20000101"]),
    "inside a later member": ("20000111.temp.npy", "data", 5000, ["20000101"]),
    "in the second window's last member": ("20000111.meta.json", "data", 10, ["20000101"]),
    "before the end blocks": ("20000111.meta.json", "end", 0, ["20000101", "20000111"]),
}


@pytest.mark.parametrize("where", list(TRUNCATIONS))
def test_a_truncated_shard_keeps_every_complete_window_before_the_damage(broken, where):
    name, part, extra, kept = TRUNCATIONS[where]
    path = broken / SHARDS / "train-000000.tar"
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
    cut = {
        "header": member.offset,
        "data": member.offset_data,
        "end": member.offset_data + -(-member.size // 512) * 512,
    }[part] + extra
    path.write_bytes(path.read_bytes()[:cut])

    got = []
    with pytest.raises(ShardError, match=r"train-000000\.tar.*truncated"):
        for window in read_shard(path):
            got.append(window["__key__"])
    assert got == kept  # yielded, then the error

    ld = loader(broken, mode="val", batch_size=3, shards=[str(path)])
    batches = list(ld)
    assert len(batches) == len(ld) == 2  # the plan's count, whatever was lost
    assert window_starts(batches) == kept
    assert ld.stats.corrupt_shards == ["train-000000.tar"] and ld.stats.bad_windows == 0
    assert ld.stats.padded_samples == 6 - 3 * len(kept)
    assert "truncated" in ld.stats.events[0].detail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_shard_is_retried_then_reported(dataset, caplog):
    port = free_port()  # nothing listens there
    caplog.set_level(logging.WARNING, logger="pipeline.loader")
    ld = loader(
        dataset,
        shards=[
            f"http://127.0.0.1:{port}/shards/train-000000.tar",
            str(dataset / SHARDS / "train-000001.tar"),
        ],
        mode="eval",
        batch_size=3,
        retries=2,
        retry_backoff=0.01,
    )
    batches = list(ld)
    assert len(batches) == len(ld) == 4
    assert ld.stats.retries == 2 and ld.stats.unreachable_shards == ["train-000000.tar"]
    assert ld.stats.padded_samples == 6
    assert {k.split("-")[0] for k in flat(batches) if not k.startswith("pad")} == {
        "20000121",
        "20000131",
    }
    assert f"127.0.0.1:{port}" in caplog.text and "unreachable" in caplog.text


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_shards_stream_over_http_like_the_local_path(dataset):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(dataset))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        remote = list(build_loader(source=url, num_workers=0, batch_size=4, world_size=1, rank=0))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    local = list(loader(dataset, batch_size=4))
    piped = list(
        loader(
            dataset,
            batch_size=4,
            shards=[f"pipe:cat {dataset / SHARDS}/train-{{000000..000002}}.tar"],
        )
    )
    assert keys(remote) == keys(local) == keys(piped) and len(local) == 3
    for x, y, z in zip(remote, local, piped, strict=True):
        for name in (*TENSORS, *MASKS):
            assert torch.equal(x[name], y[name]) and torch.equal(y[name], z[name])


def test_workers_take_the_environment_of_the_process_iterating_the_loader(dataset, monkeypatch):
    """Workers fork from the fork server, whose environment is the one it started with; a
    variable set since (credentials, an endpoint) must still reach them. Here it names
    where a ``pipe:`` command finds the shards: without it every shard is unreachable."""
    shards = ['pipe:cat "$HYDROMAE_TEST_SHARDS"/train-{000000..000002}.tar']
    local = list(loader(dataset, batch_size=4, num_workers=2))  # the fork server is up now
    monkeypatch.setenv("HYDROMAE_TEST_SHARDS", str(dataset / SHARDS))
    ld = loader(dataset, batch_size=4, num_workers=2, shards=shards)
    piped = list(ld)
    assert not ld.stats.unreachable_shards and keys(piped) == keys(local)
    for x, y in zip(piped, local, strict=True):
        assert all(torch.equal(x[name], y[name]) for name in TENSORS)


# ----------------------------------------------------------------- configuration
def test_config_from_toml_and_rank_from_torchrun_env(tmp_path, monkeypatch):
    path = tmp_path / "loader.toml"
    path.write_text('source = "data/x"\nreader = "zarr"\nbatch_size = 8\nshards = []\n')
    cfg = config.load(LoaderConfig, path)
    assert cfg.reader == "zarr" and cfg.batch_size == 8 and cfg.num_workers == 2
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank(None, None) == (3, 4)
    assert resolve_rank(0, 1) == (0, 1)
    with pytest.raises(ValueError, match="rank 4"):
        resolve_rank(4, 4)
    with pytest.raises(ValueError, match="mode"):
        build_loader(source="x", mode="nope")
    assert shard_label("pipe:curl -s http://h/a/train-000001.tar") == "train-000001.tar"


def test_s3_without_s3fs_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "hydromae\[s3\]"'):
        build_loader(source="s3://bucket/dataset", num_workers=0, rank=0, world_size=1)


def test_read_shard_is_the_strict_reader(broken):
    from pipeline.shard import ShardError

    path = broken / SHARDS / "train-000001.tar"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    with pytest.raises(ShardError, match=r"train-000001\.tar.*truncated"):
        list(read_shard(path))
    path = broken / SHARDS / "train-000000.tar"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name != "20000111.soil.npy":
                tar.addfile(member, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"train-000000\.tar.*20000111.*soil\.npy"):
        list(read_shard(path))


def test_shards_not_in_the_manifest_are_refused(dataset):
    with pytest.raises(ValueError, match="window count"):
        loader(dataset, shards=["/elsewhere/other-000000.tar"])
    with pytest.raises(ValueError, match="split 'val'"):
        loader(dataset, shards=[str(dataset / SHARDS / "val-000000.tar")])


def test_the_loaders_collate_equals_the_plain_collate(dataset):
    """Reused window images and packed batch buffers give the plain collate's output."""
    import numpy as np

    from pipeline.buffers import LEDGER_COLUMNS, BatchPool
    from pipeline.collate import MultiScaleMaskedCollate

    ld = loader(dataset, mode="eval", batch_size=4)
    ds = ld.dataset
    plain = MultiScaleMaskedCollate(
        seq_len=20,
        land_mask_path=dataset / "land_mask.pt",
        mode="eval",
        patch_indices=Manifest.read(dataset).valid_patch_indices,
    )
    table = Manifest.read(dataset).catchment_table()
    windows = list(read_shard(dataset / SHARDS / "train-000000.tar"))
    samples = [s | {"weight": 1.0} for w in windows for s in expand(w, table)]
    ledger = np.zeros((1, 4, LEDGER_COLUMNS), dtype=np.int64)
    pool = BatchPool(ledger[0], 0, shared=False)
    for batch in (samples[:4], samples[2:6], samples[::-1]):
        b = plain(batch)
        for a in (ds.collate(batch), pool.pack(ds.collate, batch).open(ledger)):
            assert list(a) == list(b)
            for name, value in a.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, b[name]), name
                else:
                    assert value == b[name]


@pytest.mark.parametrize("reader", ["shards", "zarr"])
def test_resume_with_workers_in_any_phase(dataset, reader):
    ld = loader(dataset, reader=reader, batch_size=1, num_workers=0)
    full = keys(ld.dataset.rank_batches(2, workers=3))
    for skip in (1, 2, 4, 5):
        assert keys(ld.dataset.rank_batches(2, workers=3, skip=skip)) == full[skip:]


def test_held_out_catchments_never_appear_in_a_training_batch(raw, tmp_path):
    data = preprocess(raw, tmp_path / "dataset", 2, holdout_catchments=["1"])
    manifest = Manifest.read(data)
    held = manifest.catchments.holdout
    assert len(held) == 1  # "1": one catchment drawn, the same on every rerun
    index = manifest.catchments.ids.index(held[0])
    for reader, k in (("shards", 0), ("zarr", 0), ("zarr", 1), ("shards", 1)):
        ld = loader(data, reader=reader, catchments_per_window=k, batch_size=2)
        for epoch in range(2):
            ld.set_epoch(epoch)
            seen = {int(c) for b in ld for c in b["catchment_index"][b["weight"] > 0]}
            assert seen and index not in seen, (reader, k, seen)
    evaluation = list(loader(data, mode="eval", split="test", batch_size=2))
    assert index in {int(c) for b in evaluation for c in b["catchment_index"]}


def test_rainfall_runoff_sequences_are_keyed_gauged_and_scored_in_the_training_period(
    raw, tmp_path
):
    """``pipeline.runoff``: the same key draws the same sequences; a held-out catchment is
    never drawn; each sequence is its catchment's weather and flow on its days (missing
    before the store), with flow a target only on its last days, all of them training days."""
    data = preprocess(raw, tmp_path / "dataset", 2, holdout_catchments=["1"])
    manifest = Manifest.read(data)
    history = CatchmentHistory.read(str(data / STORE), manifest, 15)
    sequences = RunoffSequences(history, manifest, length=25, target_days=10)
    a, again = sequences.draw(64, 0, 3, 0, 0), sequences.draw(64, 0, 3, 0, 0)
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not torch.equal(a["runoff_end"], sequences.draw(64, 0, 4, 0, 0)["runoff_end"])
    held = manifest.catchments.ids.index(manifest.catchments.holdout[0])
    assert held not in a["runoff_catchment"].tolist()
    assert len(set(a["runoff_catchment"].tolist())) == 2
    train = manifest.split("train")
    first = (train.start - history.first_day).days
    last = (train.end - history.first_day).days
    ends = a["runoff_end"].numpy()
    assert ends.max() <= last and (ends - 9).min() >= first and (ends < 24).any()
    for i, (c, end) in enumerate(zip(a["runoff_catchment"].tolist(), ends, strict=True)):
        rows = np.arange(end - 24, end + 1)
        inside = rows >= 0
        weather = np.full((25, 4), np.nan, np.float32)
        weather[inside] = history.series[rows[inside], c]
        np.testing.assert_array_equal(a["runoff_valid"][i].numpy(), np.isfinite(weather))
        np.testing.assert_array_equal(a["runoff"][i].numpy(), np.nan_to_num(weather))
        flow = np.full(25, np.nan, np.float32)
        flow[-10:] = history.flow[rows[-10:], c]
        np.testing.assert_array_equal(a["runoff_flow_valid"][i].numpy(), np.isfinite(flow))
        np.testing.assert_array_equal(a["runoff_flow"][i].numpy(), np.nan_to_num(flow))
    with pytest.raises(ValueError, match="holds no 61-day target"):
        RunoffSequences(history, manifest, length=70, target_days=61)
    # forcing: a keyed share of the same sequences without soil moisture, nothing else changed
    blind = sequences.draw(64, 0, 3, 0, 0, forcing=0.5)
    soil = HISTORY_FEATURES.index("soil")
    lost = ~blind["runoff_valid"][..., soil].any(1) & a["runoff_valid"][..., soil].any(1)  # [A]
    assert 10 < int(lost.sum()) < 54
    assert not blind["runoff"][lost][..., soil].any()
    kept = torch.ones(4, dtype=torch.bool)
    kept[soil] = False
    for k in a:
        if k in ("runoff", "runoff_valid"):
            assert torch.equal(blind[k][~lost], a[k][~lost]), k
            assert torch.equal(blind[k][..., kept], a[k][..., kept]), k
        else:
            assert torch.equal(blind[k], a[k]), k
    again = sequences.draw(64, 0, 3, 0, 0, forcing=0.5)
    assert all(torch.equal(blind[k], again[k]) for k in blind)


# ----------------------------------------------------------------- batches by window
@pytest.mark.parametrize("reader", ["shards", "zarr"])
def test_units_of_a_window_travel_together_compactly_and_resume_exactly(dataset, reader):
    """window_samples=3 (every catchment of a window in one unit), 2 units a batch: each
    batch carries at most 2 windows, compact (each window's grids once), and a resumed loader
    gives exactly the remaining batches."""
    opts = dict(reader=reader, batch_size=6, window_samples=3, layout="windows",
                shuffle_windows=2, strategies={"seed": 0.5, "withhold": 0.5})  # fmt: skip
    full = loader(dataset, **opts)
    full.set_epoch(1)
    expected = list(full)
    assert len(expected) == len(full) >= 2
    for batch in expected:
        windows = {k.split("-")[0] for k in batch["sample_key"]}
        assert batch["precip"].shape[0] == len(windows) <= 2
        for w in range(batch["precip"].shape[0]):  # a window's samples come in threes
            assert int((batch["window_index"] == w).sum()) % 3 == 0
    plain = loader(dataset, **{**opts, "layout": "samples"})
    plain.set_epoch(1)
    for small, big in zip(expected, plain, strict=True):
        assert small["sample_key"] == big["sample_key"]
        whole = expand_windows(small)
        for name in (*TENSORS, *MASKS, "precip_valid"):
            assert torch.equal(whole[name], big[name]), name
    resumed = loader(dataset, **opts)
    resumed.load_state_dict({"epoch": 1, "batches": 1})
    rest = list(resumed)
    assert keys(rest) == keys(expected[1:])
    for x, y in zip(rest, expected[1:], strict=True):
        assert torch.equal(x["precip"], y["precip"]) and torch.equal(
            x["precip_mask"], y["precip_mask"]
        )


def test_grids_may_travel_in_half_precision_in_the_windows_layout(dataset):
    """image_dtype='float16': the same batches as float32, the grids rounded to float16;
    refused in the samples layout (nothing there would make them float32 again)."""
    opts = dict(reader="zarr", batch_size=6, window_samples=3, layout="windows")
    full, half = loader(dataset, **opts), loader(dataset, **opts, image_dtype="float16")
    for a, b in zip(full, half, strict=True):
        assert a["sample_key"] == b["sample_key"]
        assert b["precip"].dtype == torch.float16
        assert torch.equal(b["precip"], a["precip"].half())
        assert torch.equal(b["precip_mask"], a["precip_mask"])
    with pytest.raises(ValueError, match="image_dtype 'float16' needs layout 'windows'"):
        loader(dataset, image_dtype="float16")


def test_the_window_pool_holds_few_windows_and_gives_every_unit_once():
    alive, most = set(), 0

    def windows():
        nonlocal most
        for w in range(40):
            alive.add(w)
            most = max(most, len(alive))
            yield [(w, u) for u in range(7)]

    seen = []
    for w, u in window_pool(windows(), 3, np.random.default_rng(0)):
        seen.append((w, u))
        if u == max(uu for ww, uu in seen if ww == w) and sum(ww == w for ww, _ in seen) == 7:
            alive.discard(w)  # the window's last unit is out: it may be freed
    assert sorted(seen) == [(w, u) for w in range(40) for u in range(7)]
    assert most <= 4  # 3 open, and the one arriving as another closes
    assert {w for w, _ in seen[:21]} != set(range(3))  # units of different windows interleave


def test_a_configuration_that_gives_no_batch_is_refused_with_its_numbers(dataset):
    with pytest.raises(ValueError, match=r"no training batch: 5 windows .* 3 samples a window"):
        loader(dataset, batch_size=64)
    with pytest.raises(ValueError, match="window_samples 4 must divide batch_size 6"):
        loader(dataset, batch_size=6, window_samples=4)
    ld = loader(dataset, batch_size=4, window_samples=2)
    assert ld.dataset.dropped_samples() == 5 * 3 - len(ld) * 4  # a unit's tail, a last batch


@pytest.mark.parametrize("reader", ["shards", "zarr"])
def test_samples_carry_their_catchments_weather_before_the_window(dataset, reader):
    import xarray as xr

    from pipeline.store import open_store

    m = Manifest.read(dataset)
    h = 25
    batches = list(loader(dataset, split="val", mode="eval", reader=reader, batch_size=4,
                          history_days=h))  # fmt: skip
    # the expected values, computed here with xarray from the store: the mean over the
    # catchment's own cells with data, each weighted by its share of the catchment's area
    store = open_store(dataset)
    valid = xr.DataArray(list(m.valid_patch_indices), dims="patch")
    p = m.grid.patch_size
    pixels = m.catchment_table().pixels
    weight = xr.DataArray(pixels.reshape(*pixels.shape[:2], p, p),
                          dims=("catchment", "patch", "py", "px"))  # fmt: skip
    first = m.period.start
    seen = 0
    for b in batches:
        assert b["history"].shape == (4, h, len(HISTORY_FEATURES))
        for i, key in enumerate(b["sample_key"]):
            if key.startswith("pad-"):
                assert not b["history_valid"][i].any()
                continue
            c = int(b["catchment_index"][i])
            t1 = (dt.date.fromisoformat(b["start"][i]) - first).days
            days = slice(t1 - h, t1)
            for f, name in enumerate(HISTORY_FEATURES):
                if name == "evap":
                    want = store["evap"].isel(time=days, catchment=c).values
                else:
                    cells = store[name].sel(patch=valid).isel(time=days)
                    w = weight.isel(catchment=c) * cells.notnull()
                    area = ("patch", "py", "px")
                    want = ((cells * w).sum(area) / w.sum(area)).values
                assert b["history_valid"][i, :, f].all()
                np.testing.assert_allclose(b["history"][i, :, f].numpy(), want, rtol=1e-5)
            # the gauge's riverflow on those days travels apart, a target only
            want = store["riverflow"].isel(time=days, catchment=c).values
            np.testing.assert_array_equal(b["history_flow_valid"][i].numpy(), np.isfinite(want))
            np.testing.assert_allclose(b["history_flow"][i].numpy(), np.nan_to_num(want), rtol=1e-6)
            seen += 1
    assert seen == m.splits["val"].samples
    # the first training window has no day before it: nothing valid, values zeroed
    first_batch = next(iter(loader(dataset, split="train", mode="eval", batch_size=3,
                                   history_days=h)))  # fmt: skip
    assert first_batch["start"][0] == SPLITS["train"][:10]
    assert not first_batch["history_valid"][0].any() and not first_batch["history"][0].any()
    assert not first_batch["history_flow_valid"][0].any()
