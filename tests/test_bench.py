"""`python -m attnresnet.bench` runs end to end on a tiny model, and rejects bad flags by name."""
import subprocess, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

def bench(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "attnresnet.bench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)

def test_quick_run_prints_the_tables_and_appends(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Other section\n\nkept\n")
    t0 = time.perf_counter()
    r = bench("--device", "cpu", "--width", "4", "--batch-size", "16", "--repeats", "2", "--quick", "--synthetic",
              "--append", out)
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - t0 < 90  # ~10 s of work on an idle 2-core CPU; generous for a shared machine
    assert "| setting (bare loop) | images/s | ms/step | TFLOP/s | % of peak | peak memory | notes |" in r.stdout
    assert "| fp32, contiguous, eager |" in r.stdout and "time per image vs bare" in r.stdout
    assert "| attnresnet | 4,913,705 | 1.049 |" in r.stdout  # paper model's FLOPs at its defaults
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\n## Other section\n\nkept\n\n## Training speed (issue 6)\n\n### ")
    assert "--width 4 --batch-size 16" in text and "load " in text

def test_bad_flags_exit_2_naming_them():
    for args, name in [(["--widht", "4"], "--widht"), (["--batch-size", "0"], "--batch-size"),
                       (["--device", "tpu"], "--device")]:
        r = bench(*args, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert name in r.stderr, (args, r.stderr)
