"""`python -m attnresnet.predict` on a run made by the training command: an image of another size, in another
folder, from another working directory; bad input exits with status 2 and names itself."""
import json, subprocess, sys
import pytest

def predict(*args, cwd):
    return subprocess.run([sys.executable, "-m", "attnresnet.predict", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)

@pytest.fixture
def run(small_run):
    "The training command's run (conftest's `small_run`)."
    return small_run

@pytest.fixture(scope="module")
def photo(standin, tmp_path_factory):
    "A stand-in test image enlarged to 50x70 (height x width), saved as a JPEG in a folder of its own."
    from torchvision.io import decode_image, write_jpeg
    from torchvision.transforms.v2.functional import resize
    img = decode_image(str(standin / "test" / "class2" / "0000.png"))
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    write_jpeg(resize(img, [50, 70], antialias=True), str(path), quality=90)
    return path

def test_top_classes_of_an_image_of_another_size(run, photo, tmp_path):
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()
    r = predict(run, photo, photo, "--top", "3", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8 and lines[0] == f"{photo} (70x50)" and lines[4] == lines[0]
    classes = json.loads((run / "config.json").read_text())["classes"]
    rows = [l.split() for l in lines[1:4]]
    assert all(name in classes for name, _ in rows) and len({name for name, _ in rows}) == 3
    probs = [float(p.rstrip("%")) for _, p in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
    assert lines[1:4] == lines[5:8]  # the same image, the same answer

def test_relative_paths_from_the_working_directory(run, photo):
    r = predict(run, photo.name, "--top", "20", cwd=photo.parent)  # --top beyond the classes lists them all
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "photo.jpg (70x50)" and len(lines) == 11
    assert abs(sum(float(l.split()[1].rstrip("%")) for l in lines[1:]) - 100) < 0.1

@pytest.mark.parametrize("case", ["missing run dir", "not a run dir", "missing image", "unreadable image", "bad --top"])
def test_bad_input_exits_2_naming_it(case, run, photo, tmp_path):
    text = tmp_path / "notes.txt"; text.write_text("not an image")
    args, named = {"missing run dir": ((tmp_path / "no_run", photo), "no_run': no such folder"),
                   "not a run dir": ((tmp_path, photo), "not a run directory"),
                   "missing image": ((run, photo, tmp_path / "gone.jpg"), "gone.jpg': no such file"),
                   "unreadable image": ((run, text), "notes.txt': not an image"),
                   "bad --top": ((run, photo, "--top", "0"), "--top 0")}[case]
    r = predict(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert named in r.stderr, r.stderr
    assert r.stdout == ""  # nothing printed for the good images before the bad one
