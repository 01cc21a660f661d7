"""Unpack what `scripts/gpu_run.sh` brought back into results/gpu/<date>-<card>/, draw Figure 4 of its longest run, and
print the summary the README's "Results on a GPU" section is written from. Ablation-grid runs (grid-<E>ep/) are added
to results/gpu/grid-<E>ep/ instead, beside the runs of that budget from earlier sessions, and the grid's figures and
tables (grid-<E>ep/figures/) become figures/, the set the README shows (the set they replace stays beside its runs).
The fast recipe's sweep (sweep-<S>s/) grows the same way in results/gpu/sweep-<S>s/, whose sweep.md is rewritten from
all of its runs.

    python scripts/gpu_results.py gpu-results.tar.gz [--dest results/gpu] [--figures figures]
"""
import argparse, json, re, shutil, sys, tarfile, tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from attnresnet.runs import RunDir  # noqa: E402
from attnresnet.bench_flops import train_flops  # noqa: E402
from attnresnet.figures import save_figure  # noqa: E402
from attnresnet.charts import plot_history  # noqa: E402
from attnresnet.reference import load_reference  # noqa: E402
from attnresnet.study import write_sweep_table  # noqa: E402

GROWING = ("grid-*ep", "sweep-*s")  # folders whose runs accumulate lease by lease in --dest, not in the dated folder

def card_and_date(results: Path) -> tuple[str, str]:
    "The GPU name (or 'cpu') and the UTC date of the run, from the env step's log."
    env = (results / "env.log").read_text()
    card = re.search(r"^card (.+?) \d+ SMs", env, re.M)
    date = re.search(r"\b(\w{3}) (\w{3}) +(\d+) [\d:]+(?: [AP]M)? UTC (\d{4})", env)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    day = f"{date[4]}-{months.index(date[2]) + 1:02d}-{int(date[3]):02d}" if date else "undated"
    name = card[1].replace("NVIDIA ", "").replace(" ", "-") if card else "cpu"
    return name, day

def name_work_folder(results: Path):
    "Write the GPU machine's scratch folder (a temporary path, from steps.txt) as `<work>` in the copied text files."
    work = re.search(r", work (\S+)$", (results / "steps.txt").read_text().splitlines()[0])
    if not work: return
    for f in results.rglob("*"):
        if f.suffix in (".txt", ".log", ".json", ".csv", ".md") and work[1] in (text := f.read_text()):
            f.write_text(text.replace(work[1], "<work>"))

def merge_growing(results: Path, parent: Path) -> list[Path]:
    "Add the finished runs of `results`'s growing folders (grid-<E>ep/<configuration>/seed<k>/, sweep-<S>s/<setting>/seed<k>/) that `parent` lacks; returns them."
    added = []
    for run in sorted(run for pattern in GROWING for run in results.glob(f"{pattern}/*/seed*")):
        target = parent / run.relative_to(results)
        if RunDir(run).finished and not RunDir(target).finished:
            if target.exists(): shutil.rmtree(target)  # an unfinished copy
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("*.pt", "*.tmp"))
            added.append(target)
    return added

def publish_figures(results: Path, parent: Path, figures: Path) -> Path | None:
    """The grid's figure set that came back (grid-<E>ep/figures/, drawn by nbs/report.ipynb on the GPU machine) replaces
    parent/grid-<E>ep/figures/ and becomes `figures` (the set the README shows). The set `figures` held before is kept
    beside its own runs (<its runs_dir>/figures/, from its source.json) unless it came from this grid. Returns the new set."""
    sets = sorted(results.glob("grid-*ep/figures/table3_ablations.md"))
    if not sets: return None
    new = sets[-1].parent
    grid_figures = parent / new.relative_to(results)
    if grid_figures.exists(): shutil.rmtree(grid_figures)
    shutil.copytree(new, grid_figures)
    here = str(parent.relative_to(REPO)) if parent.resolve().is_relative_to(REPO) else str(parent)
    def local(path):  # the GPU machine's paths, as this checkout names the same folders
        if not path: return path
        if path.startswith("<work>/results/"): return f"{here}/{path.removeprefix('<work>/results/')}"
        return path[path.index("results/"):] if "results/" in path else path
    record = json.loads((grid_figures / "source.json").read_text())
    (grid_figures / "source.json").write_text(json.dumps({k: local(v) for k, v in record.items()}, indent=1) + "\n")
    source = figures / "source.json"
    if source.exists():
        old_runs = Path(json.loads(source.read_text())["runs_dir"])
        old_runs = old_runs if old_runs.is_absolute() else REPO / old_runs
        if old_runs.is_dir() and old_runs.resolve() != grid_figures.parent.resolve():  # another grid's set: kept with its runs
            if (old_runs / "figures").exists(): shutil.rmtree(old_runs / "figures")
            shutil.copytree(figures, old_runs / "figures")
    if figures.exists(): shutil.rmtree(figures)
    shutil.copytree(grid_figures, figures)
    return grid_figures

def trained(results: Path) -> list[RunDir]:
    "The training runs that came back with at least one epoch: finished, or stopped by a lease's end (paper500)."
    runs = [RunDir(r) for r in sorted((results / "runs").iterdir())] if (results / "runs").exists() else []
    return [r for r in runs if r.started and r.history_file.exists() and r.history]

