"""`RunDir` (nbs/05_runs.ipynb) is the only code that knows a run folder's layout: no other package module builds a path
from one of its file names. Prose that names a file (docstrings, messages, help) is fine; a string that is exactly a
file name, or a `/ "name"` path join, outside runs.py is not."""
import ast
from conftest import REPO

RUN_FILES = {"config.json", "history.csv", "metrics.json", "last.pt", "best.pt", ".lock"}

def layout_literals(source: str) -> list[tuple[int, str]]:
    "(line, name) of every string constant in `source` that is exactly one of the run folder's file names."
    return [(n.lineno, n.value) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in RUN_FILES]

def test_the_check_finds_a_path_join():
    assert layout_literals('p = run / "last.pt"\nq = f"{run / \'best.pt\'}"\nmsg = "resume from last.pt"') == [(1, "last.pt"), (2, "best.pt")]

def test_only_runs_py_knows_the_run_folder_layout():
    found = {p.name: layout_literals(p.read_text()) for p in sorted((REPO / "attnresnet").glob("*.py"))
             if p.name not in ("runs.py", "_modidx.py")}
    assert not {k: v for k, v in found.items() if v}, "use RunDir's properties instead (nbs/05_runs.ipynb)"
    assert layout_literals((REPO / "attnresnet" / "runs.py").read_text())  # and runs.py does
