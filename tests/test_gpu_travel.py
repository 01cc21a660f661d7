"""What a GPU machine receives to run the main job with papermill: scripts/travel.sh downloads the Jupyter stack's
wheels (scripts/gpu-jupyter.txt) and scripts/jupyter_env.sh installs them offline into a venv that still sees the
machine's own packages. The machine's python is stood in for by a venv holding one marker module (the GPU machine's
python3 is a venv holding torch).

Checked: the pinned wheels exist for this Python (for 3.12, the GPU machine's, when an interpreter of it is found
here), the install needs no index, papermill runs a notebook whose kernel sees the machine's packages. Not checked:
the GPU machine's own versions of the packages it already has (a wheel that conflicts with one of them would only
show there). Needs PyPI for the download; skipped without it."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

def machine_python() -> str:
    "python3.12 (the GPU machine's version) when one runs here, else this interpreter."
    for cand in [shutil.which("python3.12"), *sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]:
        if cand and subprocess.run([str(cand), "--version"], capture_output=True).returncode == 0: return str(cand)
    return sys.executable

def test_wheels_install_offline_and_papermill_sees_the_machines_packages(tmp_path):
    base = machine_python()
    version = subprocess.run([base, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run(["bash", str(REPO / "scripts" / "travel.sh"), "--no-data", "--python-version", version, "--dest",
                        str(tmp_path / "travel")], capture_output=True, text=True, timeout=600, cwd=REPO,
                       env={**os.environ, "PYTHON": sys.executable})
    if r.returncode != 0 and ("No matching distribution" in r.stderr or "connection" in r.stderr.lower()):
        pytest.skip(f"the wheels could not be downloaded for Python {version}: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    pins = [l for l in (REPO / "scripts" / "gpu-jupyter.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert len(list((tmp_path / "travel" / "wheels").glob("*.whl"))) == len(pins)

    machine = tmp_path / "machine"  # the GPU machine's python: a venv with its own packages (there: torch)
    subprocess.run([base, "-m", "venv", "--without-pip", str(machine)], check=True)
    site = subprocess.run([str(machine / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "machine_marker.py").write_text("WHERE = 'the machine'\n")
    r = subprocess.run(["bash", str(REPO / "scripts" / "jupyter_env.sh"), str(machine / "bin" / "python"),
                        str(tmp_path / "travel" / "wheels"), str(tmp_path / "venv")], capture_output=True, text=True,
                       timeout=600, env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    py = r.stdout.strip().splitlines()[-1]
    assert py == str(tmp_path / "venv" / "bin" / "python")

    nb = tmp_path / "job.ipynb"  # a parameterised notebook whose kernel imports the machine's module
    cell = lambda src, **meta: dict(cell_type="code", metadata=meta, source=src, outputs=[], execution_count=None)
    nb.write_text(json.dumps(dict(nbformat=4, nbformat_minor=5, metadata=dict(kernelspec=dict(name="python3", display_name="Python 3", language="python")),
                                  cells=[cell("n = 1", tags=["parameters"]), cell("import machine_marker; print(machine_marker.WHERE, n * 2)")])))
    r = subprocess.run([py, "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), "-k", "python3", "-p", "n", "21"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "out.ipynb").read_text())["cells"][-1]["outputs"][0]["text"]
    assert "".join(out).strip() == "the machine 42"
