"""scripts/gpu_run.sh end to end in its CPU smoke mode (so it cannot rot between GPU leases), and its argument errors."""
import json, re, subprocess, sys, tarfile
import pytest
from conftest import REPO
from attnresnet.bench_flops import train_flops
from attnresnet.runs import RunDir

SCRIPT = REPO / "scripts" / "gpu_run.sh"

def run_script(*args, timeout=400):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**__import__("os").environ, "PYTHON": sys.executable})

def gpu_results(archive, tmp_path, figures=None):
    "scripts/gpu_results.py on `archive`, into tmp_path/results (figures: tmp_path/figures unless named)."
    return subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_results.py"), str(archive), "--dest", str(tmp_path / "results"),
                           "--figures", str(figures or tmp_path / "figures")], capture_output=True, text=True, timeout=120)

@pytest.mark.slow  # every step of the script at toy scale: about two minutes
def test_smoke_mode_runs_every_step_and_packs_one_archive(tmp_path, standin):
    archive = tmp_path / "standin.tar.xz"
    subprocess.run(["tar", "-cJf", str(archive), "-C", str(standin.parent), standin.name], check=True)
    r = run_script(tmp_path / "out", "--smoke", "--budget", 900, "--data", archive, "--work", tmp_path / "work",
                   "--steps", "tests,speed,bench,peer,train,fast,grid,concurrency,sweep", "--grid-seeds", 1, timeout=1000)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = (tmp_path / "out" / "steps.txt").read_text()
    for name in ("env", "unpack", "data", "tests", "speed", "bench", "peer", "probe", "train", "fast-seed0", "grid", "concurrency", "sweep"):
        assert f"\n{name} rc=0 " in steps, (name, steps)
    assert "done in" in steps
    assert "training runs: papermill" in steps  # papermill is importable here, as on a GPU machine given .travel/wheels
    assert "grid jobs: 2 (the best of concurrency/concurrency.md)" in steps  # the smoke measures 2 at once only: its best
    with tarfile.open(tmp_path / "out" / "gpu-results.tar.gz") as t:
        names = t.getnames()
        assert not any(n.endswith(".pt") for n in names)  # no checkpoints travel back
        assert {"results/bench.md", "results/profile.txt", "results/env.log", "results/tests.log"} <= set(names)
        runs = sorted(n.split("/")[2] for n in names if n.startswith("results/runs/") and n.endswith("/metrics.json"))
        grid = sorted(n for n in names if n.startswith("results/grid-1ep/") and n.endswith("/metrics.json"))
        assert {"results/grid-1ep/figures/table3_ablations.md", "results/grid-1ep/figures/fig4_training_curves.png",
                "results/grid-1ep/figures/fig2_dual_attention.png", "results/report.ipynb"} <= set(names)  # the grid's report
        assert grid == ["results/grid-1ep/full/seed0/metrics.json", "results/grid-1ep/no_ema/seed0/metrics.json"], grid
        assert "results/ablations.ipynb" in names
        assert {"results/sweep-4s/base/seed0/metrics.json", "results/sweep-4s/sweep.md"} <= set(names)  # the sweep: the recipe's own run here
        assert {"results/concurrency/concurrency.md", "results/concurrency/concurrency.json",
                "results/concurrency/jobs2/seed1/metrics.json"} <= set(names)  # 2 at once (the smoke's one row)
        assert runs == ["fast-seed0", "paper-2epochs", "probe-1epoch"], runs
        m = json.load(t.extractfile("results/runs/paper-2epochs/metrics.json"))
        fast = json.load(t.extractfile("results/runs/fast-seed0/config.json"))["parameters"]
        job = json.load(t.extractfile("results/runs/paper-2epochs/train.ipynb"))  # the executed main job comes back
    assert job["metadata"]["papermill"]["parameters"]["epochs"] == 2 and job["metadata"]["papermill"]["exception"] is not True
    assert m["completed"] and m["epochs"] == 2 and m["splits"]["train"] == 270
    assert m["test_acc_tta"] is not None  # the script's runs test with flip TTA too (opt-in elsewhere)
    assert fast["recipe"] == "fast" and fast["time_budget"] == 4 and fast["augment"] == "basic"
    assert "Profile of 1 trainer steps" in (tmp_path / "work" / "results" / "bench.md").read_text()
    assert "| graph (attnresnet.step) |" in (tmp_path / "work" / "results" / "step-bench.md").read_text()

    # back on this side: unpack into results/gpu/<date>-<card>/ with Figure 4 and a summary line per run
    old = tmp_path / "figures"; old.mkdir(); (tmp_path / "cpu-grid").mkdir()  # a set from another grid, published before
    (old / "source.json").write_text(json.dumps(dict(runs_dir=str(tmp_path / "cpu-grid"))))
    r = gpu_results(tmp_path / "out" / "gpu-results.tar.gz", tmp_path, figures=old)
    assert r.returncode == 0, r.stderr
    source = json.loads((old / "source.json").read_text())  # figures/ is now the GPU grid's set ...
    assert source["runs_dir"] == str(tmp_path / "results" / "grid-1ep") and (old / "table3_ablations.md").exists()
    assert (tmp_path / "cpu-grid" / "figures" / "source.json").exists()  # ... and the set it replaced stays beside its runs
    assert (tmp_path / "results" / "grid-1ep" / "figures" / "fig1_architecture.png").exists()
    dest, grid, sweep = sorted((tmp_path / "results").iterdir(), key=lambda d: {"grid-1ep": 1, "sweep-4s": 2}.get(d.name, 0))
    assert grid.name == "grid-1ep" and (grid / "no_ema" / "seed0" / "metrics.json").exists()  # the grid grows in its own folder
    assert not (dest / "grid-1ep").exists() and "grid run added: " in r.stdout
    assert sweep.name == "sweep-4s" and (sweep / "base" / "seed0" / "metrics.json").exists() and not (dest / "sweep-4s").exists()
    assert "| base | 1 |" in (sweep / "sweep.md").read_text() and "sweep run added: " in r.stdout
    assert dest.name.endswith("-cpu") and (dest / "fig4_training_curves.png").stat().st_size > 10_000
    assert "`paper-2epochs`" in r.stdout and "2 epochs" in r.stdout and "with flip TTA" in r.stdout
    # each run's share of the peak counts the FLOPs of its own network (width 4 here), not the paper's (width 31: about 60
    # times more); a share may pass 100% on a CPU whose bf16 matrix products are emulated (AVX2: about 1% of its fp32 speed)
    peak = float(re.search(r"bf16 ([\d.]+) TFLOP/s", (dest / "bench.md").read_text())[1])
    shares = re.findall(r"- `([^`]+)` .*, ([\d.]+)% of the measured bf16 peak", r.stdout)
    assert sorted(name for name, _ in shares) == ["fast-seed0", "paper-2epochs", "probe-1epoch"], r.stdout
    for name, share in shares:
        run = RunDir(dest / "runs" / name)
        own = 100 * run.metrics["images_per_s"] * train_flops(run.config, len(run.metrics["classes"])) / (peak * 1e12)
        assert float(share) == pytest.approx(own, abs=0.051), (name, share, own)
    # the GPU machine's scratch folder is named, not spelled out, in what is kept
    config = (dest / "runs" / "paper-2epochs" / "config.json").read_text()
    assert str(tmp_path / "work") not in config + (dest / "steps.txt").read_text() and "<work>" in config

