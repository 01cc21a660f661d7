#!/usr/bin/env python
"""What a reader sees: executed notebooks opened in JupyterLab in a real, headless browser.

    python scripts/browser_check.py OUT [--notebooks 00_attention 08_figures train] [--committed 01_models index]
                                        [--executed NB.ipynb ...]

1. Executes the notebooks with papermill into a temporary folder (never into nbs/): `nbs/<name>.ipynb` as it is,
   and `nbs/train.ipynb` with tiny parameters on a generated stand-in image folder. Kernels start without
   MPLBACKEND, as under JupyterLab. `--committed` adds copies of committed notebooks of nbs/ and `--executed` other
   notebooks, both opened as they are.
2. Starts this environment's JupyterLab as README.md says (with this repository's jupyter_server_config.py) on a
   free local port with a random token (settings, workspaces and runtime files in the temporary folder), opens every
   notebook in headless Chromium (Debian's `chromium` package, driven by Playwright; no browser is downloaded),
   waits for its kernel, and checks that the notebook does not show as modified (the unsaved-changes mark on its
   tab), that no cell with outputs shows `[ ]:` instead of its execution count, that every image output is an image the browser decoded (width and height > 0), that the notebook has at
   least its expected number of them, that no output is a figure shown as text (`<Figure size ...>`) and that no
   cell shows an error.
3. Saves a screenshot of each notebook's first screen and of every image output into OUT, writes OUT/summary.json
   and stops the server.

Exit status 0 when every check passes, 1 when one fails, 2 when the check cannot run (no Chromium or Playwright).
"""
from __future__ import annotations
import argparse, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# At least this many images in each notebook (Figures 1-3 in 08_figures; the training curves in train).
MIN_IMAGES = {"00_attention": 0, "08_figures": 3, "train": 1}
COMMITTED = ["01_models", "index"]  # opened as committed: a lesson with outputs, and the home page
TRAIN_PARAMS = dict(width=4, epochs=1, batch_size=32, val_fraction=0.2, progress=False)
JUPYTERLAB_SETTINGS = {  # every cell rendered (no windowing), no news or update pop-ups
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

def find_chromium(explicit: str | None = None) -> str | None:
    "The Chromium binary: `explicit`, $CHROMIUM_PATH, Debian's /usr/lib/chromium/chromium, or one on PATH."
    for c in (explicit, os.environ.get("CHROMIUM_PATH"), "/usr/lib/chromium/chromium"):
        if c and Path(c).is_file(): return c
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

def notebook_outputs(path: Path) -> dict:
    "What the executed notebook file holds: code cells, image outputs, figures shown as text, error outputs."
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    outs = [o for c in code for o in c.get("outputs", [])]
    text = lambda o: "".join(o.get("data", {}).get("text/plain", ""))
    return dict(cells=len(nb["cells"]), images=sum("image/png" in o.get("data", {}) for o in outs),
                figures_as_text=sum(text(o).startswith("<Figure size") and "image/png" not in o.get("data", {}) for o in outs),
                errors=[f"{o.get('ename')}: {o.get('evalue')}" for o in outs if o["output_type"] == "error"])

def execute(names: list[str], work: Path) -> dict[str, Path]:
    "Execute nbs/<name>.ipynb into `work` (train.ipynb with tiny parameters); a failed run keeps its partial output."
    import papermill
    env_backend = os.environ.pop("MPLBACKEND", None)  # kernels inherit the environment: start them as JupyterLab does
    os.environ["ATTNRESNET_CACHE"] = str(work / "cache")  # the stand-in's decoded cache stays out of data/
    out = {}
    try:
        for name in names:
            params = {}
            if name == "train":
                from attnresnet.data import make_standin_dataset
                standin = make_standin_dataset(work / "standin", per_class=20, test_per_class=5)
                params = dict(data=str(standin), run_dir=str(work / "run"), **TRAIN_PARAMS)
            out[name] = work / f"{name}.ipynb"
            t0 = time.perf_counter()
            try:
                papermill.execute_notebook(str(REPO / "nbs" / f"{name}.ipynb"), str(out[name]), parameters=params,
                                           kernel_name="python3", cwd=str(REPO / "nbs"), progress_bar=False)
            except papermill.PapermillExecutionError as e: print(f"{name}: execution failed: {e.ename}: {e.evalue}", file=sys.stderr)
            print(f"executed {name} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    finally:
        if env_backend is not None: os.environ["MPLBACKEND"] = env_backend
    return out

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def start_jupyterlab(root: Path, state: Path, port: int, token: str) -> subprocess.Popen:
    "JupyterLab serving `root` on 127.0.0.1:`port`, its settings and state under `state`; returns once it answers."
    for rel, value in JUPYTERLAB_SETTINGS.items():
        p = state / "settings" / rel; p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(value))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_CONFIG_PATH=str(REPO))  # the project's Jupyter config, as README.md starts JupyterLab
    env.pop("MPLBACKEND", None)
    log = open(state / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None: raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n{(state / 'jupyterlab.log').read_text()[-3000:]}")
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200: return proc
        except OSError: time.sleep(0.5)
    stop_jupyterlab(proc, port, token)
    raise RuntimeError(f"JupyterLab did not answer on port {port} within 120 s")

def stop_jupyterlab(proc: subprocess.Popen, port: int, token: str):
    "Ask the server to shut down (it stops its kernels); terminate its process group if it has not after 20 s."
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(req, timeout=10).close()
    except OSError: pass
    try: proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)

