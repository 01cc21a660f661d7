"""The commands the documentation shows are commands the code takes: every flag of a `python -m attnresnet...`,
`attnresnet-...` or `torchrun ... -m attnresnet...` line is one its `--help` lists, every `-p name` of a papermill line is
a parameter its notebook declares, and every flag and step of a `scripts/gpu_run.sh` line is one the script parses.
Read from the guides (README.md, scripts/README.md, CONTRIBUTING.md, tests/README.md, data/README.md) and the lesson
notebooks' prose. BENCHMARKS.md and results/LOG.md are records: their commands are those that ran then."""
import json, re, shlex, subprocess, sys
import pytest
from conftest import REPO

GUIDES = ["README.md", "scripts/README.md", "CONTRIBUTING.md", "tests/README.md", "data/README.md"]
SEGMENT = re.compile(r"&&|\|\||;|\|")

def snippets(text: str):
    "Shell lines of a markdown text: each line of its fenced blocks (continuations joined), then each inline code span."
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        yield from re.sub(r"\\\n\s*", " ", block).splitlines()
    yield from (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)))

def documents():
    "(where, markdown) for the guides and every markdown cell of the notebooks."
    for g in GUIDES:
        if (REPO / g).exists(): yield g, (REPO / g).read_text()
    for nb in sorted((REPO / "nbs").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        yield f"nbs/{nb.name}", "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")

def commands() -> list[tuple[str, list[str]]]:
    "(where, words) of every documented command that names one of the project's programs."
    out = []
    for where, text in documents():
        for line in snippets(text):
            line = line.split(" # ")[0]
            for seg in SEGMENT.split(line):
                try: words = shlex.split(seg)
                except ValueError: continue  # an unbalanced quote: prose in backticks, not a command
                if any(w.startswith(("attnresnet.", "attnresnet-", "nbs/", "scripts/gpu_run.sh")) for w in words):
                    out.append((where, words))
    return out

COMMANDS = commands()

def ids(v): return " ".join(v) if isinstance(v, list) else v  # a test id: the command, or where it is

def flags(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", w)]

@pytest.fixture(scope="module")
def helps() -> dict:
    """Memoised `--help` text of a module run as `python -m`, in a process of its own: other tests may load ipykernel into
    this one, and the modules do not run their `main` under a notebook kernel."""
    cache = {}
    def get(module: str) -> str:
        if module not in cache:
            r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
            assert r.returncode == 0, r.stderr[-2000:]
            cache[module] = r.stdout
        return cache[module]
    return get

def program(words: list[str]) -> tuple[str, list[str]] | None:
    "The module a command runs and the words after it: `python -m M`, `torchrun ... -m M`, `attnresnet-train` and the like."
    scripts = {"attnresnet-train": "attnresnet.train", "attnresnet-predict": "attnresnet.predict", "attnresnet-bench": "attnresnet.bench"}
    for i, w in enumerate(words):
        if w in scripts: return scripts[w], words[i + 1:]
        if w == "-m" and i + 1 < len(words) and words[i + 1].startswith("attnresnet."): return words[i + 1], words[i + 2:]
    return None

def test_the_guides_show_commands():
    "The scan finds what it checks (so that an empty scan cannot pass): each kind of command is there."
    kinds = {("papermill" if "papermill" in w else "gpu_run" if "scripts/gpu_run.sh" in w else "module" if program(w) else "")
             for _, w in COMMANDS}
    assert {"papermill", "gpu_run", "module"} <= kinds, kinds
    assert len(COMMANDS) > 20

@pytest.mark.parametrize("where, words", [c for c in COMMANDS if program(c[1])], ids=ids)
def test_module_flags_exist(where, words, helps):
    module, rest = program(words)
    text = helps(module)
    missing = [f for f in flags(rest) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"{where}: `{' '.join(words)}`: {module} --help has no {missing}"

@pytest.mark.parametrize("where, words", [c for c in COMMANDS if "papermill" in c[1]], ids=ids)
def test_papermill_parameters_exist(where, words):
    nb = REPO / next(w for w in words if w.startswith("nbs/") and w.endswith(".ipynb"))
    assert nb.exists(), f"{where}: {nb.name} does not exist"
    papermill = pytest.importorskip("papermill")
    given = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-p"]
    unknown = set(given) - set(papermill.inspect_notebook(str(nb)))  # the names its parameters cell declares
    assert not unknown, f"{where}: `{' '.join(words)}`: {nb.name} declares no {sorted(unknown)}"

def gpu_run_parses() -> tuple[set[str], set[str]]:
    "The flags and the step names `scripts/gpu_run.sh` accepts, read from its argument parsing."
    text = (REPO / "scripts" / "gpu_run.sh").read_text()
    flag_set = set(re.findall(r"^\s*(--[a-z-]+)\)", text, re.M))
    steps = set(re.search(r"case \$s in ([a-z0-9|]+)\)", text).group(1).split("|"))
    return flag_set, steps

def test_gpu_run_parsing_is_read():
    flag_set, steps = gpu_run_parses()
    assert {"--budget", "--steps", "--smoke", "--work"} <= flag_set and {"tests", "speed", "paper500", "grid"} <= steps

@pytest.mark.parametrize("where, words", [c for c in COMMANDS if any(w.endswith("scripts/gpu_run.sh") for w in c[1])],
                         ids=ids)
def test_gpu_run_flags_and_steps_exist(where, words):
    flag_set, steps = gpu_run_parses()
    assert not set(flags(words)) - flag_set, f"{where}: `{' '.join(words)}`: gpu_run.sh takes no {sorted(set(flags(words)) - flag_set)}"
    named = [s for i, w in enumerate(words[:-1]) if w == "--steps" for s in words[i + 1].split(",")]
    assert not set(named) - steps, f"{where}: `{' '.join(words)}`: gpu_run.sh has no step {sorted(set(named) - steps)}"
