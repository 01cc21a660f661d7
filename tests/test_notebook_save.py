"""Notebooks stay clean when JupyterLab saves them.

JupyterLab rewrites a notebook it opens and saves: it adds the kernel's display name and `language_info` to the
notebook metadata, execution counts, cell metadata (`execution` timings, `scrolled`, `jupyter`, `trusted`), output
metadata. `jupyter_server_config.py` at the repository root registers nbdev's pre-save hook (`jupyter_hooks = true`
in pyproject.toml), which cleans the model the way `nbdev-clean` does, so a clean notebook is saved byte for byte
as it was. Jupyter does not read configuration from the current directory: JupyterLab is started with
`JUPYTER_CONFIG_PATH=$PWD` from the repository root (CONTRIBUTING.md, "JupyterLab"), and these tests load the
configuration the same way. Each check is shown to fail without the hook."""
import asyncio, copy, json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from conftest import REPO

pytest.importorskip("nbdev.clean", reason="nbdev is not installed")
pytest.importorskip("jupyter_server", reason="jupyter_server is not installed")
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import ensure_async
from nbdev.clean import clean_nb
from nbdev.config import get_config
from fastcore.nbio import nb2str

CONFIG = REPO / "jupyter_server_config.py"
NOTEBOOKS = ["00_attention.ipynb", "06_train.ipynb", "index.ipynb", "train.ipynb"]  # plain, large, markdown only, papermill tags


