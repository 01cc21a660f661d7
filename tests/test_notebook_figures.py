"""Figures show as images when a kernel executes 08_figures.ipynb (JupyterLab, papermill and HTML exports all
read the cell outputs), whichever matplotlib backend the kernel starts with."""
import base64, os, struct
import pytest
from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

def png_size(b64: str) -> tuple[int, int]:
    "Width and height from a base64 PNG's IHDR chunk."
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])

def execute(nb_path, env_backend):
    "Execute a notebook in a fresh kernel from nbs/, with MPLBACKEND set to `env_backend` (None: unset, as in JupyterLab)."
    nb = nbformat.read(nb_path, as_version=4)
    old = os.environ.pop("MPLBACKEND", None)
    if env_backend: os.environ["MPLBACKEND"] = env_backend
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "nbs")}}).execute()
    finally:
        os.environ.pop("MPLBACKEND", None)
        if old is not None: os.environ["MPLBACKEND"] = old
    return nb

@pytest.mark.papermill
@pytest.mark.parametrize("backend", [None, "Agg"], ids=["inline-default", "MPLBACKEND=Agg"])
def test_figures_display_as_images(backend):
    nb = execute(REPO / "nbs" / "08_figures.ipynb", backend)
    images, text_only = [], []
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        for out in cell.outputs:
            assert out.output_type != "error", f"cell {cell.id} failed: {out.get('ename')}: {out.get('evalue')}"
            data = out.get("data", {})
            if "image/png" in data: images.append((cell.source.splitlines()[0], png_size(data["image/png"])))
            elif data.get("text/plain", "").startswith("<Figure size"): text_only.append(cell.source.splitlines()[0])
    assert not text_only, f"figures shown as text, not images: {text_only}"
    shown = [src for src, _ in images]
    for fig in ("fig1 = draw_architecture", "fig2 = draw_dual_attention", "fig3 = draw_spatial_attention"):
        assert any(s.startswith(fig) for s in shown), f"no image from the cell starting {fig!r}; images: {shown}"
    assert all(w > 100 and h > 100 for _, (w, h) in images), images
