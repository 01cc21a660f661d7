"""kill -9 in the middle of a run, rerun, and get the same final numbers as an uninterrupted run."""
import os, signal, sys, time
import pytest
from conftest import run_cli, comparable, untimed, start_until, assert_same_run

@pytest.mark.slow  # three short training runs
def test_kill_and_resume_matches_uninterrupted(tmp_path, standin):
    args = ["--data", standin, "--width", "4", "--epochs", "4", "--batch-size", "32", "--val-fraction", "0.2",
            "--progress", "false"]
    ref = run_cli(*args, "--run-dir", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    p = start_until([sys.executable, "-m", "attnresnet.train", *args, "--run-dir", run],
                    lambda: (run / "history.csv").exists() and len((run / "history.csv").read_text().splitlines()) >= 3)
    time.sleep(0.2)  # into the middle of epoch 3
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert not (run / "metrics.json").exists()
    import torch
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] in (1, 2, 3)  # the last checkpoint is readable (epoch 2's may not be written yet)

    resumed = run_cli(*args, "--run-dir", run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "ref", run)

def test_checkpoints_every_n_epochs_resume_exactly(tmp_path):
    """checkpoint_every=2: last.pt and best.pt are written at epochs 2 and 4 and after the last (5), best.pt never ahead of
    last.pt; a run abandoned in epoch 3 resumes from epoch 2 and ends as an uninterrupted run that checkpoints every epoch."""
    import torch
    from attnresnet.bench_step import random_images
    from attnresnet.config import make_config
    from attnresnet.runs import RunDir
    from attnresnet.splits import Splits
    from attnresnet.trainer import Trainer
    x, y = random_images(96, seed=2)
    s = Splits(x[:48], y[:48], x[48:72], y[48:72], x[72:], y[72:], [str(i) for i in range(10)], "random uint8 images",
               (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    def trainer(name, every):
        tr = Trainer(make_config(width=4, batch_size=16, epochs=5, device="cpu", progress=False, checkpoint_every=every,
                                 run_dir=str(tmp_path / name)), s, RunDir(tmp_path / name))
        tr.resume()
        return tr
    def finish(tr):
        while not tr.done: tr.run_epoch()
        return tr.finish()
    ref = finish(trainer("ref", 1))

    cut, saved = trainer("cut", 2), []
    for _ in range(3):
        cut.run_epoch()
        saved.append(tuple(torch.load(f, weights_only=False)["epoch"] if (f := tmp_path / "cut" / f"{k}.pt").exists() else None
                           for k in ("last", "best")))
    assert [last for last, _ in saved] == [None, 2, 2] and saved[0][1] is None and all(best <= 2 for _, best in saved[1:])
    del cut  # abandoned in epoch 3, as by a kill: its history.csv has 3 rows, last.pt is epoch 2's
    resumed = trainer("cut", 2)
    assert resumed.epoch == 2
    metrics = finish(resumed)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["epoch"] == 5
    assert_same_run(tmp_path / "ref", tmp_path / "cut")
    assert len(untimed(tmp_path / "ref")) == 5 and comparable(metrics) == comparable(ref)  # what finish() returned, as written
