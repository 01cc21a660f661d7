"""Faults tried on purpose: what a careless user, a damaged disk or a planted file does, and what the study
does about it. Each test failed on the code before its fix."""
import os, re, shutil, time
from pathlib import Path
import pytest, torch

# data
from attnresnet.data import data_fingerprint, load_images, make_standin_dataset
from attnresnet.splits import load_splits


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


def test_cache_of_an_older_decoding_rule_is_rebuilt(tree, tmp_path):
    "A cache written before 16-bit images were scaled and animations cut to their first frame records no decoder: rebuilt."
    from attnresnet.data import DECODER
    first = load_images(tree)
    cache, = _caches(tmp_path)
    d = torch.load(cache, weights_only=True); del d["decoder"]
    torch.save(d, cache)
    with pytest.warns(UserWarning, match=re.escape(str(cache)) + " was decoded by an older rule.*rebuilding"):
        again = load_images(tree)
    assert torch.equal(again.train_x, first.train_x) and torch.load(cache, weights_only=True)["decoder"] == DECODER


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
    old, new = tmp_path / "cache" / ".cache-standin.pt.1.aaaa.tmp", tmp_path / "cache" / ".cache-standin.pt.2.bbbb.tmp"
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


# run directories
import json, platform, signal, subprocess, sys
from conftest import REPO, run_cli

TINY = ["--width", "4", "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25", "--progress", "false"]


@pytest.mark.parametrize("name", ["last", "best"])
def test_planted_checkpoint_payload_does_not_run(tmp_path, name):
    from attnresnet.runs import RunDir
    marker, run = tmp_path / "pwned", RunDir(tmp_path / "run")
    run.path.mkdir()
    torch.save({"model": _Payload(marker)}, run.path / f"{name}.pt")
    with pytest.raises(ValueError, match=f"{name}.pt cannot be read"):
        run.load_checkpoint(name)
    assert not marker.exists()
    torch.load(run.path / f"{name}.pt", weights_only=False)  # the same file, loaded the unsafe way, does run it
    assert marker.exists()


