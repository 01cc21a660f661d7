"""Bad parameters fail fast, name themselves, and never touch an earlier run's artifacts."""
import json, time
import pytest
from conftest import run_cli

@pytest.mark.parametrize("args, name", [
    (["--model", "resnet50"], "model='resnet50'"),
    (["--epochs", "-1"], "epochs=-1"),
    (["--width", "0"], "width=0"),
    (["--augment", "heavy"], "augment='heavy'"),
    (["--data", "/no/such/folder"], "data='/no/such/folder'"),
    (["--epochs", "two"], "--epochs"),
    (["--swa", "maybe"], "--swa"),
    (["--chanel-attention", "false"], "unrecognized arguments"),
])
def test_bad_parameter_fails_fast(tmp_path, args, name):
    t0 = time.perf_counter()
    r = run_cli(*args, "--run-dir", tmp_path / "run")
    assert r.returncode == 2, r.stderr
    assert name in r.stderr, r.stderr
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "run").exists()  # nothing was created

@pytest.mark.training
def test_changed_parameters_do_not_touch_a_finished_run(tmp_path, standin):
    run = tmp_path / "run"
    common = ["--data", standin, "--width", "4", "--batch-size", "64", "--val-fraction", "0.2", "--progress", "false", "--run-dir", run]
    r = run_cli(*common, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = run_cli(*common, "--epochs", "2")
    assert r.returncode != 0 and "epochs: 1 there, 2 now" in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before

@pytest.mark.training
def test_config_json_alone_reruns_a_run(tmp_path, standin):
    run = tmp_path / "run"
    r = run_cli("--data", standin, "--width", "4", "--epochs", "1", "--batch-size", "64", "--val-fraction", "0.2",
                "--progress", "false", "--run-dir", run)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((run / "config.json").read_text())
    cfg["parameters"]["run_dir"] = str(tmp_path / "again")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = run_cli("--config", tmp_path / "config.json")
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (run, tmp_path / "again"))
    assert a["test_acc"] == b["test_acc"] and a["best_val_acc"] == b["best_val_acc"]

def test_tensorboard_log_is_optional(tmp_path, standin):
    "log='tensorboard' writes event files when the package is there, and says how to get it when it is not."
    import importlib.util
    r = run_cli("--data", standin, "--width", "4", "--epochs", "1", "--batch-size", "64", "--val-fraction", "0.2",
                "--progress", "false", "--log", "tensorboard", "--run-dir", tmp_path / "run")
    if importlib.util.find_spec("tensorboard") is None:
        assert r.returncode == 2 and "pip install tensorboard" in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()
    else:
        assert r.returncode == 0, r.stderr
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
