"""kill -9 in the middle of a run, rerun, and get the same final numbers as an uninterrupted run."""
import json, os, signal, subprocess, sys, time
import pytest
from conftest import REPO, run_cli, comparable

@pytest.mark.slow  # three short training runs
def test_kill_and_resume_matches_uninterrupted(tmp_path, standin):
    args = ["--data", standin, "--width", "4", "--epochs", "4", "--batch-size", "32", "--val-fraction", "0.2",
            "--progress", "false"]
    ref = run_cli(*args, "--run-dir", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "attnresnet.train", *map(str, args), "--run-dir", str(run)],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (run / "history.csv").exists() or len((run / "history.csv").read_text().splitlines()) < 3:
        assert p.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # into the middle of epoch 3
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert not (run / "metrics.json").exists()
    import torch
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] in (1, 2, 3)  # the last checkpoint is readable (epoch 2's may not be written yet)

    resumed = run_cli(*args, "--run-dir", run)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", run))
    assert comparable(a) == comparable(b)
    from attnresnet.runs import read_history
    untimed = lambda d: [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in read_history(d)]
    assert untimed(tmp_path / "ref") == untimed(run)
