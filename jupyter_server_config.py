# Jupyter server configuration for this repository: notebooks open unmodified in JupyterLab and stay clean when it
# saves them.
#
# Jupyter does not read configuration from the current directory, so name this file's folder when starting it
# (from the repository root, as CONTRIBUTING.md says under "JupyterLab"):
#
#     JUPYTER_CONFIG_PATH=$PWD .venv/bin/jupyter lab nbs/
#
# Before every save, the hook below runs nbdev's own Jupyter hook (`nbdev.clean.clean_jupyter`, enabled by
# `jupyter_hooks = true` under [tool.nbdev] in pyproject.toml) on the notebook model. That is the cleaning
# `nbdev-clean` does, with the same settings: no execution counts, no language_info or other notebook metadata
# beyond kernelspec (whose display_name becomes its name), no cell metadata beyond `tags`, no output metadata.
# Opening a clean notebook and saving it therefore writes the same bytes (tests/test_notebook_save.py).
#
# nbdev's hook alone (what `nbdev-install-hooks` writes into ~/.jupyter) takes the API path, which is relative to
# Jupyter's root directory, for a path relative to the current directory: with `jupyter lab nbs/` it cleans, then
# fails to find the file to trust and logs a traceback on every save; started outside the project, it finds no
# pyproject.toml and cleans nothing. This wrapper hands it the file's path on disk, so the notebook's own
# pyproject.toml decides wherever the server was started.
#
# Opening is the other half. The committed notebooks are nbdev-clean: their kernelspec's display_name is its name
# ("python3") and they have no language_info. On opening a notebook, JupyterLab starts its kernel and writes the
# kernel's display name ("Python 3 (ipykernel)") and language_info into the notebook: a change, so every notebook
# showed the unsaved-changes mark at once, and closing it asked to save. ProjectContentsManager below serves each
# notebook with exactly the metadata JupyterLab is about to set, so nothing changes on opening; saving cleans it off
# again, so the file on disk stays as committed (tests/test_notebook_save.py, scripts/browser_check.py).
#
# nbdev-clean also drops execution counts, so cells whose outputs are committed showed `[ ]:`. The lesson notebooks
# are executed top to bottom by `nbdev-test` (which skips cells marked `#| eval: false` or `#| notest`), so the k-th
# cell it ran had count k: ProjectContentsManager serves those counts (in notebooks that have any outputs at all),
# and saving drops them again.
import os
import re
import sys
import warnings

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager


def nbdev_clean_before_save(model, path, contents_manager, **kwargs):
    "Clean notebook `model` with nbdev before it is saved to API `path` (a ContentsManager pre-save hook)."
    try:
        from nbdev.clean import clean_jupyter
    except ModuleNotFoundError:  # a kernel-only environment without nbdev: save unchanged
        return
    get_os_path = getattr(contents_manager, "_get_os_path", None)  # the file managers' API-to-disk path mapping
    if get_os_path is not None:
        os_path = get_os_path(path)
    else:
        os_path = os.path.join(getattr(contents_manager, "root_dir", "") or os.getcwd(), path)
    try:
        clean_jupyter(path=os_path, model=model, contents_manager=contents_manager, **kwargs)
    except FileNotFoundError:
        # A notebook saved for the first time: nbdev cleans the model first, then trusts the file already on
        # disk, and there is none yet. The model is clean; Jupyter signs what it writes itself.
        pass


def kernel_metadata(kernel_spec_manager, name: str) -> dict | None:
    "Notebook metadata JupyterLab sets once kernel `name` runs (kernelspec, language_info); None if not predictable here."
    try:
        spec = kernel_spec_manager.get_kernel_spec(name)
    except Exception:  # no such kernel: JupyterLab asks which one to use, and nothing can be predicted
        return None
    argv = list(spec.argv)
    # jupyter_client runs a spec's "python"/"python3"/"python3.X" as this very interpreter; ipykernel's language_info
    # is then the one below. Other kernels (another Python, another language) are left as they are.
    this_python = ("python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2], sys.executable)
    if not argv or argv[0] not in this_python or "ipykernel_launcher" not in argv:
        return None
    try:
        from ipykernel.ipkernel import IPythonKernel
    except ImportError:
        return None
    return {"kernelspec": {"name": name, "display_name": spec.display_name, "language": spec.language},
            "language_info": dict(IPythonKernel.language_info)}


_NOT_RUN_BY_NBDEV_TEST = re.compile(r"^#\|\s*(eval:\s*false|notest)\b", re.M)  # notest: tst_flags in pyproject.toml


def with_execution_counts(nb) -> None:
    "Give the code cells of an executed notebook `nb` the counts of a top-to-bottom `nbdev-test` run (in place)."
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if not any(cell.get("outputs") for cell in code) or any(cell.get("execution_count") for cell in code):
        return  # never executed, or it has its own counts
    count = 0
    for cell in code:
        if _NOT_RUN_BY_NBDEV_TEST.search(cell.source):
            continue
        count += 1
        cell.execution_count = count
        for out in cell.get("outputs", []):
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count


class ProjectContentsManager(AsyncLargeFileManager):
    "Jupyter's file manager, serving notebooks with the kernel metadata JupyterLab would add on opening them, and counts."

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if content and model.get("type") == "notebook":
            md = model["content"].metadata
            name = md.get("kernelspec", {}).get("name")
            specs = getattr(self.parent, "kernel_spec_manager", None)  # the server's; a standalone manager makes its own
            if specs is None:
                from jupyter_client.kernelspec import KernelSpecManager
                specs = KernelSpecManager(parent=self)
            extra = kernel_metadata(specs, name) if name else None
            if extra:
                md.update(extra)
            with_execution_counts(model["content"])
        return model


c.ServerApp.contents_manager_class = ProjectContentsManager  # noqa: F821 (`c` is the config Jupyter passes in)
c.ContentsManager.pre_save_hook = nbdev_clean_before_save  # noqa: F821
# The server applies this setting to its contents manager twice, and traitlets warns about replacing a hook by itself
warnings.filterwarnings(
    "ignore", r"Overriding existing pre_save_hook \(nbdev_clean_before_save\) with a new one \(nbdev_clean_before_save\)"
)
