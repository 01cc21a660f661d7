"""nbs/train.ipynb runs headless under papermill, and its parameters are the library's."""
import json
from dataclasses import fields
import pytest
from conftest import REPO

papermill = pytest.importorskip("papermill")
NB = REPO / "nbs" / "train.ipynb"

def test_parameters_cell_matches_train_config():
    "The notebook's parameters are TrainConfig's fields, and their defaults live in TrainConfig only (None here)."
    from attnresnet.config import TrainConfig
    params = papermill.inspect_notebook(str(NB))
    assert list(params) == [f.name for f in fields(TrainConfig)]
    assert all(p["default"] == "None" for p in params.values())

@pytest.mark.papermill
def test_train_notebook_small_run(tmp_path, image_folder, standin):
    run = tmp_path / "run"
    subset = 0 if image_folder == standin else 500  # the stand-in has only 270 training images after validation
    params = dict(data=str(image_folder), width=4, epochs=1, batch_size=64, train_subset=subset, val_fraction=0.1,
                  eval_batch_size=500, run_dir=str(run), progress=True)
    papermill.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                               cwd=str(REPO), progress_bar=False)
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["parameters"]["width"] == 4 and cfg["environment"]["torch"]
    assert m["completed"] and m["epochs"] == 1 and 0 <= m["test_acc"] <= 1
    assert m["splits"]["train"] == (subset or 270) and len(m["confusion_matrix"]) == len(m["classes"])
    assert sum(map(sum, m["confusion_matrix"])) == m["splits"]["test"]
    out = (tmp_path / "out.ipynb").read_text()
    assert "test_acc" in out
    assert "epoch 1/1: loss " in out and "min left" in out  # headless runs print a line per epoch
    assert "widget-view" not in out  # no progress widgets that a headless run would leave at 0%

def test_bad_parameter_fails_before_training(tmp_path):
    "The cell that checks the parameters refuses width=0: no later cell (the model, the data, training) ran."
    with pytest.raises(papermill.PapermillExecutionError, match="width=0"):
        papermill.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), parameters=dict(width=0, run_dir=str(tmp_path / "run")),
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False)
    assert not (tmp_path / "run").exists()
    code = [c for c in json.loads((tmp_path / "out.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(code) if any(o["output_type"] == "error" for o in c["outputs"]))
    assert "make_config(" in "".join(code[failed]["source"])  # the parameters' check
    assert all(c["execution_count"] is None for c in code[failed + 1:])
