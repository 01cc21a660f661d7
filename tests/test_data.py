"""What the notebooks cannot show: every exported module runs from plain Python (no nbdev, Jupyter or IPython; fastcore is a runtime dependency)."""
import subprocess, sys

def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)

def test_modules_import_without_dev_tools():
    code = ("import sys, importlib, pkgutil, attnresnet; "  # every module of the package
            "[importlib.import_module('attnresnet.' + m.name) for m in pkgutil.iter_modules(attnresnet.__path__)]; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nbdev', 'execnb', 'IPython')); "
            "print(bad); assert not bad, bad")
    r = _run("-c", code)
    assert r.returncode == 0, r.stdout + r.stderr
