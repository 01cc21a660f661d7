"""Shared fixtures: real CIFAR-10 images when the offline copy is present, a generated stand-in otherwise."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
SLOW_NEEDS = ("browser", "jupyterlab", "papermill", "ddp", "runners", "training")  # marks that put a test in the slow tier

@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(items):
    "Tests marked with what they need from SLOW_NEEDS are slow; tests using `image_folder` are offline_data (pyproject.toml)."
    for item in items:
        if any(item.get_closest_marker(m) for m in SLOW_NEEDS): item.add_marker(pytest.mark.slow)
        if "image_folder" in getattr(item, "fixturenames", ()): item.add_marker(pytest.mark.offline_data)

@pytest.fixture(scope="session")
def standin_cache(tmp_path_factory) -> Path:
    "Decoded caches of generated data go to a temporary folder, not the project's data/."
    return tmp_path_factory.mktemp("cache")

@pytest.fixture(scope="session")
def standin(standin_cache, tmp_path_factory) -> Path:
    "A small generated image folder in CIFAR layout (learnable in a few epochs)."
    from attnresnet.data import make_standin_dataset
    os.environ["ATTNRESNET_CACHE"] = str(standin_cache)  # inherited by the subprocesses the tests start
    return make_standin_dataset(tmp_path_factory.mktemp("data") / "standin", per_class=30, test_per_class=10)

@pytest.fixture(scope="session")
def image_folder(standin) -> Path:
    "The offline CIFAR-10 JPEG copy when present, else the stand-in."
    from attnresnet.data import offline_cifar10
    return offline_cifar10() or standin

def run_cli(*args, timeout=600, **kw) -> subprocess.CompletedProcess:
    "Run `python -m attnresnet.train ARGS` in a fresh process."
    return subprocess.run([sys.executable, "-m", "attnresnet.train", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)

@pytest.fixture(scope="session")
def small_run(standin, tmp_path_factory) -> Path:
    "A finished run made by the training command: width 4, 1 epoch of the stand-in (for predict and the CLI's refusals)."
    run = tmp_path_factory.mktemp("small") / "run"
    r = run_cli("--data", standin, "--width", "4", "--epochs", "1", "--batch-size", "64", "--val-fraction", "0.2",
                "--progress", "false", "--run-dir", run)
    assert r.returncode == 0, r.stderr
    return run

def comparable(metrics: dict) -> dict:
    "Metrics without the fields that measure time."
    return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "train_time_s", "images_per_s")}

def start_until(cmd: list, ready, timeout: float = 300, poll: float = 0.05) -> subprocess.Popen:
    "Start `cmd` in the repository, in a process group of its own (for `os.killpg`), and return it once `ready()` holds."
    p = subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not ready():
        assert p.poll() is None, "the process ended before it was ready"
        assert time.time() < deadline, f"not ready within {timeout} s"
        time.sleep(poll)
    return p

def assert_same_run(ref, run):
    "Two run directories end alike: the same metrics and history, the columns that measure time aside."
    a, b = (json.loads((Path(d) / "metrics.json").read_text()) for d in (ref, run))
    assert comparable(a) == comparable(b)
    assert untimed(ref) == untimed(run)

def untimed(history) -> list[dict]:
    "History rows without the columns that measure time: a run directory's `history.csv`, or rows such as `Trainer.history`."
    if isinstance(history, (str, os.PathLike)):
        from attnresnet.runs import read_history
        history = read_history(history)
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in history]
