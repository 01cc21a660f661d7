"""A real browser check: scripts/browser_check.py executes 00_attention, 08_figures and train.ipynb (tiny parameters),
opens them and the committed 01_models and index in JupyterLab in headless Chromium, and checks that no notebook
opens modified, figures are decoded images and no cell shows an error. Hand-made broken notebooks, opened in the same
run, show that the check catches each fault."""
import importlib.util, json, os, struct, subprocess, sys
import pytest
from conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.jupyterlab, pytest.mark.papermill]
# The slow tier gives each test file to one pytest-xdist worker (--dist loadfile): the module's checks share one JupyterLab
# and one Chromium (`checked`, below).

spec = importlib.util.spec_from_file_location("browser_check", REPO / "scripts" / "browser_check.py")
browser_check = importlib.util.module_from_spec(spec); spec.loader.exec_module(browser_check)
if browser_check.find_chromium() is None:
    pytest.skip("no Chromium: apt-get install chromium (Debian's package; .ci/run installs it where apt works)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright; no browser download needed)")

PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

def broken_notebook(path):
    "An executed notebook with a failed cell, a figure shown as text, and one real image."
    def code(outputs): return dict(cell_type="code", execution_count=1, metadata={}, outputs=outputs, source="x")
    cells = [dict(cell_type="markdown", metadata={}, source="# Broken"),
             code([dict(output_type="error", ename="ValueError", evalue="boom",
                        traceback=["\x1b[0;31mValueError\x1b[0m   Traceback (most recent call last)", "\x1b[0;31mValueError\x1b[0m: boom"])]),
             code([dict(output_type="execute_result", execution_count=1, metadata={}, data={"text/plain": "<Figure size 640x480 with 1 Axes>"})]),
             code([dict(output_type="display_data", metadata={}, data={"image/png": PNG_1x1, "text/plain": "<Figure size 1x1>"})])]
    path.write_text(json.dumps(dict(cells=cells, metadata=dict(kernelspec=dict(name="python3", display_name="python3", language="python")),
                                    nbformat=4, nbformat_minor=5)))
    return path

def unpredictable_kernel(jupyter_path, notebook):
    "A kernel (Python behind `env`) whose metadata the project's config cannot foresee, and a notebook that uses it."
    spec = jupyter_path / "kernels" / "wrapped"; spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(dict(argv=["env", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                                      display_name="Wrapped Python", language="python")))
    cells = [dict(cell_type="markdown", metadata={}, source="# Opens modified")]
    notebook.write_text(json.dumps(dict(cells=cells, metadata=dict(kernelspec=dict(name="wrapped", display_name="wrapped", language="python")),
                                        nbformat=4, nbformat_minor=5)))
    return notebook

_checked = {}  # the check's result, once per process: an xdist worker may set a module's fixture up again between its tests

@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    if "result" not in _checked: _checked["result"] = _browser_check(tmp_path_factory)
    return _checked["result"]

def _browser_check(tmp_path_factory):
    "Run scripts/browser_check.py once over the lesson notebooks and the two hand-made broken ones."
    tmp = tmp_path_factory.mktemp("browser")
    unpredictable = unpredictable_kernel(tmp / "jupyter", tmp / "modified.ipynb")
    env = dict(os.environ, JUPYTER_PATH=os.pathsep.join(filter(None, [str(tmp / "jupyter"), os.environ.get("JUPYTER_PATH")])))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "browser_check.py"), str(tmp / "shots"),
                        "--executed", str(broken_notebook(tmp / "broken.ipynb")), str(unpredictable)],
                       capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert (tmp / "shots" / "summary.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads((tmp / "shots" / "summary.json").read_text()), tmp / "shots"

def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])

@pytest.mark.parametrize("name, min_images, min_cells", [("00_attention", 0, 10), ("08_figures", 5, 10), ("train", 2, 10),
                                                        ("01_models", 0, 10), ("index", 0, 0)])
def test_notebooks_open_unmodified_and_show_their_figures_and_no_error(checked, name, min_images, min_cells):
    r, summary, shots = checked
    s = summary[name]
    assert s["ok"], s["problems"]
    assert s["modified"] is False, s
    assert len(s["images_shown"]) >= min_images and s["cells"] > min_cells, s
    for shot in s["screenshots"]:
        w, h = png_size(shots / shot)
        assert w > 100 and h > 50, (shot, w, h)

def test_the_check_catches_errors_and_text_figures(checked):
    r, summary, _ = checked
    assert r.returncode == 1  # the broken notebook fails the run
    problems = summary["broken"]["problems"]
    assert "ValueError: boom (in the file)" in problems and any("boom" in p and "(shown)" in p for p in problems), problems
    assert any("shown as text" in p for p in problems), problems
    assert summary["broken"]["images_shown"] == ["1x1"]

def test_the_check_catches_a_notebook_that_opens_modified(checked):
    r, summary, _ = checked
    s = summary["modified"]
    assert s["modified"] is True and not s["ok"], s
    assert any("opens modified" in p for p in s["problems"]), s["problems"]
    assert summary["broken"]["modified"] is False  # its kernel is the project's: it opens clean, with its faults
