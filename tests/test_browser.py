"""A real browser check: scripts/browser_check.py executes 00_attention, 08_figures and train.ipynb (tiny parameters),
opens them in JupyterLab in headless Chromium and checks that figures are decoded images and no cell shows an
error. A hand-made broken notebook, opened in the same run, shows that the check catches both faults."""
import base64, importlib.util, json, struct, subprocess, sys
import pytest
from conftest import REPO

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

@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "browser_check.py"), str(tmp / "shots"),
                        "--executed", str(broken_notebook(tmp / "broken.ipynb"))], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert (tmp / "shots" / "summary.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads((tmp / "shots" / "summary.json").read_text()), tmp / "shots"

def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])

@pytest.mark.parametrize("name, min_images", [("00_attention", 0), ("08_figures", 7), ("train", 2)])
def test_notebooks_show_their_figures_and_no_error(checked, name, min_images):
    r, summary, shots = checked
    s = summary[name]
    assert s["ok"], s["problems"]
    assert len(s["images_shown"]) >= min_images and s["cells"] > 10, s
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
