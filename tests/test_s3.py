"""Streaming from object storage, tested for real: an S3-compatible server on 127.0.0.1.

moto's server mode stands in for S3 (``moto[server]``, in the test extra; ``s3fs`` is the
``s3`` extra). A small dataset is uploaded to a bucket; the loader reads its manifest, land
mask and shards over ``s3://`` and must give the very batches it gives from the local
directory, in training and in evaluation, with worker processes. A bucket that is not
there is a fault the loader retries, reports, counts and pads, naming the shard.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

pytest.importorskip("moto")
pytest.importorskip("s3fs")

from pipeline import config
from pipeline.loader import build_loader
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig
from preprocessing.synth import generate

SPLITS = dict(train="2000-01-01:2000-02-29", val="2000-03-01:2000-03-20", test=None)
NAMES = ("precip", "riverflow", "precip_mask", "riverflow_mask", "weight")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    generate(raw, start="2000-01-01", days=100, catchments=2, seed=6, progress=False)
    out = tmp_path_factory.mktemp("data") / "dataset"
    settings = dict(window=20, stride=10, samples_per_shard=2, progress=False, out=out, **SPLITS)
    run_job(config.load(PreprocessConfig, raw / "preprocess.toml", settings))
    return out


@pytest.fixture(scope="module")
def bucket(dataset):
    """``s3://hydromae/dataset`` on a moto server at 127.0.0.1, holding ``dataset``."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "hydromae",
        "AWS_SECRET_ACCESS_KEY": "hydromae",
        "AWS_DEFAULT_REGION": "eu-west-2",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():  # the loader's workers inherit them
            patch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(
            Bucket="hydromae", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
        for path in sorted(dataset.rglob("*")):
            if path.is_file() and "store.zarr" not in path.parts:
                client.upload_file(str(path), "hydromae", f"dataset/{path.relative_to(dataset)}")
        yield "s3://hydromae/dataset"
    server.stop()


def batches(source: str, **options) -> list[dict]:
    options.setdefault("num_workers", 2)
    ld = build_loader(source=source, batch_size=2, rank=0, world_size=1, **options)
    ld.set_epoch(1)
    return list(ld)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_shards_over_s3_give_the_local_batches(dataset, bucket, mode):
    split = "train" if mode == "train" else "val"
    remote = batches(bucket, mode=mode, split=split, layout="windows", window_samples=2)
    local = batches(str(dataset), mode=mode, split=split, layout="windows", window_samples=2)
    assert len(remote) == len(local) > 0
    for a, b in zip(remote, local, strict=True):
        assert a["sample_key"] == b["sample_key"]
        for name in NAMES:
            assert torch.equal(a[name], b[name]), name


def test_a_missing_bucket_is_a_counted_fault(dataset, bucket):
    shards = ["s3://no-such-bucket/dataset/shards/train-{000000..000002}.tar"]
    ld = build_loader(
        source=str(dataset), shards=shards, batch_size=2, num_workers=0, retries=1,
        retry_backoff=0.01, rank=0, world_size=1,
    )  # fmt: skip
    got = list(ld)
    assert len(got) == len(ld) and not any(float(b["weight"].sum()) for b in got)
    assert ld.stats.unreachable_shards == [f"train-00000{i}.tar" for i in range(3)]
