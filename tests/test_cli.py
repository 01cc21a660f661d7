"""Bad parameters fail fast, name themselves, and never touch an earlier run's artifacts."""
import json
import pytest
from conftest import run_cli

@pytest.mark.parametrize("args, name", [
    (["--model", "resnet50"], "model='resnet50'"),
    (["--epochs", "-1"], "epochs=-1"),
    (["--width", "0"], "width=0"),
    (["--augment", "heavy"], "augment='heavy'"),
    (["--data", "/no/such/folder"], "data='/no/such/folder'"),
    (["--data", "/tmp/" + "x" * 300], "data='/tmp/xxxx"),  # a name too long for the file system: still the parameter's error
    (["--epochs", "two"], "--epochs"),
    (["--swa", "maybe"], "--swa"),
    (["--chanel-attention", "false"], "did you mean --channel-attention?"),
])
def test_bad_parameter_fails_fast(tmp_path, args, name):
    r = run_cli(*args, "--run-dir", tmp_path / "run")
    assert r.returncode == 2, r.stderr
    assert name in r.stderr, r.stderr
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


# ---- a command line that explains itself, and one-line user errors ----
import os, shutil, sys, tomllib
from pathlib import Path
from dataclasses import fields
import torch
from conftest import REPO
from attnresnet import train, predict, bench
from attnresnet.config import TrainConfig, RECIPES, parameter_docs, parameters_cell

def call(main, *args, capsys) -> tuple[int, str, str]:
    "Exit status (0 if it returned), stdout and stderr of `main(args)` in this process."
    try: main([str(a) for a in args]); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err

def one_line(err: str) -> bool:
    "One line, without argparse's usage or a traceback."
    return err.count("\n") == 1 and "usage:" not in err and "Traceback" not in err

def test_help_describes_every_flag_from_train_config():
    docs, p = parameter_docs(), train.arg_parser()
    flags = {a.dest: a for a in p._actions if a.dest in docs}
    assert list(flags) == [f.name for f in fields(TrainConfig)]
    for name, a in flags.items():
        assert docs[name] and a.help.startswith(docs[name].replace("%", "%%")), name  # the field's comment
        assert "; default: " in a.help and a.help.endswith("]"), a.help                 # its accepted values and default
    assert all(a.help for a in p._actions), [a.dest for a in p._actions if not a.help]

def test_recipe_help_shows_the_recipes_defaults(capsys):
    code, out, _ = call(train.main, "--recipe", "fast", "--help", capsys=capsys)
    assert code == 0 and "defaults of --recipe fast" in out
    epochs = " ".join(out.split()).split("--epochs INT ")[1].split("]")[0]
    assert f"default: {RECIPES['fast']['epochs']}" in epochs, epochs
    code, out, _ = call(train.main, "--help", capsys=capsys)
    assert "default: 500" in " ".join(out.split()).split("--epochs INT ")[1].split("]")[0]