@pytest.mark.training
def test_second_writer_is_refused_naming_the_holder(tree, tmp_path):
    "A run in progress holds its run directory: a second run started on it fails at once, naming the holder."
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "attnresnet.train", "--data", tree, "--run-dir", run, *TINY, "--epochs", "200"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and time.time() < deadline: time.sleep(0.2)
        assert (run / ".lock").exists(), first.stderr.read() if first.poll() is not None else "no lock"
        second = run_cli("--data", tree, "--run-dir", run, *TINY, "--epochs", "200", timeout=120)
        assert second.returncode != 0, second.stderr[-2000:]
        assert f"is in use by process {first.pid} on {platform.node()}" in second.stderr, second.stderr[-2000:]
    finally:
        first.send_signal(signal.SIGKILL); first.wait()
    # the killed holder's lock is stale: the same command again takes it over and resumes the run
    assert json.loads((run / ".lock").read_text())["pid"] == first.pid
    before = (run / "history.csv").read_text().splitlines()  # its header and at least the checkpointed epoch 1
    again = subprocess.Popen([sys.executable, "-m", "attnresnet.train", "--data", tree, "--run-dir", run, *TINY, "--epochs", "200"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while again.poll() is None and time.time() < deadline:
            try:
                if json.loads((run / ".lock").read_text())["pid"] == again.pid: break
            except (OSError, ValueError, KeyError): pass  # between the stale lock's removal and the new one's writing
            time.sleep(0.1)
        assert again.poll() is None, again.stderr.read()[-2000:]  # not refused by the dead holder's lock
        assert json.loads((run / ".lock").read_text())["pid"] == again.pid
        deadline = time.time() + 120  # it resumes: it goes on past the killed run's epochs, and epoch 1 is the killed run's
        rows = lambda: (run / "history.csv").read_text().splitlines()
        while len(rows()) <= len(before) and time.time() < deadline: time.sleep(0.2)
        assert len(rows()) > len(before) and rows()[:2] == before[:2]
    finally:
        again.send_signal(signal.SIGKILL); again.wait()


def test_resume_on_changed_data_is_refused(tree, tmp_path):
    from attnresnet.trainer import Trainer
    from attnresnet.config import make_config
    from attnresnet.runs import RunDir
    c = make_config(data=str(tree), width=4, epochs=3, batch_size=4, val_fraction=0.25, run_dir=str(tmp_path / "run"), progress=False)
    tr = Trainer(c, run=RunDir(c.run_dir)); tr.resume(); tr.run_epoch()  # killed after one epoch
    shutil.copy(tree / "train" / "class0" / "0000.png", tree / "train" / "class0" / "9999.png")  # an image added
    with pytest.raises(ValueError, match="was started on other data"):
        Trainer(c, run=RunDir(c.run_dir)).resume()


def test_misspelt_papermill_parameter_fails_at_once(tmp_path):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError, match="did you mean 'epochs'"):
        papermill.execute_notebook(str(REPO / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters=dict(epoch=1, run_dir=str(tmp_path / "run")), kernel_name="python3",
                                   cwd=str(REPO), progress_bar=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--dropout", "nan")])
def test_non_finite_numbers_are_refused(tmp_path, flag, value):
    r = run_cli(flag, value, "--run-dir", tmp_path / "run", timeout=120)
    assert r.returncode == 2 and ("must be a finite number" in r.stderr or "must be in [0, 1)" in r.stderr), r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.training
def test_config_from_another_folder_resumes_that_run(tree, tmp_path):
    run = tmp_path / "run"
    first = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "attnresnet.train", "--config", os.path.relpath(run / "config.json", elsewhere)],
                       cwd=elsewhere, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["test_acc"] == json.loads((run / "metrics.json").read_text())["test_acc"]
    assert not (elsewhere / "runs").exists()  # it found the finished run; it did not start a new one in ./runs


@pytest.mark.training
@pytest.mark.parametrize("name", ["config.json", "metrics.json", "last.pt"])
def test_truncated_run_files_name_the_file_and_the_fix(tree, tmp_path, name):
    run = tmp_path / "run"
    assert run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300).returncode == 0
    if name == "last.pt": (run / "metrics.json").unlink()  # an unfinished run resumes from last.pt
    (run / name).write_bytes((run / name).read_bytes()[:40])
    r = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert r.returncode != 0 and f"{name} cannot be read" in r.stderr, r.stderr[-2000:]
    assert "delete" in r.stderr.splitlines()[-1]


@pytest.mark.training
def test_unreadable_best_checkpoint_says_how_to_rebuild_it(tree, tmp_path):
    "A damaged best.pt names itself and the way out, and following that advice finishes the run without retraining."
    run = tmp_path / "run"
    assert run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300).returncode == 0
    (run / "metrics.json").unlink()  # unfinished: the rerun resumes from last.pt and tests the weights in best.pt
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:40])
    history = (run / "history.csv").read_text()
    r = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert r.returncode != 0 and "best.pt cannot be read" in r.stderr and "rebuilds best.pt from last.pt" in r.stderr, r.stderr[-2000:]
    (run / "best.pt").unlink()  # the advice
    r = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert r.returncode == 0 and (run / "metrics.json").exists(), r.stderr[-2000:]
    assert (run / "history.csv").read_text() == history  # nothing was retrained

def test_full_disk_names_the_file(tmp_path):
    "A write that fails as on a full disk names the file and the fix, and leaves the previous version."
    from attnresnet.helpers import replace_atomic
    (tmp_path / "metrics.json").write_text("previous")
    def full(tmp): Path(tmp).write_text("par"); raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match=r"could not write .*metrics\.json.*Free disk space"):
        replace_atomic(tmp_path / "metrics.json", full)
    assert (tmp_path / "metrics.json").read_text() == "previous" and len(list(tmp_path.iterdir())) == 1