@pytest.fixture(autouse=True)
def jupyter_dirs(tmp_path, monkeypatch):
    "Jupyter's user directories in a temporary folder; no JUPYTER_CONFIG_PATH unless a test sets it."
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "jupyter" / var.lower()))
    for var in ("JUPYTER_CONFIG_PATH", "JUPYTER_NO_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)  # as if started from the repository root


def server_app() -> ServerApp:
    "A ServerApp that has read its configuration files exactly as `jupyter lab` does at start-up."
    app = ServerApp()
    app.load_config_file()
    return app


def committed(name: str) -> bytes:
    "The notebook as committed (HEAD), not as another session may be editing it."
    try:
        return subprocess.run(["git", "show", f"HEAD:nbs/{name}"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no git history to read nbs/{name} from: {e}")


def project_copy(tmp_path: Path, name: str, content: bytes) -> Path:
    "A folder with the project's pyproject.toml (nbdev's settings) and nbs/`name`; returns it."
    work = tmp_path / "work"
    (work / "nbs").mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    (work / "nbs" / name).write_bytes(content)
    return work


def nbdev_clean_bytes(nb: dict) -> bytes:
    "What `nbdev-clean` writes for notebook `nb` with this project's settings."
    nb, cfg = copy.deepcopy(nb), get_config(REPO)
    clean_nb(nb, cfg.clear_all, cfg.get("allowed_metadata_keys") or [], cfg.get("allowed_cell_metadata_keys") or [],
             cfg.clean_ids, cfg.get("allowed_out_metadata_keys") or [])
    return nb2str(nb).encode()


def as_jupyterlab_saves(nb: dict) -> dict:
    "Modify notebook content (in place) the way JupyterLab does between opening it, running it and saving it."
    md = nb["metadata"]
    md["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    md["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                           "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                           "pygments_lexer": "ipython3", "version": sys.version.split()[0]}
    count = 0
    for cell in nb["cells"]:
        cell["metadata"].update({"jupyter": {"source_hidden": False, "outputs_hidden": False}, "trusted": True,
                                 "editable": True})
        if cell["cell_type"] != "code":
            continue
        count += 1
        cell["execution_count"] = count
        cell["metadata"].update({"scrolled": False, "execution": {"iopub.execute_input": "2026-11-26T10:00:00.000Z",
                                                                  "shell.execute_reply": "2026-11-26T10:00:01.000Z"}})
        for out in cell.get("outputs", []):
            if "execution_count" in out:
                out["execution_count"] = count
            if "metadata" in out:
                out["metadata"]["isolated"] = True
    return nb


def save_through(cm, path: str, change) -> None:
    "Open `path` through contents manager `cm`, apply `change` to its content, save it back (GET then PUT)."
    model = asyncio.run(ensure_async(cm.get(path)))
    change(model["content"])
    asyncio.run(ensure_async(cm.save({"type": "notebook", "format": "json", "content": model["content"]}, path)))


def test_jupyter_reads_the_config_only_from_the_config_path(monkeypatch):
    "Started from the repository root, Jupyter skips ./jupyter_server_config.py unless JUPYTER_CONFIG_PATH names it."
    assert str(CONFIG) not in server_app().loaded_config_files
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(REPO))
    app = server_app()
    assert str(CONFIG) in app.loaded_config_files, app.loaded_config_files
    assert app.config.ContentsManager.pre_save_hook.__name__ == "nbdev_clean_before_save"


def contents_managers(monkeypatch, root: Path):
    "The contents manager JupyterLab would use on `root`, configured with and without this project's config."
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(REPO))
    with_hook = server_app()
    monkeypatch.delenv("JUPYTER_CONFIG_PATH")
    without = server_app()
    assert with_hook.contents_manager_class.__name__ == "ProjectContentsManager"
    return (with_hook.contents_manager_class(config=with_hook.config, root_dir=str(root)),
            without.contents_manager_class(config=without.config, root_dir=str(root)))


def kernel_reports(name: str = "python3") -> dict:
    "The metadata JupyterLab writes into a notebook once kernel `name` runs: its kernelspec, and the kernel's own language_info."
    from jupyter_client.manager import start_new_kernel
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec(name)
    km, kc = start_new_kernel(kernel_name=name)
    try:
        reply = kc.kernel_info(reply=True, timeout=60)
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)
    return {"kernelspec": {"name": name, "display_name": spec.display_name, "language": spec.language},
            "language_info": reply["content"]["language_info"]}


def test_notebooks_open_as_their_kernel_describes_them(tmp_path, monkeypatch):
    "Served as JupyterLab will find them once their kernel runs, so opening a notebook changes nothing (no unsaved mark)."
    work = tmp_path / "work"
    shutil.copytree(REPO / "nbs", work / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (work / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    cm, cm_default = contents_managers(monkeypatch, work)
    want = kernel_reports()
    names = sorted(p.name for p in (work / "nbs").glob("*.ipynb"))
    assert len(names) > 10
    for name in names:
        md = asyncio.run(ensure_async(cm.get(f"nbs/{name}")))["content"]["metadata"]
        assert {k: md.get(k) for k in want} == want, name
        before = (work / "nbs" / name).read_bytes()
        save_through(cm, f"nbs/{name}", lambda nb: None)  # saved as opened: the file stays as it was
        assert (work / "nbs" / name).read_bytes() == before, name
    # cells with committed outputs show the counts of the top-to-bottom run that made them, not `[ ]:`
    cells = asyncio.run(ensure_async(cm.get("nbs/00_attention.ipynb")))["content"]["cells"]
    counts = [c["execution_count"] for c in cells if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), counts
    results = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"] if o["output_type"] == "execute_result"]
    assert results and all(o["execution_count"] for o in results)
    # Jupyter's own manager serves the committed metadata, which JupyterLab then changes on opening
    md = asyncio.run(ensure_async(cm_default.get(f"nbs/{names[0]}")))["content"]["metadata"]
    assert {k: md.get(k) for k in want} != want


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saving_a_committed_notebook_changes_nothing(tmp_path, monkeypatch, name):
    original = committed(name)
    assert nbdev_clean_bytes(json.loads(original)) == original, f"HEAD:nbs/{name} is not nbdev-clean: run nbdev-clean"
    work = project_copy(tmp_path, name, original)
    cm, cm_without_hook = contents_managers(monkeypatch, work)
    save_through(cm, f"nbs/{name}", as_jupyterlab_saves)
    assert (work / "nbs" / name).read_bytes() == original
    (work / "nbs" / name).write_bytes(original)
    save_through(cm_without_hook, f"nbs/{name}", as_jupyterlab_saves)
    assert (work / "nbs" / name).read_bytes() != original  # the hook is what keeps it clean


PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==\n"


def test_saving_an_executed_notebook_keeps_its_outputs_only(tmp_path, monkeypatch):
    "A notebook committed with outputs (clean) survives a run and save in JupyterLab with the same outputs."
    nb = json.loads(committed("00_attention.ipynb"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    code[0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a line\n", "<object at 0x7f00deadbeef>\n"]}]
    code[1]["outputs"] = [{"output_type": "execute_result", "execution_count": 7, "metadata": {"isolated": True},
                           "data": {"text/plain": ["tensor([1., 2.])"]}},
                          {"output_type": "display_data", "metadata": {"image/png": {"width": 1}},
                           "data": {"image/png": PNG_1x1, "text/plain": ["<InlineFigure 1x1>"]}}]
    original = nbdev_clean_bytes(nb)
    assert b"0x7f00deadbeef" not in original and b'"image/png": {' not in original  # nbdev-clean's view of it
    work = project_copy(tmp_path, "executed.ipynb", original)
    cm, cm_without_hook = contents_managers(monkeypatch, work)
    save_through(cm, "nbs/executed.ipynb", as_jupyterlab_saves)
    assert (work / "nbs" / "executed.ipynb").read_bytes() == original
    assert b"tensor([1., 2.])" in original and b"iVBORw0KGgo" in original
    (work / "nbs" / "executed.ipynb").write_bytes(original)
    save_through(cm_without_hook, "nbs/executed.ipynb", as_jupyterlab_saves)
    assert (work / "nbs" / "executed.ipynb").read_bytes() != original


def test_a_new_notebook_is_saved_clean(tmp_path, monkeypatch):
    "A notebook saved for the first time (no file yet) is cleaned too, and the hook raises no error."
    work = project_copy(tmp_path, "existing.ipynb", committed("index.ipynb"))
    cm, _ = contents_managers(monkeypatch, work)
    nb = as_jupyterlab_saves(json.loads(committed("train.ipynb")))
    hook = cm.pre_save_hook
    model = {"type": "notebook", "format": "json", "content": copy.deepcopy(nb)}
    hook(model=model, path="nbs/new.ipynb", contents_manager=cm)  # raises nothing although nbs/new.ipynb is missing
    asyncio.run(ensure_async(cm.save({"type": "notebook", "format": "json", "content": nb}, "nbs/new.ipynb")))
    assert (work / "nbs" / "new.ipynb").read_bytes() == committed("train.ipynb")


# The real thing: JupyterLab started from the repository root as README.md says, a notebook saved through its REST API.

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, token: str, path: str, method: str = "GET", body: dict | None = None, timeout: float = 10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def start_jupyterlab(root: Path, logs: Path, config_path: bool):
    "JupyterLab started in the repository root, serving `root`; (process, port, token) once it answers, else fail (the project's config may be what broke it)."
    port, token = free_port(), secrets.token_urlsafe(16)
    env = dict(os.environ)
    env.pop("JUPYTER_CONFIG_PATH", None)
    if config_path:
        env["JUPYTER_CONFIG_PATH"] = str(REPO)
    log = open(logs, "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             str(root)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited ({proc.returncode}): {logs.read_text()[-2000:]}")
        try:
            api(port, token, "/api/status", timeout=2)
            return proc, port, token
        except OSError:
            time.sleep(0.3)
    stop(proc, port, token)
    pytest.fail(f"JupyterLab did not answer within 60 s: {logs.read_text()[-2000:]}")


def stop(proc, port, token):
    try:
        api(port, token, "/api/shutdown", method="POST")
    except OSError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


@pytest.mark.jupyterlab
@pytest.mark.parametrize("config_path", [True, False], ids=["JUPYTER_CONFIG_PATH=repo", "plain"])
def test_jupyterlab_saves_a_notebook_clean(tmp_path, config_path):
    name = "00_attention.ipynb"
    original = committed(name)
    work = project_copy(tmp_path, name, original)
    proc, port, token = start_jupyterlab(work, tmp_path / "jupyterlab.log", config_path)
    try:
        model = api(port, token, f"/api/contents/nbs/{name}?content=1")
        api(port, token, f"/api/contents/nbs/{name}", method="PUT",
            body={"type": "notebook", "format": "json", "content": as_jupyterlab_saves(model["content"])})
    finally:
        stop(proc, port, token)
    saved = (work / "nbs" / name).read_bytes()
    log = (tmp_path / "jupyterlab.log").read_text()
    if config_path:
        assert saved == original, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    else:  # Jupyter does not read ./jupyter_server_config.py by itself: nothing cleans the notebook
        assert saved != original and b"language_info" in saved