def test_bad_arguments_exit_2_with_the_reason(tmp_path):
    for args, said in [(["--bogus"], "unknown argument --bogus"), (["--budget", "10"], "--budget 10"),
                       (["--data", tmp_path / "nope"], "does not exist"), (["--steps", "tests,fly"], "unknown step fly"),
                       (["--grid-jobs", "0"], "--grid-jobs 0: give a whole number from 1 or auto")]:
        r = run_script(tmp_path / "out", *args, timeout=60)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
    assert not (tmp_path / "out" / "gpu-results.tar.gz").exists()

def fake_python(tmp_path, training: str):
    "A python for gpu_run.sh that runs `training` (bash, with `$run` its run folder) for a training run, papermill's or the module's."
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
case " $* " in
  *" -m papermill "*|*" -m attnresnet.train "*)
    prev=""; for a in "$@"; do if [ "$prev" = run_dir ] || [ "$prev" = --run-dir ]; then run=$a; fi; prev=$a; done
    mkdir -p "$run"
{training} ;;
esac
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    return fake

HANGS = """    echo $$ > "$run/pid"; echo "$CONFIG" > "$run/config.json"; printf "$HISTORY" > "$run/history.csv"
    echo "$*" > "$run/argv.tmp"; mv "$run/argv.tmp" "$run/argv.txt"  # last, and whole: the test waits for it
    exec sleep 300"""  # writes one epoch, then hangs

CONFIG = dict(parameters=dict(model="attnresnet", recipe="paper", epochs=2, cudnn_benchmark=True, channel_multiple=8, attention_matmul=False,
                              eval_batch_size=1000), environment=dict(device_name="stand-in"), precision="fp32",
              splits=dict(train=270, val=30, test=100), data_source="stand-in")  # as the first command's run records it
HISTORY = "epoch,train_loss,train_acc,lr,images_per_s,seconds,val_acc_raw,val_acc_ema\\n1,2.0,0.2,0.1,90.0,3.0,0.25,0.125\\n"  # as a run writes it