def test_failed_report_leaves_the_previous_figures(tmp_path):
    from attnresnet.helpers import staging_dir, replace_dir, OUTPUTS_MARK
    figures = tmp_path / "figures"; figures.mkdir(); (figures / OUTPUTS_MARK).touch(); (figures / "fig1.png").write_text("old run")
    stage = staging_dir(figures)
    (stage / "fig1.png").write_text("new run")
    # the report fails here: the folder still holds the old set, whole
    assert (figures / "fig1.png").read_text() == "old run"
    (stage / "fig2.png").write_text("new run"); replace_dir(stage, figures)
    assert {p.read_text() for p in figures.iterdir() if p.name != OUTPUTS_MARK} == {"new run"}


@pytest.mark.training
def test_long_run_does_not_fall_back_to_the_cpu_silently(tree, tmp_path):
    "device='auto' without a GPU refuses a run of many hours, with its estimate; device='cpu' is the way to insist."
    if torch.cuda.is_available(): pytest.skip("a GPU is visible: device='auto' uses it")
    r = run_cli("--data", tree, "--run-dir", tmp_path / "run", "--epochs", "200000", "--batch-size", "4", timeout=300)
    assert r.returncode == 1 and "found no GPU" in r.stderr and "hours on this CPU" in r.stderr, r.stderr[-2000:]
    assert "device='cpu'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("nb", ["ablations", "report"])
def test_papermill_jobs_check_the_names_they_declare(nb):
    "The names each job checks injected parameters against are exactly its parameters cell's."
    import ast
    papermill = pytest.importorskip("papermill")
    cells = json.loads((REPO / "nbs" / f"{nb}.ipynb").read_text())["cells"]
    call = next("".join(c["source"]) for c in cells if "check_injected(globals(), _before," in "".join(c["source"]))
    checked = ast.literal_eval(re.search(r"check_injected\(globals\(\), _before, (\(.*?\))\)", call).group(1))
    assert list(checked) == list(papermill.inspect_notebook(str(REPO / "nbs" / f"{nb}.ipynb")))


def test_report_refuses_a_misspelt_parameter(tmp_path):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError, match="did you mean 'figures_dir'"):
        papermill.execute_notebook(str(REPO / "nbs" / "report.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters=dict(figure_dir=str(tmp_path / "figs")), kernel_name="python3", cwd=str(tmp_path),
                                   progress_bar=False)
    assert not (tmp_path / "figs").exists()


# diverged runs, 16-bit and animated images, odd CPU bf16 batches, lost best.pt, hand-edited config.json,
# figures_dir on a file, torchrun's exit (tests/test_ddp.py)
import struct, zlib


def _png16(path, values: torch.Tensor):
    "Write `values` (uint16-range ints, (H, W) grey or (3, H, W) RGB) as a 16-bit PNG (torchvision writes 8-bit PNGs only)."
    rgb = values.dim() == 3
    h, w = values.shape[-2:]
    pix = values.permute(1, 2, 0) if rgb else values
    rows = b"".join(b"\0" + struct.pack(f">{w * (3 if rgb else 1)}H", *pix[y].flatten().tolist()) for y in range(h))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2 if rgb else 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _gif(path, frames: list, palette: list):
    "Write an animated GIF of `frames` (lists of rows of palette indices) with uncompressed LZW (a clear code every 100 pixels)."
    h, w = len(frames[0]), len(frames[0][0])
    table = b"".join(bytes(c) for c in palette) + bytes(3 * (256 - len(palette)))
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7, 0, 0) + table
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever: an animation
    for f in frames:
        codes, pixels = [], [p for row in f for p in row]
        for i in range(0, len(pixels), 100): codes += [256] + pixels[i:i + 100]
        codes.append(257)
        bits = "".join(format(c, "09b")[::-1] for c in codes)
        bits += "0" * (-len(bits) % 8)
        data = bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x08"
        out += b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)) + b"\x00"
    Path(path).write_bytes(out + b"\x3b")


