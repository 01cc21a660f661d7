"""The grid on real runners: the command file under GNU parallel, the SLURM array script's line picking, and a
stopped grid runner ending its training children."""
import os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from conftest import REPO

from attnresnet.study import ablation_runs, write_commands, collect_results

from attnresnet.data import make_standin_dataset

SBATCH = REPO / "scripts" / "slurm_grid.sbatch"

def _env(tmp_path: Path, **extra) -> dict:
    "This interpreter's folder first on PATH (the command lines name `python`), caches in tmp_path."
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, ATTNRESNET_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg", **extra)

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_standin_dataset(tmp_path_factory.mktemp("data") / "standin", per_class=8, test_per_class=2)

@pytest.mark.runners
@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed (apt-get install parallel)")
def test_gnu_parallel_runs_the_command_file(tmp_path, tiny_data):
    base = tmp_path / "project dir"  # a space in every path; run directories relative to it
    base.mkdir()
    runs = ablation_runs("grid runs", epochs=1, data=str(tiny_data), base_width=4, batch_size=16, val_fraction=0.25,
                         only="full,no_ema", precision="fp32")
    commands = write_commands(runs, tmp_path / "commands.txt", runner="python", base=base)
    assert all(l.startswith("cd ") for l in commands.read_text().splitlines())
    # started from another folder, the file unchanged: each line goes where its relative paths belong
    r = subprocess.run(["parallel", "--will-cite", "--jobs", "2", "--halt", "now,fail=1"], stdin=commands.open(),
                       cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for run in runs: assert (base / run.run_dir / "metrics.json").is_file(), run.run_dir
    assert sorted(x["name"] for x in collect_results(base / "grid runs")) == ["full", "no_ema"]  # the report finds them

@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed (apt-get install parallel)")
def test_gnu_parallel_gpu_per_job_idiom(tmp_path):
    "The README's idiom gives the jobs running at the same time different CUDA_VISIBLE_DEVICES, 0 .. jobs-1."
    lines = ["python -c 'import os, time; time.sleep(0.5); print(os.environ[\"CUDA_VISIBLE_DEVICES\"])'"] * 3
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
    r = subprocess.run(["parallel", "--will-cite", "--jobs", "3", "export CUDA_VISIBLE_DEVICES=$(({%} - 1)); eval {}"],
                       stdin=(tmp_path / "c.txt").open(), env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["0", "1", "2"]

def test_command_file_lines_are_one_run_each(tmp_path):
    runs = ablation_runs("runs/x", epochs=1, base_width=4, seeds=2, only="full,no_ema")
    text = write_commands(runs, tmp_path / "sub" / "c.txt", base="/some where").read_text()
    assert len(text.splitlines()) == len(runs) and len(set(text.splitlines())) == len(runs)
    assert all(l.startswith("cd '/some where' && python -m attnresnet.train ") for l in text.splitlines())
    absolute = ablation_runs(tmp_path / "r", epochs=1, base_width=4, only="full")
    assert write_commands(absolute, tmp_path / "a.txt").read_text().startswith("python -m attnresnet.train ")
    with pytest.raises(ValueError, match="line break"): write_commands(ablation_runs("a\nb", epochs=1, only="full"), tmp_path / "b.txt")

def test_slurm_script_syntax_and_directives():
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0
    text = SBATCH.read_text()
    directives = [l for l in text.splitlines() if l.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:1" in directives
    assert any(l.startswith("#SBATCH --array=") for l in directives)
    assert any("%A_%a" in l for l in directives if "--output" in l)
    assert "--array=1-$(wc -l <" in text  # says how to size the array

def test_slurm_array_index_picks_one_run(tmp_path):
    "Each array index 1..N runs exactly line N of the command file (a fake srun records what it was given)."
    runs = ablation_runs("runs/grid", epochs=1, base_width=4, only="full,no_channel_attention,no_ema")
    commands = write_commands(runs, tmp_path / "runs dir" / "commands.txt", base=tmp_path)
    lines = commands.read_text().splitlines()
    fake = tmp_path / "bin"; fake.mkdir()
    (fake / "srun").write_text('#!/bin/bash\nprintf "%s" "${@: -1}" > "$SRUN_RECORD"\n')  # the line given to bash -c
    (fake / "srun").chmod(0o755)
    picked = []
    for task in range(1, len(lines) + 2):
        record = tmp_path / f"srun{task}.txt"
        env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", SLURM_ARRAY_TASK_ID=str(task),
                   SLURM_SUBMIT_DIR=str(tmp_path), SRUN_RECORD=str(record))
        r = subprocess.run(["bash", str(SBATCH), "runs dir/commands.txt"], env=env, capture_output=True, text=True, timeout=30)
        if task > len(lines):  # past the end: a clear error, nothing run
            assert r.returncode != 0 and "has no line" in r.stderr and not record.exists()
            continue
        assert r.returncode == 0, r.stderr
        picked.append(record.read_text())
    assert picked == lines and len(set(picked)) == len(runs)
    r = subprocess.run(["bash", str(SBATCH)], env={k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--array" in r.stderr

GRID = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started this test
    from attnresnet.study import ablation_runs, run_grid
    runs = ablation_runs(sys.argv[1], epochs=100000, data=sys.argv[2], base_width=4, batch_size=16, only="full", device="cpu")  # a long run, on the CPU by name
    run_grid(runs, runner="python", grace=3)
""")

def _children(pid: int) -> list[int]:
    "Live (not zombie) processes whose parent is `pid`."
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try: stat = (d / "stat").read_text()
        except OSError: continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z": out.append(int(d.name))
    return out

def _alive(pid: int) -> bool:
    try: return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError: return False

def _gone_within(pid: int, seconds: float) -> bool:
    "Whether process `pid` has ended (or is a zombie) within `seconds`."
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline: time.sleep(0.1)
    return not _alive(pid)

@pytest.mark.runners
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_the_grid_ends_its_runs(tmp_path, tiny_data, sig):
    if sig == "SIGKILL" and shutil.which("setpriv") is None: pytest.skip("no setpriv: a grid killed with -9 cannot take its runs along")
    grid = subprocess.Popen([sys.executable, "-c", GRID, str(tmp_path / "runs"), str(tiny_data)], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, child = time.monotonic() + 60, None
        while child is None and time.monotonic() < deadline and grid.poll() is None:
            for pid in _children(grid.pid):
                try: cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes()
                except OSError: continue
                if b"attnresnet.train" in cmd: child = pid
            time.sleep(0.2)
        assert child is not None, f"no training child appeared: {grid.stdout.read() if grid.poll() is not None else ''}"
        time.sleep(1.0)  # let it get going
        assert _alive(child)
        grid.send_signal(getattr(signal, sig))
        grid.wait(timeout=20)
        assert _gone_within(child, 10), f"the training child {child} outlived its grid ({sig})"
    finally:
        if grid.poll() is None: grid.kill()

@pytest.mark.runners
@pytest.mark.papermill
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stopping_ablations_notebook_ends_its_run(tmp_path, tiny_data):
    "Killing `papermill nbs/ablations.ipynb` (SIGTERM) ends the training it started, two levels down (kernel, run)."
    pytest.importorskip("papermill")
    params = dict(runs_dir=tmp_path / "runs", data=tiny_data, epochs=100000, base_width=4, only="full", runner="python",
                  batch_size=16, device="cpu")  # a long run, on the CPU by name (device="auto" would refuse it here)
    job = subprocess.Popen([sys.executable, "-m", "papermill", "--log-level", "WARNING", str(REPO / "nbs" / "ablations.ipynb"),
                            str(tmp_path / "out.ipynb"), *(a for k, v in params.items() for a in ("-p", k, str(v)))],
                           cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def tree(pid): return [q for c in _children(pid) for q in [c, *tree(c)]]
    try:
        deadline, train = time.monotonic() + 120, None
        while train is None and time.monotonic() < deadline and job.poll() is None:
            for pid in tree(job.pid):
                try:
                    if b"attnresnet.train" in (Path("/proc") / str(pid) / "cmdline").read_bytes(): train = pid
                except OSError: pass
            time.sleep(0.3)
        assert train is not None, job.stderr.read() if job.poll() is not None else "no training process after 120 s"
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=20)
        assert _gone_within(train, 15), f"training process {train} outlived the killed ablations notebook"
    finally:
        if job.poll() is None: job.kill()

def test_a_run_that_ends_before_it_starts_is_started_once_more(tmp_path, monkeypatch):
    """A run that exits before writing its `config.json` (a notebook kernel that died as it started: seen once when two
    papermill runs started at the same moment on a loaded machine) is started once more; one that fails after starting,
    or fails again, is reported as failed."""
    from attnresnet import study
    runs = ablation_runs(tmp_path / "runs", epochs=1, only="full,no_ema,width24", base_width=4)
    flaky, broken, late = (str(r.run_dir) for r in runs)
    def argv(run, runner, python="python", notebook=""):
        d = str(run.run_dir)
        script = {flaky: 'if [ -e "$1/tried" ]; then echo {} > "$1/config.json"; echo {} > "$1/metrics.json"; else touch "$1/tried"; exit 3; fi',
                  broken: "exit 4",  # never starts: started twice, then reported
                  late: 'echo {} > "$1/config.json"; exit 5'}[d]  # started, then failed: not started again
        return ["sh", "-c", f'mkdir -p "$1"; {script}', "sh", d]
    monkeypatch.setattr(study, "_argv", argv)
    log = []
    with pytest.raises(RuntimeError) as e: study.run_grid(runs, runner="python", cwd=tmp_path, log=log.append, poll=0.05)
    message = str(e.value)
    assert f"run {broken} failed (exit 4)" in message and f"run {late} failed (exit 5)" in message and flaky not in message
    assert sorted(l for l in log if "once more" in l) == sorted(f"{d} ended before it started (exit {c}); starting it once more"
                                                            for d, c in ((flaky, 3), (broken, 4)))
    assert (tmp_path / flaky / "metrics.json").exists()
