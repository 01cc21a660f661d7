"""The fast recipe against the paper's at the same wall-clock budget, on this machine, several seeds.

    python scripts/recipe_evidence.py [--budget 240] [--seeds 3] [--width 8] [--train-subset 10000] [--out results/cpu/recipes]

For each seed the two recipes train side by side (one process each, `torch.set_num_threads(threads)` each), so both see
the same machine load; each gets `--budget` seconds for its epochs (`TrainConfig.time_budget`). The table of test
accuracies (mean with n, SD and t-based 95% CI over seeds; the paired differences likewise) goes to OUT/table.md; every run directory stays in OUT (checkpoints are
git-ignored).
"""
import argparse, os, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from attnresnet.runs import RunDir  # noqa: E402
from attnresnet.study import mean_std  # noqa: E402  (n beside every mean; SD and a t-based 95% CI only from n = 3)

def train_command(recipe: str, seed: int, a) -> list[str]:
    return [sys.executable, "-m", "attnresnet.train", "--recipe", recipe, "--seed", str(seed), "--width", str(a.width),
            "--train-subset", str(a.train_subset), "--data", a.data, "--time-budget", str(a.budget), "--epochs", "500",
            "--run-dir", f"{a.out}/{recipe}-seed{seed}", "--progress", "true", "--tta", "true"]  # relative to the repository: no machine paths in configs

def table(out: Path, recipes: list[str], seeds: int) -> str:
    "Markdown table: per recipe, epochs trained, best validation and test accuracy over seeds (`mean_std`: n, and SD and 95% CI from n = 3), images/s of each seed."
    fmt = mean_std
    rows = ["| recipe | seeds | epochs (each seed) | best validation (%) | test (%) | test, flip TTA (%) | images/s (each seed) |",
            "|---|---|---|---|---|---|---|"]
    for r in recipes:
        ms = [RunDir(out / f"{r}-seed{s}").metrics for s in range(seeds) if RunDir(out / f"{r}-seed{s}").finished]
        if not ms: continue
        rows.append(f"| {r} | {len(ms)} | {', '.join(str(m['epochs']) for m in ms)} | {fmt([m['best_val_acc'] for m in ms])} | "
                    f"{fmt([m['test_acc'] for m in ms])} | {fmt([m['test_acc_tta'] for m in ms])} | "
                    f"{', '.join(format(m['images_per_s'], ',.0f') for m in ms)} |")  # no mean: the seeds ran under different loads
    return "\n".join(rows)

def paired_table(out: Path, seeds: int) -> str:
    "Per seed, the two recipes side by side (they trained at the same time, under the same machine load)."
    rows = ["| seed | epochs, paper / fast | test, paper (%) | test, fast (%) | fast - paper (points) |", "|---|---|---|---|---|"]
    diffs = []
    for s in range(seeds):
        p, f = (RunDir(out / f"{r}-seed{s}").metrics for r in ("paper", "fast"))
        rows.append(f"| {s} | {p['epochs']} / {f['epochs']} | {100 * p['test_acc']:.2f} | {100 * f['test_acc']:.2f} | "
                    f"{100 * (f['test_acc'] - p['test_acc']):+.2f} |")
        diffs.append(f["test_acc"] - p["test_acc"])
    rows.append(f"| all | | | | {mean_std(diffs)} |")
    return "\n".join(rows)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=240, help="seconds for each run's epochs (default 240)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (two runs at a time)")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg", help="relative to the repository, or absolute")
    p.add_argument("--out", default="results/cpu/recipes", help="relative to the repository, or absolute")
    p.add_argument("--table-only", action="store_true", help="only rebuild OUT/table.md from the runs already there")
    p.add_argument("--note", default="", help="a sentence about the circumstances (machine load, ...) for the table's note")
    a = p.parse_args(argv)
    out = REPO / a.out; out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(REPO)}
    recipes = ["paper", "fast"]
    for seed in range(0 if a.table_only else a.seeds):
        procs = [subprocess.Popen(train_command(r, seed, a), env=env, cwd=REPO, stdout=open(out / f"{r}-seed{seed}.log", "w"),
                                  stderr=subprocess.STDOUT) for r in recipes]
        for r, pr in zip(recipes, procs):
            if pr.wait(): sys.exit(f"{r} seed {seed} failed: see {out / f'{r}-seed{seed}.log'}")
    note = (f"\n\n*Scale: width {a.width}, {a.train_subset:,} training images of {Path(a.data).name}, {a.budget:.0f} s for each "
            f"run's epochs (training and validation), two runs at a time with {a.threads} thread(s) each, "
            f"{os.cpu_count()}-core CPU; seeds 0-{a.seeds - 1}.{' ' + a.note if a.note else ''}*\n")
    text = table(out, recipes, a.seeds) + "\n\n" + paired_table(out, a.seeds) + note
    (out / "table.md").write_text(text)
    print(text)

if __name__ == "__main__": main()