def test_16bit_and_animated_images_decode_like_8bit_ones(tree):
    "A 16-bit grey PNG, a 16-bit RGB PNG and an animated GIF beside 8-bit PNGs: scaled to 8 bits (>>8), first frame, RGB."
    grey, rgb, gif = (tree / "train" / "class0" / n for n in ("g16.png", "c16.png", "anim.gif"))
    _png16(grey, torch.full((32, 32), 50000))                                # 50000 >> 8 = 195 (the low byte would be 80)
    _png16(rgb, torch.stack([torch.full((32, 32), v) for v in (65535, 257 * 7, 0)]))  # an 8-bit colour saved as 16-bit
    _gif(gif, [[[1] * 32] * 32, [[2] * 32] * 32], [(0, 0, 0), (200, 10, 20), (0, 0, 255)])
    from attnresnet.data import decode_image_file
    test = {f: decode_image_file(f) for f in (grey, rgb, gif)}
    assert all(x.dtype == torch.uint8 and x.shape == (3, 32, 32) for x in test.values())
    assert test[grey].unique().tolist() == [195]
    assert [test[rgb][c].unique().tolist() for c in range(3)] == [[255], [7], [0]]
    assert [test[gif][c].unique().tolist() for c in range(3)] == [[200], [10], [20]]  # the first frame
    s = load_images(tree)
    files = sorted(p.name for p in (tree / "train" / "class0").iterdir() if p.suffix == ".png")  # training reads .png/.jpg
    for f in (grey, rgb): assert torch.equal(s.train_x[files.index(f.name)], test[f])  # training decodes the same way
    from attnresnet.predict import read_image
    for f in (grey, rgb, gif): assert torch.equal(read_image(f), test[f])  # and so does predict


def test_predict_on_16bit_and_8bit_images_together(tmp_path):
    from attnresnet.predict import Classifier, read_image
    from attnresnet.models import build_model
    _png16(tmp_path / "g16.png", torch.full((40, 30), 50000))
    from torchvision.io import write_png
    write_png(torch.full((3, 32, 32), 195, dtype=torch.uint8), str(tmp_path / "g8.png"))
    clf = Classifier(build_model("attnresnet", width=4).eval(), [f"c{i}" for i in range(10)], [0.5] * 3, [0.25] * 3)
    images = [read_image(tmp_path / "g16.png"), read_image(tmp_path / "g8.png")]
    p = clf.probabilities(images)  # the old decoding gave uint16 beside uint8: a dtype error here
    torch.testing.assert_close(p[0], p[1], atol=1e-5, rtol=0)  # the same grey, whether stored in 16 or 8 bits


