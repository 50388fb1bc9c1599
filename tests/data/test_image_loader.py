"""Image files through one DataLoader (`grouprobust.data.image_loader`, `Encoder.stream`): the same features as
the serial path, in order, unreadable files still one line (also from a worker), ``--workers`` checked, and the
CUDA decisions (pinned memory, non-blocking copies) taken on a CPU-only machine."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grouprobust.data import image_loader
from grouprobust.data.backbone_modules import image_transform
from grouprobust.data.encoders import load_encoder
from grouprobust.data.extract import encode_inputs, extract_benchmark_features
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.data.image_loader import choose_workers, loader_options
from grouprobust.errors import GroupRobustError

from readers_fixtures import write_waterbirds
from cli_runner import cli

torch.set_num_threads(1)
BACKBONE = "backbone_fixtures:tiny_cnn"
# names whose sorted order is not the order given: a loader that reordered would be caught
NAMES = ["k_07.png", "a_31.png", "z_02.png", "m_19.png", "b_44.png", "q_01.png", "c_26.png"]


def write_images(folder: Path, names: list[str] = NAMES) -> list[str]:
    """Small PNGs of random pixels and differing sizes, one per name; returns their paths in ``names`` order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, name in enumerate(names):
        pixels = rng.integers(0, 256, size=(10 + 3 * i, 14 + i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        paths.append(str(folder / name))
    return paths


def serial_features(encoder, paths: list[str], batch_size: int) -> np.ndarray:
    """What extraction gave before the loader: ``encode`` on each chunk of paths, in this process."""
    return np.concatenate([encoder.encode(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)])


@pytest.fixture
def loaders_made(monkeypatch):
    """Counts the DataLoaders built (one per extraction, whatever the number of batches)."""
    made = []
    original = torch.utils.data.DataLoader

    def counting(*args, **kwargs):
        made.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", counting)
    return made


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_gives_the_serial_features_in_order(tmp_path, workers, loaders_made):
    paths = write_images(tmp_path / "imgs")
    encoder = load_encoder(BACKBONE, "image")
    calls = []
    got = encode_inputs(paths, encoder, batch_size=3, progress=lambda done, total: calls.append((done, total)),
                        workers=workers)
    np.testing.assert_array_equal(got, serial_features(encoder, paths, 3))
    assert got.shape == (len(NAMES), 6) and got.dtype == np.float32
    assert calls == [(3, 7), (6, 7), (7, 7)]  # progress per batch, the last one short
    assert len(loaders_made) == 1 and loaders_made[0]["num_workers"] == workers
    assert loaders_made[0]["pin_memory"] is False  # a CPU device: nothing pinned
    # the encoder without a stream (the chunk loop) agrees as well
    np.testing.assert_array_equal(encode_inputs(paths, replace(encoder, stream=None), batch_size=3), got)


def test_mixed_precision_still_wraps_the_model(tmp_path):
    paths = write_images(tmp_path / "imgs")
    encoder = load_encoder(BACKBONE, "image")
    cpu = torch.device("cpu")
    streamed = encode_inputs(paths, encoder, batch_size=4, amp_device=cpu, workers=0)
    chunked = encode_inputs(paths, replace(encoder, stream=None), batch_size=4, amp_device=cpu)
    np.testing.assert_allclose(streamed, chunked, rtol=1e-6, atol=1e-6)
    assert streamed.dtype == np.float32
    assert not np.array_equal(streamed, encode_inputs(paths, encoder, batch_size=4, workers=0))  # bfloat16 ran


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, workers):
    paths = write_images(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    encoder = load_encoder(BACKBONE, "image")
    with pytest.raises(GroupRobustError) as err:
        encode_inputs(paths[:4] + [str(bad)] + paths[4:], encoder, batch_size=2, workers=workers)
    assert str(err.value) == f"{bad}: cannot be read as an image; replace the file or fix the metadata"
    assert type(err.value) is GroupRobustError


def test_an_unreadable_file_from_a_worker_on_the_command_line(tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    bad = next(iter(sorted(root.glob("*/img_*.jpg"))))
    bad.write_bytes(b"not a jpeg")
    code, out, err = cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", BACKBONE,
                          "--out", str(tmp_path / "f"), "--workers", "1", "-q"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and "worker" not in err, err
    assert bad.name in err and "cannot be read as an image" in err


def test_workers_flag_gives_the_same_features_as_loading_in_process(tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb", per_group=2)
    for workers in ("0", "1"):
        code, _, err = cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", BACKBONE,
                            "--out", str(tmp_path / f"f{workers}"), "--workers", workers, "--batch-size", "3",
                            "-q"], capsys)
        assert code == 0, err
    for a, b in zip(load_feature_splits(tmp_path / "f0"), load_feature_splits(tmp_path / "f1")):
        np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize("value", ["-1", "-3"])
def test_bad_workers_flag_is_refused_in_one_line(tmp_path, capsys, value):
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    code, _, err = cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", BACKBONE,
                        "--out", str(tmp_path / "f"), "--workers", value], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "workers must be a non-negative integer" in err and "--workers" in err
    assert not (tmp_path / "f").exists()  # refused before any work


@pytest.mark.parametrize("workers", [-1, True, 1.5, "2"])
def test_bad_workers_argument_is_refused(tmp_path, workers):
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    with pytest.raises(GroupRobustError, match="workers must be a non-negative integer") as err:
        extract_benchmark_features("waterbirds", root, BACKBONE, tmp_path / "f", workers=workers)
    assert err.value.subject == "workers"
    with pytest.raises(GroupRobustError, match="workers must be a non-negative integer"):
        choose_workers(workers)


def test_workers_are_chosen_from_the_usable_cpus(monkeypatch):
    assert [choose_workers(None, usable) for usable in (1, 2, 4, 9, 64)] == [0, 1, 3, 8, 8]
    assert choose_workers(0, 64) == 0 and choose_workers(12, 1) == 12  # an explicit count wins
    monkeypatch.setattr(image_loader, "usable_cpus", lambda: 3)
    assert choose_workers() == 2
    assert choose_workers(device=torch.device("cuda")) == 2
    assert choose_workers(device=torch.device("cpu")) == 0  # the model on the CPU keeps the cores busy
    assert choose_workers(2, device=torch.device("cpu")) == 2


def test_loader_options_pin_and_copy_asynchronously_only_on_cuda():
    cuda = loader_options(torch.device("cuda", 0), 3)
    assert cuda == {"loader": {"num_workers": 3, "pin_memory": True}, "copy": {"non_blocking": True}}
    cpu = loader_options(torch.device("cpu"), 0)
    assert cpu == {"loader": {"num_workers": 0, "pin_memory": False}, "copy": {"non_blocking": False}}


@pytest.mark.parametrize("workers", [0, 1])
def test_the_cuda_path_runs_end_to_end_on_the_cpu(tmp_path, monkeypatch, workers):
    """The batches take CUDA's way (pinned loader, non-blocking copies) to the CPU device: same features."""
    paths = write_images(tmp_path / "imgs")
    encoder = load_encoder(BACKBONE, "image")
    taken, copies = [], []
    monkeypatch.setattr(image_loader, "loader_options",
                        lambda device, n: taken.append(device) or loader_options(torch.device("cuda"), n))
    original_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        copies.append(kwargs.get("non_blocking"))
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: pin_memory set but no accelerator here
        got = encode_inputs(paths, encoder, batch_size=3, workers=workers)
    monkeypatch.undo()
    np.testing.assert_array_equal(got, serial_features(encoder, paths, 3))
    assert taken == [torch.device("cpu")] and copies.count(True) == 3  # one non-blocking copy per batch


def test_the_default_preprocessing_pickles_for_spawned_workers(tmp_path):
    transform = image_transform(32)
    image = Image.open(write_images(tmp_path / "imgs", ["one.png"])[0]).convert("RGB")
    again = pickle.loads(pickle.dumps(transform))
    assert torch.equal(again(image), transform(image)) and transform(image).shape == (3, 32, 32)