# The active notebook's kernel has started and is idle (JupyterLab has then written what it writes on opening).
KERNEL_READY = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const name = panel && panel.querySelector('.jp-KernelName'), status = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return !!(name && status && !['', 'No Kernel', 'Kernel'].includes(name.innerText.trim()) && status.dataset.status === 'idle');
}"""

# In the active notebook: the unsaved-changes mark, every cell, every image output (decoded size), figures as text, errors.
INSPECT = """async () => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!nb) return null;
  const tab = document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current');
  const imgs = [...nb.querySelectorAll('.jp-OutputArea-output img')];
  const sizes = await Promise.all(imgs.map(i => i.decode().then(() => [i.naturalWidth, i.naturalHeight], () => [0, 0])));
  const outs = [...nb.querySelectorAll('.jp-OutputArea-output')];
  return {
    modified: !!(tab && tab.classList.contains('jp-mod-dirty')),
    blank_prompts: [...nb.querySelectorAll('.jp-CodeCell')].filter(c => c.querySelector('.jp-OutputArea-output')
                        && /^\\s*\\[\\s*\\]:?\\s*$/.test((c.querySelector('.jp-InputPrompt') || {}).innerText || '')).length,
    cells: nb.querySelectorAll('.jp-Cell').length,
    images: sizes,
    figures_as_text: outs.filter(o => !o.querySelector('img') && /^\\s*<Figure size/.test(o.innerText)).length,
    errors: outs.filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr' && /Traceback|Error\\b.*:/.test(o.innerText))
                .map(o => o.innerText.trim().split('\\n').filter(l => /Error|Exception/.test(l)).pop() || o.innerText.slice(0, 200)),
  };
}"""

def check_in_browser(notebooks: dict[str, Path], work: Path, out: Path, chromium: str, timeout_s: float = 120) -> dict:
    "Open each notebook (a path under `work`) in JupyterLab in Chromium; per notebook what the page shows."
    from playwright.sync_api import sync_playwright, TimeoutError as PlaywrightTimeout
    port, token = free_port(), secrets.token_urlsafe(24)
    state = Path(tempfile.mkdtemp(prefix="jupyterlab-", dir=work.parent))
    server = start_jupyterlab(work, state, port, token)
    seen = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                for name, path in notebooks.items():
                    page = browser.new_page(viewport=dict(width=1400, height=1000))
                    url = f"http://127.0.0.1:{port}/lab/tree/{path.relative_to(work).as_posix()}?reset&token={token}"
                    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
                    want = notebook_outputs(path)["cells"]
                    page.wait_for_function(f"""() => {{ const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
                        return nb && nb.querySelectorAll('.jp-Cell').length >= {want}; }}""", timeout=timeout_s * 1000)
                    try: page.wait_for_function(KERNEL_READY, timeout=timeout_s * 1000)
                    except PlaywrightTimeout: kernel_ready = False
                    else: kernel_ready = True
                    page.wait_for_timeout(1500)  # let the last outputs render, and JupyterLab record the kernel's metadata
                    seen[name] = dict(page.evaluate(INSPECT) or {}, kernel_ready=kernel_ready)
                    page.screenshot(path=str(out / f"{name}.png"))
                    shots = []
                    for k, el in enumerate(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output:has(img)").all()):
                        shot = out / f"{name}-image{k + 1}.png"
                        el.evaluate("e => e.scrollIntoView({block: 'center'})")
                        page.wait_for_timeout(300)  # the notebook scrolls its own panel; let it settle
                        el.screenshot(path=str(shot)); shots.append(shot.name)
                    seen[name]["screenshots"] = [f"{name}.png"] + shots
                    page.close()
            finally: browser.close()
    finally: stop_jupyterlab(server, port, token)
    return seen

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for the screenshots and summary.json (created)")
    p.add_argument("--notebooks", nargs="*", default=list(MIN_IMAGES), help=f"notebooks of nbs/ to execute (default: {' '.join(MIN_IMAGES)})")
    p.add_argument("--committed", nargs="*", default=COMMITTED, help=f"notebooks of nbs/ to open as committed (default: {' '.join(COMMITTED)})")
    p.add_argument("--executed", nargs="*", type=Path, default=[], help="executed notebooks to open as they are")
    p.add_argument("--chromium", help="Chromium binary (default: Debian's, or one on PATH)")
    a = p.parse_args(argv)
    chromium = find_chromium(a.chromium)
    if chromium is None: print("no Chromium found: apt-get install chromium (or pass --chromium)", file=sys.stderr); return 2
    try: import playwright.sync_api  # noqa: F401
    except ImportError: print("Playwright is not installed: pip install playwright (a browser download is not needed)", file=sys.stderr); return 2
    for flag, names in (("--notebooks", a.notebooks), ("--committed", a.committed)):
        for n in names:
            if not (REPO / "nbs" / f"{n}.ipynb").is_file(): p.error(f"{flag}: no nbs/{n}.ipynb")
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="browser-check-") as tmp:
        work = Path(tmp) / "notebooks"; work.mkdir()
        notebooks = execute(a.notebooks, work)
        for n in a.committed:
            key = n if n not in notebooks else f"{n} (committed)"
            shutil.copy(REPO / "nbs" / f"{n}.ipynb", work / f"committed-{n}.ipynb")
            notebooks[key] = work / f"committed-{n}.ipynb"
        for nb in a.executed:
            if not nb.is_file(): p.error(f"--executed: no file {nb}")
            shutil.copy(nb, work / nb.name)
            notebooks[nb.stem] = work / nb.name
        seen = check_in_browser(notebooks, work, a.out, chromium)
        summary = {}
        for name, path in notebooks.items():
            f, b = notebook_outputs(path), seen.get(name) or {}
            decoded = [s for s in b.get("images", []) if s[0] > 0 and s[1] > 0]
            problems = [f"{e} (in the file)" for e in f["errors"]] + [f"{e} (shown)" for e in b.get("errors", [])]
            if not b: problems.append("the notebook did not open in JupyterLab")
            elif not b.get("kernel_ready"): problems.append("its kernel did not start (or never became idle)")
            if b.get("modified"): problems.append("opens modified: the unsaved-changes mark shows before anything was done")
            if b.get("blank_prompts"): problems.append(f"{b['blank_prompts']} cell(s) with outputs show `[ ]:`, not their execution count")
            if len(decoded) < len(b.get("images", [])): problems.append(f"{len(b['images']) - len(decoded)} image(s) not decoded by the browser")
            if len(decoded) < max(f["images"], MIN_IMAGES.get(name, 0)):
                problems.append(f"{len(decoded)} image(s) shown, expected {max(f['images'], MIN_IMAGES.get(name, 0))}")
            if f["figures_as_text"] or b.get("figures_as_text"): problems.append("a figure is shown as text (<Figure size ...>), not as an image")
            summary[name] = dict(ok=not problems, problems=problems, modified=b.get("modified"), cells=b.get("cells"), images_in_file=f["images"],
                                 images_shown=[f"{w}x{h}" for w, h in b.get("images", [])], screenshots=b.get("screenshots", []))
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0 if all(s["ok"] for s in summary.values()) else 1

if __name__ == "__main__": sys.exit(main())