def test_a_network_with_a_narrow_strided_1x1_convolution_trains_on_a_cpu(tree, tmp_path):
    """Width 3 (the grid's width24 variant at base width 4): its shortcut into stage 2, a 1x1 convolution with stride 2 and 6
    input channels, sent oneDNN's AVX2 kernel past its workspace in fp32 channels-last ("double free or corruption";
    oneDNN issue 6035). `prepare_model` keeps it in NCHW on a CPU. Armed on CPUs without AVX-512, where the process aborted."""
    r = run_cli("--data", tree, "--run-dir", tmp_path / "run", *TINY, "--width", "3", "--precision", "fp32", "--batch-size", "8",
                env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["completed"]


def test_diverged_run_stops_and_is_recorded(tree, tmp_path):
    """lr=1e6 makes the loss, or first a weight or batch-norm statistic, non-finite (which, depends on the CPU's kernels and
    thread count): the run stops with one line naming the epoch and the cause; metrics.json says diverged; last.pt is finite."""
    run = tmp_path / "run"
    r = run_cli("--data", tree, "--run-dir", run, *TINY, "--epochs", "4", "--lr", "1e6", timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    m = re.search(r"training diverged (?:at epoch (\d+), step \d+ of \d+: the loss was not finite|by the end of epoch (\d+): every loss "
                  r"was finite, but not every weight)", line)
    assert m and "lr=1e+06" in line and "learning rate" in line, line
    epoch = int(m.group(1) or m.group(2))
    assert epoch >= 2, "diverged in epoch 1, leaving no good epoch to keep: give TINY runs a smaller --lr here"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["completed"] is False and metrics["diverged"]["epoch"] == epoch and metrics["test_acc"] is None
    from attnresnet.runs import read_history
    assert [h["epoch"] for h in read_history(run)] == list(range(1, epoch))  # the good epochs' history stays
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == epoch - 1 and all(torch.isfinite(t).all() for t in last["model"].values())
    again = run_cli("--data", tree, "--run-dir", run, *TINY, "--epochs", "4", "--lr", "1e6", timeout=300)
    assert again.returncode == 1 and "training diverged" in again.stderr  # a rerun says so again, without training


def test_report_tables_show_diverged_runs(tmp_path):
    from attnresnet.study import collect_results, ablation_table, diverged_runs
    for seed, completed in ((0, True), (1, False)):
        d = tmp_path / "full" / f"seed{seed}"; d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(dict(parameters=dict(seed=seed, width=4), environment={})))
        m = dict(parameters=1000, best_val_acc=0.5, test_acc=0.4, test_acc_tta=None, paper_protocol=None, completed=completed)
        if not completed: m.update(best_val_acc=None, test_acc=None, diverged=dict(epoch=2, step=3, message="training diverged: ..."))
        (d / "metrics.json").write_text(json.dumps(m))
    results = collect_results(tmp_path)
    assert [r["seed"] for r in results] == [0]  # the tables' numbers come from completed runs only
    assert [(r["name"], r["seed"]) for r in diverged_runs(tmp_path)] == [("full", 1)]
    row, = ablation_table(results, diverged_runs(tmp_path))
    assert row["n"] == "1 (+1 diverged)" and row["test_acc"] == "40.00 (n = 1)"


def _finished_tiny_run(tree, run):
    r = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.training
def test_finished_run_without_best_checkpoint_says_what_to_use(tree, tmp_path):
    "best.pt deleted from a finished run: load_model and predict name the file and point at last.pt's final weights."
    from attnresnet.runs import RunDir
    run = tmp_path / "run"; _finished_tiny_run(tree, run)
    (run / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(run / "best.pt")) + r" is missing.*checkpoint='last'"):
        RunDir(run).load_model()
    assert RunDir(run).load_model("last") is not None
    image = next((tree / "test" / "class0").iterdir())
    r = subprocess.run([sys.executable, "-m", "attnresnet.predict", str(run), str(image)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "--checkpoint last" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.training
def test_lost_best_checkpoint_is_rebuilt_or_replaced(tree, tmp_path):
    "best.pt deleted after a kill, the best epoch earlier than last.pt's: the rerun finishes, says so and records it."
    run = tmp_path / "run"; _finished_tiny_run(tree, run)
    (run / "metrics.json").unlink(); (run / "best.pt").unlink()  # killed before the test pass; best.pt lost
    state = torch.load(run / "last.pt", weights_only=True)
    state["best"] = dict(val_acc=1.0, epoch=1, weights="raw")  # unbeatable and earlier than last.pt's epoch 2
    torch.save(state, run / "last.pt")
    r = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "best.pt" in r.stderr and "epoch 1" in r.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["best_epoch"] == 2 and m["lost_best"]["epoch"] == 1 and (run / "best.pt").exists()


@pytest.mark.training
def test_lost_best_checkpoint_of_the_last_epoch_is_rebuilt_exactly(tree, tmp_path):
    run = tmp_path / "run"; _finished_tiny_run(tree, run)
    state = torch.load(run / "last.pt", weights_only=True)
    row = state["history"][-1]
    name = max(("raw", "ema"), key=lambda n: row[f"val_acc_{n}"])
    state["best"] = dict(val_acc=row[f"val_acc_{name}"], epoch=2, weights=name)  # the best was last.pt's own epoch
    torch.save(state, run / "last.pt")
    (run / "metrics.json").unlink(); (run / "best.pt").unlink()
    r = run_cli("--data", tree, "--run-dir", run, *TINY, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((run / "metrics.json").read_text())
    assert (m["best_epoch"], m["chosen_weights"], "lost_best" in m) == (2, name, False)
    assert m["best_val_acc"] == row[f"val_acc_{name}"]


@pytest.mark.training
def test_hand_edited_config_is_refused_on_resume(tree, tmp_path):
    run = tmp_path / "run"; _finished_tiny_run(tree, run)
    (run / "metrics.json").unlink()  # an unfinished run
    cfg = json.loads((run / "config.json").read_text()); cfg["parameters"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "-m", "attnresnet.train", "--config", str(run / "config.json")], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    trained = torch.load(run / "last.pt", weights_only=True)["parameters"]["lr"]
    assert r.returncode == 1 and f"lr=0.5 (last.pt: {trained!r})" in r.stderr and trained != 0.5, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (run / "metrics.json").exists()
    assert json.loads((run / "config.json").read_text())["parameters"]["lr"] == 0.5  # left as the user wrote it


@pytest.mark.parametrize("batch", [1, 3])
def test_odd_cpu_bf16_channels_last_batch_is_refused(tree, tmp_path, batch):
    "torch's CPU bf16 channels-last convolution backward corrupts memory on odd batches (the process aborts): refused by name."
    r = run_cli("--data", tree, "--run-dir", tmp_path / "run", *TINY, "--batch-size", batch, "--device", "cpu",
                "--precision", "bf16", "--channels-last", "true", timeout=300)
    assert r.returncode == 1 and "batch_size" in r.stderr and "even" in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr


def test_figures_dir_on_a_file_or_a_foreign_folder_is_refused(tmp_path):
    from attnresnet.helpers import staging_dir, replace_dir
    notes = tmp_path / "notes.txt"; notes.write_text("mine")
    with pytest.raises(ValueError, match="notes.txt.*not a folder"):
        staging_dir(notes)
    photos = tmp_path / "photos"; photos.mkdir(); (photos / "cat.png").write_text("mine")
    with pytest.raises(ValueError, match="photos.*not written by"):
        staging_dir(photos)
    stage = tmp_path / ".stage"; stage.mkdir()
    for target in (notes, photos):
        with pytest.raises(ValueError):
            replace_dir(stage, target)
    assert notes.read_text() == "mine" and (photos / "cat.png").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stage", "notes.txt", "photos"]  # nothing renamed or hidden
    figures = tmp_path / "figures"
    replace_dir(staging_dir(figures), figures)  # a new folder, then the study's own: both replaced
    (figures / "fig1.png").write_text("old")
    new = staging_dir(figures); (new / "fig1.png").write_text("new"); replace_dir(new, figures)
    assert (figures / "fig1.png").read_text() == "new"


def test_splits_without_test_images_finish_with_a_nan_test_accuracy():
    "`fit(splits=...)` with no test images (a benchmark's splits): the run finishes and says it has no test accuracy (it crashed at the end)."
    import math
    from attnresnet.trainer import Trainer
    from test_step import config, splits
    tr = Trainer(config(epochs=1), splits(test=0))
    while not tr.done: tr.run_epoch()
    m = tr.finish()
    assert m["completed"] and m["splits"]["test"] == 0 and math.isnan(m["test_acc"]) and m["confusion_matrix"] == [[0] * 10] * 10