def test_a_command_killed_mid_step_returns_the_step_so_far(tmp_path, standin):
    "The device kills a command at its limit, which can come before --budget: the archive still holds paper500's history."
    import os, signal, time
    fake = fake_python(tmp_path, HANGS)
    work, out, run = tmp_path / "work", tmp_path / "out", tmp_path / "paper500"
    (work / "results").mkdir(parents=True)  # the speed rows of an earlier command in this --work folder: padding was fastest
    rows = [dict(ms_per_step=ms, nonfinite_steps=0, settings=dict(step="graph", **s))
            for ms, s in [(10.0, {}), (9.0, dict(cudnn_benchmark=True)), (8.0, dict(cudnn_benchmark=True, channel_multiple=8))]]
    rows.append(dict(row="full trainer", val_s_by_eval_batch={"250": 0.2, "1000": 0.1, "2500": 0.15}))
    (work / "results" / "step-bench.json").write_text(json.dumps(dict(rows=rows)))
    def archived(name="runs/paper500/history.csv"):
        try:
            with tarfile.open(out / "gpu-results.tar.gz") as t: return t.extractfile(f"results/{name}").read().decode()
        except (OSError, KeyError, tarfile.TarError): return None
    def command(ready):  # gpu_run.sh --steps paper500 until `ready()`, then killed whole, as at the device's limit
        p = subprocess.Popen(["bash", str(SCRIPT), str(out), "--smoke", "--budget", "300", "--data", str(standin), "--work", str(work),
                              "--steps", "paper500"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, "PYTHON": str(fake), "GPU_RUN_SNAPSHOT": "1", "GPU_RUN_PAPER500": str(run),
                                  "CONFIG": json.dumps(CONFIG), "HISTORY": HISTORY})
        try:
            deadline = time.monotonic() + 120
            while not ready() and p.poll() is None and time.monotonic() < deadline: time.sleep(0.5)
            assert p.poll() is None, p.stdout.read().decode()  # still training (the stand-in hangs) ...
        finally:
            os.killpg(p.pid, signal.SIGKILL); p.wait()  # ... when the whole command is killed
            if (run / "pid").exists(): os.kill(int((run / "pid").read_text()), signal.SIGKILL)  # `timeout` ran it in a group of its own
    command(lambda: archived() is not None and (run / "argv.txt").exists())
    assert archived() == HISTORY.replace("\\n", "\n")
    steps = archived("steps.txt")  # the archive's own, as it was packed with the history
    assert "paper500 settings: --cudnn-benchmark true --channel-multiple 8 --eval-batch-size 1000" in steps and "done in" not in steps
    argv = (run / "argv.txt").read_text()
    assert "-p cudnn_benchmark True -p channel_multiple 8 -p eval_batch_size 1000" in argv and "-p checkpoint_every 5" in argv, argv
    # back here, the unfinished run is reported as such, and drawn as the longest run
    r = gpu_results(out / "gpu-results.tar.gz", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "`paper500` (paper recipe, stand-in, fp32): unfinished, 1 of 2 epochs, best validation so far 25.00% raw / 12.50% EMA" in r.stdout
    (dest,) = (tmp_path / "results").iterdir()
    assert (dest / "runs" / "paper500" / "history.csv").exists() and (dest / "fig4_training_curves.png").exists()
    # the next command resumes the run with the settings its config.json records, whatever the speed rows say
    (run / "argv.txt").unlink()
    command(lambda: (run / "argv.txt").exists())
    argv = (run / "argv.txt").read_text()
    assert "-p cudnn_benchmark True -p channel_multiple 8 -p attention_matmul False -p eval_batch_size 1000" in argv, argv

GRAPH_FAILS = """    echo "$*" >> "$run/attempts.txt"
    case " $* " in *" step eager "*|*" --step eager "*) echo "$CONFIG" > "$run/config.json"; printf "$HISTORY" > "$run/history.csv"; exit 0 ;; esac
    echo 'File "/repo/attnresnet/step.py", line 282, in run' >&2
    echo 'RuntimeError: CUDA error: operation not permitted when stream is capturing' >&2; exit 1"""  # fails unless told --step eager

def test_a_failing_graph_step_hands_paper500_to_the_eager_step(tmp_path, standin):
    "Where the CUDA-graph step fails in its own code, paper500 goes on with --step eager in the same command, and later commands start so."
    import os
    fake = fake_python(tmp_path, GRAPH_FAILS)
    out, run = tmp_path / "out", tmp_path / "paper500"
    env = {**os.environ, "PYTHON": str(fake), "GPU_RUN_PAPER500": str(run), "CONFIG": json.dumps(CONFIG), "HISTORY": HISTORY}
    said = []
    for _ in range(2):
        r = subprocess.run(["bash", str(SCRIPT), str(out), "--smoke", "--budget", "300", "--data", str(standin), "--work", str(tmp_path / "work"),
                            "--steps", "paper500"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        said.append(r.stdout)
    first, *eager = (run / "attempts.txt").read_text().splitlines()
    assert "step eager" not in first and len(eager) == 2 and all("step eager" in a for a in eager)  # one failure, then eager only
    assert "paper500: the CUDA-graph step failed (rc=1, paper500.log); the run goes on with --step eager" in said[0]
    assert "--step eager (the run's own, from its config.json; --step eager: the CUDA-graph step failed" in said[1]
    with tarfile.open(out / "gpu-results.tar.gz") as t:  # the marker comes back with the run, which says how it trained
        assert "the CUDA-graph step failed" in t.extractfile("results/runs/paper500/step-eager.txt").read().decode()
    r = gpu_results(out / "gpu-results.tar.gz", tmp_path)
    assert r.returncode == 0 and "s per training epoch (eager step: the CUDA-graph step failed (rc=1" in r.stdout, r.stdout + r.stderr