def curve_title(run: RunDir) -> str:
    "What Figure 4 of `run` shows: network, recipe, epochs (of those planned, when unfinished) and card."
    rec = run.config_record; p = rec["parameters"]
    epochs = f"{run.metrics['epochs']} epochs" if run.finished else f"{len(run.history)} of {p['epochs']} epochs (unfinished)"
    return f"{p['model']}, {p.get('recipe', 'paper')} recipe, {epochs} on {rec['environment']['device_name']}"

def summary(results: Path, peak_bf16: float | None) -> list[str]:
    "One markdown line per training run: epochs, accuracies, epoch time, images/s, share of the bf16 peak."
    lines = []
    for run in trained(results):
        h = run.history
        best = lambda k: max((r[k] for r in h if k in r), default=float("nan"))
        validation = f"{100 * best('val_acc_raw'):.2f}% raw / {100 * best('val_acc_ema'):.2f}% EMA"
        epoch_s = sum(r["seconds"] for r in h) / len(h)
        marker = run.path / "step-eager.txt"  # gpu_run.sh's: the CUDA-graph step failed there, and the run went on eagerly
        per_epoch = f"{epoch_s:.1f} s per training epoch" + (f" (eager step: {marker.read_text().strip()})" if marker.exists() else "")
        if not run.finished:  # stopped at a lease's end: no test yet, the run resumes on a later command
            rec = run.config_record
            lines.append(f"- `{run.path.name}` ({rec['parameters'].get('recipe', 'paper')} recipe, {rec['environment']['device_name']}, "
                         f"{rec['precision']}): unfinished, {len(h)} of {rec['parameters']['epochs']} epochs, best validation so far "
                         f"{validation}; {per_epoch}")
            continue
        m = run.metrics
        tta = f" ({100 * m['test_acc_tta']:.2f}% with flip TTA)" if m.get("test_acc_tta") is not None else ""
        flops = train_flops(run.config, len(m["classes"]))  # the run's own network (width, model), its useful work
        share = f", {100 * m['images_per_s'] * flops / (peak_bf16 * 1e12):.1f}% of the measured bf16 peak" if peak_bf16 else ""
        lines.append(f"- `{run.path.name}` ({m.get('recipe', 'paper')} recipe, {m['device_name']}, {m['precision']}): {m['epochs']} epochs, best validation "
                     f"{validation} (chosen: {m['chosen_weights']}, "
                     f"epoch {m['best_epoch']}), test {100 * m['test_acc']:.2f}%{tta}; "
                     f"{per_epoch}, {m['images_per_s']:,.0f} images/s{share}; "
                     f"wall {m['wall_time_s']:.0f} s")
    return lines

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archive", help="gpu-results.tar.gz from scripts/gpu_run.sh")
    p.add_argument("--dest", default=str(REPO / "results" / "gpu"), help="parent folder (default results/gpu)")
    p.add_argument("--figures", default=str(REPO / "figures"), help="where a grid's figure set that came back is published (default figures/)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(a.archive) as t: t.extractall(tmp, filter="data")
        results = Path(tmp) / "results"
        card, day = card_and_date(results)
        name_work_folder(results)
        dest, n = Path(a.dest) / f"{day}-{card}", 1
        while dest.exists(): n += 1; dest = Path(a.dest) / f"{day}-{card}-{n}"  # a second run on the same day and card
        shutil.copytree(results, dest, ignore=shutil.ignore_patterns("*.pt", "*.tmp", *GROWING))
        grid = merge_growing(results, Path(a.dest))
        sweeps = [write_sweep_table(Path(a.dest) / d.name) for d in sorted(results.glob("sweep-*s")) if (Path(a.dest) / d.name).is_dir()]
        published = publish_figures(results, Path(a.dest), Path(a.figures))
    bench = (dest / "bench.md").read_text() if (dest / "bench.md").exists() else ""
    peak = re.search(r"bf16 ([\d.]+) TFLOP/s", bench)
    runs = trained(dest)
    if runs:
        longest = max(runs, key=lambda r: len(r.history))  # an unfinished paper500 too, when it trained the most epochs
        rec = longest.config_record
        ax = plot_history(longest.history, curve_title(longest), reference=load_reference())  # the authors' 500-epoch curve beside it
        if not longest.finished: ax.set_xlim(0, rec["parameters"]["epochs"])  # the planned length: how far the run got
        ax.figure.set_size_inches(13, 6); ax.figure.subplots_adjust(left=0.06, right=0.94, bottom=0.33)
        ax.figure.text(0.01, 0.01, f"{rec['splits']['train']:,} training / {rec['splits']['val']:,} validation images of "
                       f"{rec['data_source'].split(' (')[0]}; {longest.path.name}", fontsize=7, color="#555555")
        save_figure(ax.figure, dest / "fig4_training_curves")
    print(f"results in {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
    print("\n".join(summary(dest, float(peak[1]) if peak else None)))
    for run in grid: print(f"- {'sweep' if run.parts[-3].startswith('sweep-') else 'grid'} run added: {run.relative_to(REPO) if run.is_relative_to(REPO) else run}")
    for table in sweeps: print(f"- the sweep's table, from all its runs: {table.relative_to(REPO) if table.is_relative_to(REPO) else table}")
    if published: print(f"- figures and tables of the grid: {published}, now also {a.figures}")

if __name__ == "__main__": main()
