"""The whole chain at the smallest scale: ablations.ipynb runs the grid, report.ipynb turns it into figures and
tables, in temporary folders (never the committed figures/), and the outputs agree with the runs."""
import json
import pytest
from conftest import REPO

papermill = pytest.importorskip("papermill")

def _execute(nb, out, **params):
    papermill.execute_notebook(str(REPO / "nbs" / nb), str(out), parameters=params, kernel_name="python3", cwd=str(REPO),
                               progress_bar=False)

@pytest.mark.papermill
def test_ablations_then_report(tmp_path, standin):
    runs, figs = tmp_path / "runs", tmp_path / "figures"
    committed = {p: p.read_bytes() for p in (REPO / "figures").glob("*")}
    grid = dict(runs_dir=str(runs), epochs=1, seeds=1, data=str(standin), base_width=4, batch_size=32, runner="python")  # papermill runs of train.ipynb: test_train_notebook
    _execute("ablations.ipynb", tmp_path / "ablations.ipynb", **grid)
    metrics = {p.parent.parent.name: json.loads(p.read_text()) for p in runs.glob("*/seed0/metrics.json")}
    from attnresnet.study import ABLATION_NAMES
    assert sorted(metrics) == sorted(ABLATION_NAMES)

    # a second pass trains nothing: no run directory changes
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")}
    _execute("ablations.ipynb", tmp_path / "again.ipynb", **grid)
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")} == stamps
    assert "0 to run" in (tmp_path / "again.ipynb").read_text()

    _execute("report.ipynb", tmp_path / "report.ipynb", runs_dir=str(runs), figures_dir=str(figs), n_gate_images=32, n_map_images=3)
    for stem in ("fig1_architecture", "fig2_dual_attention", "fig3_spatial_attention", "fig4_training_curves", "confusion_matrix"):
        for ext in ("png", "svg"): assert (figs / f"{stem}.{ext}").stat().st_size > 1000, stem
    tables = {p.name: p.read_text() for p in figs.glob("*.md")}
    assert sorted(tables) == ["table1_architecture.md", "table2_specifications.md", "table3_ablations.md", "table4_per_class.md"]
    for text in tables.values(): assert "1 epochs" in text and "Scale:" in text  # every table states its scale
    t3 = tables["table3_ablations.md"]
    for name, m in metrics.items():
        row = next(l for l in t3.splitlines() if l.startswith(f"| {name} |"))
        assert f"| {100 * m['test_acc']:.2f} (n = 1) |" in row and f"| {m['parameters']:,} |" in row  # one seed: a mean with its n
        if m["authors_measure"]: assert f"| {100 * m['authors_measure']['best_val_acc_ema']:.2f} (n = 1) |" in row  # the authors' measure too
    assert f"{metrics['full']['parameters']:,}" in tables["table2_specifications.md"]
    assert {p: p.read_bytes() for p in (REPO / "figures").glob("*")} == committed  # the committed figures/ are untouched

def test_ablations_dry_run_writes_commands(tmp_path, standin):
    out = tmp_path / "runs.txt"
    _execute("ablations.ipynb", tmp_path / "list.ipynb", runs_dir=str(tmp_path / "runs"), data=str(standin), seeds=2,
             dry_run=True, runner="python", commands_file=str(out))
    lines = out.read_text().splitlines()
    from attnresnet.study import ABLATION_NAMES
    assert len(lines) == 2 * len(ABLATION_NAMES)
    assert all(l.startswith("python -m attnresnet.train ") and "--run-dir" in l for l in lines)
    assert not (tmp_path / "runs").exists()  # nothing trained