def test_parameters_cell_is_made_from_the_same_docs():
    "nbs/train.ipynb's parameters cell is `parameters_cell()`: a changed comment in TrainConfig fails here until the cell follows."
    nb = json.loads((REPO / "nbs" / "train.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert "".join(cell["source"]).strip() == parameters_cell().strip()

@pytest.mark.parametrize("args, expected", [
    (["--epoch", "3"], "did you mean --epochs?"),       # no prefix matching
    (["--epochs", "two"], "--epochs"),
    (["--width", "0"], "width=0"),
    (["--seed", str(2**64)], "seed=18446744073709551616: must be less than 2**63"),
    (["--device", "mps"], "device='mps'"),
    (["--device", "meta"], "device='meta'"),
    (["--tta-shift", "2"], "tta_shift=2: the shifted views are test-time augmentation; set tta=True too"),
    (["--channel-multiple", "0"], "channel_multiple=0"),
    (["--model", "wrn", "--channel-multiple", "8"], "channel_multiple=8: model='wrn' cannot be padded"),
    (["--checkpoint-every", "0"], "checkpoint_every=0"),
    (["--model", "wrn", "--zero-init-residual", "true"], "zero_init_residual=True applies to attnresnet and seresnet only"),
    (["--bn-momentum", "1.5"], "bn_momentum=1.5"),
    (["--model", "wrn", "--stem-whitening", "true"], "stem_whitening=True applies to attnresnet and seresnet only"),
    (["--crop-pad", "16"], "crop_pad=16: -1 (the augment preset's) or a padding of 0-15 pixels"),
    (["--cutout", "64"], "cutout=64"),
    (["--augment", "none", "--flip-alternate", "true"], "flip_alternate=True alternates the flips of augment='none'"),
    (["--flip-alternate", "true", "--val-augment", "true"], "flip_alternate=True mirrors the training images by epoch"),
    (["--decoupled-weight-decay", "true", "--lr", "0"], "decoupled_weight_decay=True divides weight_decay by lr"),
    (["--bn-bias-lr", "-1"], "bn_bias_lr=-1"),
])
def test_value_errors_are_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch, args, expected):
    "Refused before any data is read: reading the data here would fail the test with another message."
    def no_data(*a, **k): raise AssertionError("the data was read before the parameters were checked")
    monkeypatch.setattr("attnresnet.trainer.load_splits", no_data)
    code, _, err = call(train.main, *args, "--run-dir", tmp_path / "run", capsys=capsys)
    assert code == 2 and one_line(err) and expected in err, err
    assert not (tmp_path / "run").exists()

def test_print_config_round_trips_through_a_flat_file(tmp_path, capsys):
    code, out, _ = call(train.main, "--recipe", "fast", "--width", "8", "--print-config", capsys=capsys)
    printed = json.loads(out)
    assert code == 0 and list(printed) == [f.name for f in fields(TrainConfig)]
    assert (printed["epochs"], printed["width"], printed["batch_size"]) == (RECIPES["fast"]["epochs"], 8, RECIPES["fast"]["batch_size"])
    (tmp_path / "fast.json").write_text(out)
    code, again, _ = call(train.main, "--config", tmp_path / "fast.json", "--print-config", capsys=capsys)
    assert code == 0 and json.loads(again) == printed

def test_config_takes_yaml(tmp_path, capsys):
    pytest.importorskip("yaml")
    (tmp_path / "p.yaml").write_text("recipe: fast\nwidth: 8\nweight_decay: 5e-4\n")  # 5e-4: text to PyYAML, a float here
    code, out, err = call(train.main, "--config", tmp_path / "p.yaml", "--print-config", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["weight_decay"] == 5e-4 and json.loads(out)["epochs"] == RECIPES["fast"]["epochs"]

def test_yaml_without_pyyaml_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    (tmp_path / "p.yaml").write_text("width: 8\n")
    code, _, err = call(train.main, "--config", tmp_path / "p.yaml", capsys=capsys)
    assert code == 2 and one_line(err) and "pip install pyyaml" in err, err

@pytest.mark.parametrize("text, expected", [('{"width": 8,', "not valid JSON"), ('{"epoch": 3}', "did you mean 'epochs'?"),
                                            ('[1, 2]', "expected parameter names with values")])
def test_config_file_errors_never_say_delete(tmp_path, capsys, text, expected):
    (tmp_path / "mine.json").write_text(text)
    code, _, err = call(train.main, "--config", tmp_path / "mine.json", capsys=capsys)
    assert code == 2 and one_line(err) and expected in err and "mine.json" in err and "delete" not in err, err
    assert (tmp_path / "mine.json").read_text() == text

def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch, small_run):
    "--debug, or ATTNRESNET_DEBUG=1, re-raises the error that is otherwise one line: train and predict."
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match="width=0"): train.main(["--width", "0", "--debug"])
    with pytest.raises(ValueError, match="broken.png"): predict.main([str(small_run), str(tmp_path / "broken.png"), "--debug"])
    monkeypatch.setenv("ATTNRESNET_DEBUG", "1")
    with pytest.raises(ValueError, match="width=0"): train.main(["--width", "0"])
    with pytest.raises(ValueError, match="broken.png"): predict.main([str(small_run), str(tmp_path / "broken.png")])

def test_data_pointing_at_train_itself(standin, tmp_path, capsys):
    code, _, err = call(train.main, "--data", standin / "train", "--run-dir", tmp_path / "run", capsys=capsys)
    assert code == 2 and one_line(err) and "is the train/ folder itself: give its parent" in err, err
    assert not (tmp_path / "run").exists()

