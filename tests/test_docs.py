"""The documentation builds up to Quarto. `nbdev-docs` is nbdev's notebook processing followed by `quarto render`;
Quarto cannot be installed here, so this runs the processing (`nbdev.quarto.proc_nbs`, what `nbdev-docs` and
`nbdev-proc-nbs` run before Quarto; the command itself first tries to download Quarto) on a copy of the project
and checks every notebook goes through. It also checks that README.md is nbs/index.ipynb rendered (nbconvert's
markdown exporter, code hidden; CONTRIBUTING.md has the command), that the committed outputs of index.ipynb are what
executing it gives now, and that nbdev-readme (which needs Quarto) leaves README.md alone."""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import REPO

pytest.importorskip("nbdev")

NOTEBOOKS = sorted(p.name for p in (REPO / "nbs").glob("*.ipynb"))
# Notebooks that other work owns and that do not go through yet, with the reason; remove an entry once fixed.
KNOWN_FAILURES = {}  # notebook name -> why it cannot be processed yet

PROCESS = r"""
import json, re, sys
from pathlib import Path
from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar, proc_nbs
refresh_quarto_yml()                 # nbs/_quarto.yml and nbs/nbdev.yml from pyproject.toml
nbdev_sidebar.__wrapped__()          # nbs/sidebar.yml
res = {}
for nb in sorted(Path("nbs").glob("*.ipynb")):   # one at a time, so that one failure does not hide the others
    try:
        proc_nbs(n_workers=0, file_re=f"^{re.escape(nb.stem)}\\.ipynb$")
        res[nb.name] = "ok"
    except Exception as e: res[nb.name] = f"{type(e).__name__}: {str(e)[-1500:]}"
print("RESULTS " + json.dumps(res))
"""

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    "A copy of the project's notebooks, settings and README (the processing writes next to them)."
    d = tmp_path_factory.mktemp("docs") / "attnresnet"
    shutil.copytree(REPO / "nbs", d / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_quarto.yml", "nbdev.yml", "sidebar.yml"))
    for f in ("pyproject.toml", "README.md"): shutil.copy2(REPO / f, d / f)
    return d

@pytest.fixture(scope="module")
def processed(project) -> dict:
    "Run the docs processing once; per notebook 'ok' or the error."
    r = subprocess.run([sys.executable, "-c", PROCESS], cwd=project, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])

@pytest.mark.parametrize("nb", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[n])) if n in KNOWN_FAILURES
                                else n for n in NOTEBOOKS])
def test_notebook_processes_for_docs(nb, processed, project):
    assert processed[nb] == "ok", processed[nb]
    assert (project / "_proc" / nb).stat().st_size > 0

def test_site_settings(processed, project):
    nbdev_yml = (project / "_proc" / "nbdev.yml").read_text()
    assert 'repo-url: "https://github.com/attnresnet/attnresnet"' in nbdev_yml
    assert "repo-branch: main" in nbdev_yml
    assert (project / "_proc" / "index.ipynb").exists()  # the site's home page
    sidebar = (project / "_proc" / "sidebar.yml").read_text()
    assert all(n in sidebar for n in ("00_attention.ipynb", "08_figures.ipynb", "10_predict.ipynb"))

README_MAX_LINES = 160

def render_readme(nb_path) -> str:
    "README.md as CONTRIBUTING.md's command makes it: the notebook's markdown and outputs, its code hidden."
    from nbconvert import MarkdownExporter
    return MarkdownExporter(exclude_input=True).from_filename(str(nb_path))[0]

REGENERATE = "regenerate README.md from nbs/index.ipynb (CONTRIBUTING.md, 'README.md')"

def test_readme_is_rendered_index():
    assert (REPO / "README.md").read_text() == render_readme(REPO / "nbs" / "index.ipynb"), f"README.md differs: {REGENERATE}"

def test_readme_is_short():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines, at most {README_MAX_LINES}: move detail to CONTRIBUTING.md, results/LOG.md..."

def test_readme_lists_every_lesson_notebook():
    "The README's 'Where is what' table names every lesson notebook with its module (a new notebook went unlisted once)."
    text = (REPO / "README.md").read_text()
    lessons = [p.stem for p in sorted((REPO / "nbs").glob("[0-9]*.ipynb"))]
    missing = [n for n in lessons if f"| `{n}` |" not in text]
    assert not missing, f"README.md's table 'Where is what' lacks {missing}: add a row to nbs/index.ipynb, then {REGENERATE}"

def test_readme_has_no_internal_words():
    text = (REPO / "README.md").read_text().lower()
    found = [w for w in ("lent gpu", "quarter-hour", "design card", "issue ", "this session") if w in text]
    assert not found, f"README.md uses internal words {found}: say what a user needs instead"

def test_index_outputs_are_current(tmp_path):
    "Executing index.ipynb now (it reads the committed result files) renders the committed README.md: no stale number."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(REPO / "nbs" / "index.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "nbs")}}).execute()
    nbformat.write(nb, tmp_path / "index.ipynb")
    assert render_readme(tmp_path / "index.ipynb") == (REPO / "README.md").read_text(), \
        f"index.ipynb's outputs are stale (a result file changed): execute it, then {REGENERATE}"

def test_nbdev_readme_leaves_readme_alone(project):
    before = (project / "README.md").read_bytes()
    r = subprocess.run([str(Path(sys.executable).parent / "nbdev-readme")], cwd=project, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (project / "README.md").read_bytes() == before
