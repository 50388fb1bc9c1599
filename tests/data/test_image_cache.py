"""The image decode cache: the stored squares, their order, the cache hit, the lock, failures that leave nothing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grouprobust.data import disk_cache, image_cache
from grouprobust.data.image_cache import cache_root, cached_images, decode_workers, files_key, stored_size
from grouprobust.errors import GroupRobustError


def write_images(folder: Path, sizes=((40, 30), (30, 50), (37, 37), (64, 48)), fmt="png") -> list[str]:
    """Smooth colour ramps of (width, height) in ``sizes``, each its own; file names in an order unlike the list's."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{'zyxw'[i % 4]}{i}.{fmt}"
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (w + h) + 40 * i], -1)
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def expected_square(path: str, side: int) -> np.ndarray:
    """Resize the shorter side to ``side`` then crop the centre square, the textbook way."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    scale = side / min(w, h)
    resized = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
    left, top = (resized.width - side) // 2, (resized.height - side) // 2
    return np.asarray(resized.crop((left, top, left + side, top + side))).transpose(2, 0, 1)


def test_stored_size_is_the_eval_crops_inverse():
    assert stored_size(224) == 256 and stored_size(32) == 37
    with pytest.raises(GroupRobustError, match="image_size"):
        stored_size(0)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GROUPROBUST_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "grouprobust"
    monkeypatch.setenv("GROUPROBUST_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("GROUPROBUST_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "grouprobust"


def test_rows_are_the_centre_squares_in_the_given_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPROBUST_CACHE", str(tmp_path / "cache"))
    paths = write_images(tmp_path / "files")
    calls = []
    array = cached_images(paths, 8, key=files_key(paths), progress=lambda d, t: calls.append((d, t)), workers=0)
    side = stored_size(8)
    assert isinstance(array, np.memmap) and array.dtype == np.uint8 and array.shape == (4, 3, side, side)
    assert not array.flags.writeable
    expected = np.stack([expected_square(path, side) for path in paths]).astype(int)
    distance = np.abs(array[:, None].astype(int) - expected[None]).mean(axis=(2, 3, 4))  # row x image
    assert np.all(np.diag(distance) < 8)  # the same square (up to where the crop's half pixel falls) ...
    assert np.all(np.argmin(distance, axis=1) == np.arange(4))  # ... of the file in that position
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    entries = [p for p in (tmp_path / "cache" / "images").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["images.npy", "meta.json"]
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["count"] == 4 and meta["side"] == side and meta["key"] == files_key(paths)


def test_a_second_call_reads_the_cache_and_other_inputs_get_other_entries(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "files")
    key = files_key(paths)
    first = cached_images(paths, 8, key=key, root=tmp_path)
    built = []
    monkeypatch.setattr(image_cache, "_build", lambda *a: built.append(a))
    again = cached_images(paths, 8, key=key, root=tmp_path, progress=lambda d, t: built.append(d))
    assert built == [] and np.array_equal(again, first)
    monkeypatch.undo()
    for args in ((paths[::-1], 8, key), (paths, 16, key), (paths, 8, "sha256:other")):
        cached_images(args[0], args[1], key=args[2], root=tmp_path)
    assert len([p for p in (tmp_path / "images").iterdir() if not p.name.startswith(".")]) == 4


def test_jpeg_drafts_still_give_the_stored_side(tmp_path):
    # a 400x300 JPEG decoded at 1/8 scale is 50x38, still above the stored 37
    paths = write_images(tmp_path / "files", sizes=((400, 300),), fmt="jpg")
    array = cached_images(paths, 32, key=files_key(paths), root=tmp_path)
    whole = expected_square(paths[0], 37).astype(int)
    assert array.shape == (1, 3, 37, 37)
    assert np.abs(array[0].astype(int) - whole).mean() < 4  # the same picture, decoded at a lower scale


def test_files_key_changes_with_content_and_names_an_unreadable_file(tmp_path):
    paths = write_images(tmp_path / "files")
    key = files_key(paths)
    assert key.startswith("sha256:") and files_key(paths) == key and files_key(paths[::-1]) != key
    Path(paths[0]).write_bytes(Path(paths[0]).read_bytes() + b"\0")
    assert files_key(paths) != key
    with pytest.raises(GroupRobustError, match="missing.png"):
        files_key(paths + [str(tmp_path / "files" / "missing.png")])


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_one_line_and_leaves_no_entry(tmp_path, workers):
    paths = write_images(tmp_path / "files")
    Path(paths[2]).write_bytes(b"not an image")
    with pytest.raises(GroupRobustError, match=f"{Path(paths[2]).name}: cannot be read as an image") as err:
        cached_images(paths, 8, key="k", root=tmp_path, workers=workers)
    assert "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "images").iterdir() if not p.name.endswith(".lock")] == []


def test_too_little_disk_space_is_refused_before_writing(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "files")

    class Usage:
        free = 1000

    monkeypatch.setattr(disk_cache.shutil, "disk_usage", lambda folder: Usage())
    with pytest.raises(GroupRobustError, match=r"cache folder .*images has 0 MiB free"):
        cached_images(paths, 8, key="k", root=tmp_path)
    assert [p for p in (tmp_path / "images").iterdir() if not p.name.endswith(".lock")] == []


def test_a_crashed_build_leaves_nothing_that_looks_complete(tmp_path):
    paths = write_images(tmp_path / "files")

    def crash(done, total):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_images(paths, 8, key="k", root=tmp_path, progress=crash)
    assert [p for p in (tmp_path / "images").iterdir() if not p.name.endswith(".lock")] == []
    stale = tmp_path / "images" / f".{disk_cache.entry_name('images', image_cache.FORMAT, 'k', 9, paths)}.abc.tmp"
    stale.mkdir()  # what a killed process leaves: removed by the next build of that entry
    assert cached_images(paths, 8, key="k", root=tmp_path).shape == (4, 3, 9, 9)
    assert not stale.exists()


def test_concurrent_builds_of_one_entry_build_it_once(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "files")
    builds = []
    real_build = image_cache._build

    def slow_build(*args):
        builds.append(1)
        threading.Event().wait(0.2)  # the second caller arrives while the first builds
        real_build(*args)

    monkeypatch.setattr(image_cache, "_build", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cached_images(paths, 8, key="k", root=tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 2 and np.array_equal(results[0], results[1])


def test_decode_workers():
    assert [decode_workers(None, usable, busy=0) for usable in (1, 2, 4, 16)] == [0, 2, 4, 8]
    assert decode_workers(None, 2, busy=1) == 0  # one idle CPU: decoding in this process is as fast
    assert decode_workers(0, 16, busy=0) == 0 and decode_workers(3, 1, busy=0) == 3
    with pytest.raises(GroupRobustError, match="workers"):
        decode_workers(-1)


def test_an_unwritable_cache_root_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(GroupRobustError, match="cache folder"):
        cached_images(write_images(tmp_path / "files"), 8, key="k", root=tmp_path / "file")


def test_the_cached_square_through_the_eval_crop_is_the_feature_pass_preprocessing(tmp_path):
    # stored at 256 and centre-cropped to 224 on the device == Resize(256) + CenterCrop(224) on the file
    from grouprobust.backbones.image_input import ImageInput
    from grouprobust.data.backbone_modules import IMAGENET_MEAN, IMAGENET_STD, image_transform
    from grouprobust.data.image_loader import load_image
    import torch

    paths = write_images(tmp_path / "files", sizes=((300, 260), (256, 320)))
    stored = cached_images(paths, 224, key=files_key(paths), root=tmp_path)
    on_device = ImageInput(224, IMAGENET_MEAN, IMAGENET_STD, augment=True).eval()(torch.from_numpy(np.array(stored)))
    classic = torch.stack([image_transform(224)(load_image(p)) for p in paths])
    # within a pixel's shift of a smooth ramp (the two round the crop's centre differently), in std units
    assert float((on_device - classic).abs().mean()) < 0.02  # (a corner crop instead: 0.16)
