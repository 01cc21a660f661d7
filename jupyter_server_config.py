# Jupyter server configuration for this repository: notebooks stay clean when JupyterLab saves them.
#
# Jupyter does not read configuration from the current directory, so name this file's folder when starting it
# (from the repository root, as README.md says under "Notes on the setup"):
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
import os
import warnings


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


c.ContentsManager.pre_save_hook = nbdev_clean_before_save  # noqa: F821 (`c` is the config Jupyter passes in)
# The server applies this setting to its contents manager twice, and traitlets warns about replacing a hook by itself
warnings.filterwarnings(
    "ignore", r"Overriding existing pre_save_hook \(nbdev_clean_before_save\) with a new one \(nbdev_clean_before_save\)"
)
