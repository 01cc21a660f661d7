"""Faults tried on purpose (issue 13): what a careless user, a damaged disk or a planted file does, and what the study
does about it. Each test failed on the code before its fix."""
import os, re, shutil, time
from pathlib import Path
import pytest, torch

# data
from attnresnet.data import data_fingerprint, load_images, load_splits, make_standin_dataset


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    "A tiny stand-in image folder (3 classes, 4 + 2 images each) whose decoded cache goes to tmp_path/cache."
    monkeypatch.setenv("ATTNRESNET_CACHE", str(tmp_path / "cache"))
    return make_standin_dataset(tmp_path / "standin", per_class=4, test_per_class=2, classes=3)


def _caches(tmp_path) -> list:
    return sorted((tmp_path / "cache").glob("cache-*.pt"))


def test_moving_an_image_between_classes_changes_the_labels(tree, tmp_path):
    before = load_images(tree)
    (tree / "train" / "class0" / "0000.png").rename(tree / "train" / "class1" / "0000-moved.png")
    after = load_images(tree)
    assert torch.bincount(before.train_y).tolist() == [4, 4, 4]
    assert torch.bincount(after.train_y).tolist() == [3, 5, 4]  # not the old cache's labels
    assert after.fingerprint != before.fingerprint
    assert len(_caches(tmp_path)) == 1  # the cache of the old contents is gone


def test_truncated_cache_is_rebuilt_with_a_warning(tree, tmp_path):
    first = load_images(tree)
    cache, = _caches(tmp_path)
    cache.write_bytes(cache.read_bytes()[:cache.stat().st_size // 2])
    with pytest.warns(UserWarning, match=re.escape(str(cache)) + ".*rebuilding"):
        again = load_images(tree)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.train_y, first.train_y)
    assert torch.load(cache, weights_only=True)["fingerprint"] == first.fingerprint  # rewritten whole


def test_cache_with_wrong_contents_is_rebuilt(tree, tmp_path):
    first = load_images(tree)
    cache, = _caches(tmp_path)
    d = torch.load(cache, weights_only=True)
    torch.save({**d, "train_y": d["train_y"].roll(1)}, cache)  # readable, plausible, wrong
    with pytest.warns(UserWarning, match="labels that differ"):
        again = load_images(tree)
    assert torch.equal(again.train_y, first.train_y)


class _Payload:
    "Unpickling this creates the marker file: what a planted cache would do with full pickle loading."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, "w"))


def test_planted_pickle_payload_in_a_cache_does_not_run(tree, tmp_path):
    first = load_images(tree)
    cache, marker = _caches(tmp_path)[0], tmp_path / "payload-ran"
    torch.save({"train_x": _Payload(marker)}, cache)
    with pytest.warns(UserWarning, match=re.escape(str(cache)) + ".*cannot be read"):
        again = load_images(tree)
    assert not marker.exists()
    assert torch.equal(again.train_x, first.train_x)  # rebuilt from the images
    torch.save({"train_x": _Payload(marker)}, cache)  # the payload is real: a full unpickle runs it
    torch.load(cache, weights_only=False)
    assert marker.exists()


def test_ipynb_checkpoints_is_not_a_class(tree):
    for split in ("train", "test"):
        hidden = tree / split / ".ipynb_checkpoints"; hidden.mkdir()
        shutil.copy(tree / split / "class0" / "0000.png", hidden / "0000.png")
    (tree / "train" / "class1" / "._0000.png").write_bytes(b"macOS metadata, not an image")
    s = load_images(tree)
    assert s.classes == ["class0", "class1", "class2"]
    assert torch.bincount(s.train_y).tolist() == [4, 4, 4]


def test_single_class_folder_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNRESNET_CACHE", str(tmp_path / "cache"))
    root = make_standin_dataset(tmp_path / "one", per_class=3, test_per_class=1, classes=1)
    with pytest.raises(ValueError, match="at least two class folders") as e:
        load_images(root)
    assert str(root) in str(e.value) and "train/<class>/" in str(e.value)  # the folder, and what to do
    assert not _caches(tmp_path)


def test_train_and_test_with_different_classes_say_which(tree):
    (tree / "test" / "class2").rename(tree / "test" / "class9")
    with pytest.raises(ValueError, match=re.escape("only in train/: ['class2'], only in test/: ['class9']")):
        load_images(tree)


def test_empty_class_folder_is_named_with_the_fix(tree):
    for f in (tree / "test" / "class1").iterdir(): f.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tree / "test" / "class1")) + ".*remove the class folder"):
        load_images(tree)


def test_leftover_temporary_files_are_cleaned_up(tree, tmp_path):
    (tmp_path / "cache").mkdir()
    old, new = tmp_path / "cache" / "cache-standin.pt1.tmp", tmp_path / "cache" / "cache-standin.pt2.tmp"
    old.write_bytes(b"half a cache"); new.write_bytes(b"maybe being written now")
    os.utime(old, (time.time() - 3600,) * 2)
    load_images(tree)
    assert not old.exists() and new.exists()


def test_unwritable_cache_warns_and_continues(tree, tmp_path):
    blocker = tmp_path / "a-file"; blocker.write_text("")
    with pytest.warns(UserWarning, match="could not write cache file.*ATTNRESNET_CACHE"):
        s = load_images(tree, cache_dir=blocker)
    assert len(s.train_y) == 12


def test_splits_carry_the_data_fingerprint(tree):
    fp = load_splits(tree, val_fraction=0.25).fingerprint
    assert fp == data_fingerprint(tree) and "3 classes, 12 train + 6 test images" in fp
    shutil.copy(tree / "test" / "class2" / "0000.png", tree / "test" / "class2" / "extra.png")
    assert load_splits(tree, val_fraction=0.25).fingerprint != fp


def test_torchvision_source_has_a_checked_fingerprint(tmp_path, monkeypatch):
    import numpy as np, torchvision.datasets
    class FakeCIFAR10:  # torchvision's CIFAR-10 without the download: same attributes, six training and two test images
        classes = ["cat", "dog"]
        def __init__(self, root, train, download):
            n = 6 if train else 2
            self.data = np.random.default_rng(int(train)).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 2 for i in range(n)]
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    first = load_images("cifar10", cache_dir=tmp_path / "cache")
    assert "2 classes, 6 train + 2 test images" in first.fingerprint
    cache, = _caches(tmp_path)
    d = torch.load(cache, weights_only=True); d["train_x"][0, 0, 0, 0] ^= 1
    torch.save(d, cache)  # one bit of one pixel changed on disk
    with pytest.warns(UserWarning, match=re.escape(str(cache)) + ".*made from other data"):
        again = load_images("cifar10", cache_dir=tmp_path / "cache")
    assert torch.equal(again.train_x, first.train_x)
    assert load_splits("cifar10", val_fraction=0.5, cache_dir=tmp_path / "cache").fingerprint == first.fingerprint