def test_unreadable_image_in_the_data(standin, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(standin, data)
    (data / "train" / "class0" / "broken.png").write_text("not an image")
    code, _, err = call(train.main, "--data", data, "--width", "4", "--run-dir", tmp_path / "run", capsys=capsys)
    assert code == 1 and one_line(err) and "broken.png" in err, err
    assert not (tmp_path / "run").exists()  # the refused run left no empty folder behind

def test_no_network_for_cifar10(tmp_path, capsys, monkeypatch):
    import torchvision.datasets, urllib.error
    def offline(*a, **k): raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setenv("ATTNRESNET_CACHE", str(tmp_path / "cache"))
    code, _, err = call(train.main, "--width", "4", "--run-dir", tmp_path / "runs" / "run", capsys=capsys)
    assert code == 1 and one_line(err) and "data='cifar10': download" in err and "offline image folder" in err, err
    assert not (tmp_path / "runs").exists()  # neither the run nor the parent folder it made

def test_run_dir_is_a_file(standin, tmp_path, capsys):
    (tmp_path / "notes").write_text("mine")
    for run_dir in (tmp_path / "notes", tmp_path / "notes" / "run"):
        code, _, err = call(train.main, "--data", standin, "--run-dir", run_dir, capsys=capsys)
        assert code == 1 and one_line(err) and "is a file, not a folder" in err, err
    assert (tmp_path / "notes").read_text() == "mine"

def test_run_dir_that_cannot_be_made(standin, tmp_path, capsys):
    "A folder where nothing can be made: /proc for root (who may write anywhere else), a read-only folder for others."
    if os.geteuid() == 0: run_dir = Path("/proc/attnresnet-test/run")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        run_dir = tmp_path / "ro" / "run"
    code, _, err = call(train.main, "--data", standin, "--run-dir", run_dir, capsys=capsys)
    assert code == 1 and one_line(err) and f"run_dir={str(run_dir)!r}" in err and "cannot make this folder" in err, err
    # a name too long for the file system, under folders that do not exist yet: they are made, then removed again
    run_dir = tmp_path / "made" / "on the way" / ("x" * 300)
    code, _, err = call(train.main, "--data", standin, "--run-dir", run_dir, capsys=capsys)
    assert code == 1 and one_line(err) and "cannot make this folder (File name too long)" in err, err
    assert not (tmp_path / "made").exists()

def test_gpu_index_beyond_this_machine(standin, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, _, err = call(train.main, "--data", standin, "--device", "cuda:7", "--run-dir", tmp_path / "run", capsys=capsys)
    assert code == 2 and one_line(err) and "device='cuda:7': this machine has 1 CUDA GPU (cuda:0 to cuda:0)" in err, err
    assert not (tmp_path / "run").exists()

def test_last_pt_of_another_network(standin, small_run, tmp_path, capsys):
    run = tmp_path / "run"; run.mkdir()
    shutil.copy(small_run / "last.pt", run / "last.pt")  # width 4's checkpoint in a width-8 run's folder
    code, _, err = call(train.main, "--data", standin, "--width", "8", "--epochs", "2", "--batch-size", "64", "--val-fraction", "0.2",
                        "--progress", "false", "--run-dir", run, capsys=capsys)
    # refused by the resume check (last.pt records its parameters), naming the field and both values, before anything is written
    assert code == 1 and one_line(err) and "width=8 (last.pt: 4)" in err and "new run_dir" in err, err
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # no config.json written beside it

def test_predict_errors_are_one_line(small_run, standin, tmp_path, capsys):
    image = next((standin / "test" / "class0").iterdir())
    (tmp_path / "broken.png").write_text("not an image")
    cases = [((small_run, tmp_path / "broken.png"), "broken.png"), ((small_run, image, "--device", "mps"), "device='mps'"),
             ((small_run, image, "--devic", "cpu"), "did you mean --device?")]
    if not torch.cuda.is_available(): cases.append(((small_run, image, "--device", "cuda"), "no CUDA GPU is visible"))
    for args, expected in cases:
        code, _, err = call(predict.main, *args, capsys=capsys)
        assert code == 2 and one_line(err) and expected in err, err
        assert "best.pt" not in err and "delete" not in err, err  # the run's files are not blamed
    code, out, _ = call(predict.main, small_run, image, "--top", "2", capsys=capsys)
    assert code == 0 and len(out.splitlines()) == 3

def test_bench_help_and_errors(capsys):
    code, out, _ = call(bench.main, "--help", capsys=capsys)
    assert code == 0 and "issue" not in out.lower()
    code, _, err = call(bench.main, "--device", "meta", capsys=capsys)
    assert code == 2 and one_line(err) and "device='meta'" in err, err
    code, _, err = call(bench.main, "--out", "/no/such/folder/report.md", capsys=capsys)
    assert code == 2 and one_line(err) and "--out" in err, err

def test_console_scripts(monkeypatch, capsys):
    "attnresnet-train, -predict and -bench are installed and name a `cli`; attnresnet-train's returns None, not a result taken for an exit status."
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"attnresnet-train", "attnresnet-predict", "attnresnet-bench"}
    for target in scripts.values():
        module, name = target.split(":")
        assert name == "cli" and callable(getattr(sys.modules[module], name))
    monkeypatch.setattr(sys, "argv", ["attnresnet-train", "--print-config"])
    assert train.cli() is None and json.loads(capsys.readouterr().out)["epochs"] == 500
