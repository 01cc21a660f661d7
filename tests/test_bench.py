"""`python -m attnresnet.bench` (training speed, and with --augment the augmentation pipeline) runs end to end on tiny
inputs, and rejects bad flags by name."""
import subprocess, sys
import pytest, torch
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

def bench(*args, timeout=120, module="attnresnet.bench"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)

@pytest.mark.training
def test_quick_run_prints_the_tables_and_appends(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Other section\n\nkept\n")
    r = bench("--device", "cpu", "--width", "4", "--batch-size", "16", "--repeats", "2", "--quick", "--synthetic",
              "--append", out)
    assert r.returncode == 0, r.stderr
    assert "| setting (bare loop) | images/s | ms/step | TFLOP/s | % of peak | peak memory | notes |" in r.stdout
    assert "| fp32, contiguous, eager |" in r.stdout and "time per image vs bare" in r.stdout
    assert "| attnresnet | 4,913,705 | 1.049 |" in r.stdout  # paper model's FLOPs at its defaults
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\n## Other section\n\nkept\n\n## Training speed\n\n### ")
    assert "--width 4 --batch-size 16" in text and "load " in text

def test_augment_run_prints_its_table_and_appends(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    r = bench("--augment", "--images", "256", "--batch-size", "128", "--workers", "0", "--device", "cpu", "--append", out)
    assert r.returncode == 0, r.stderr
    assert "| pipeline | images/s | speed-up vs torchvision |" in r.stdout
    assert "| batched `Augment('advanced')`, CPU, 1 thread |" in r.stdout
    rows = 2 + (torch.get_num_threads() > 1)  # torchvision, and the batched pipeline at 1 thread and at the process's (as this one's: same machine, same env)
    assert "| torchvision v2 per image, in the main process, 1 thread |" in r.stdout and r.stdout.count("\n|") == 2 + rows
    assert out.read_text().startswith("## Augmentation pipeline\n\n### ")

def test_old_augment_command_names_the_new_one():
    r = bench("--bench", module="attnresnet.augment", timeout=60)
    assert r.returncode == 1 and "python -m attnresnet.bench --augment" in r.stderr, r.stderr

def test_bad_flags_exit_2_naming_them(capsys):
    from attnresnet.bench import main  # in this process: the flags are refused before any work (the command's own run is above)
    for args, name in [(["--widht", "4"], "--widht"), (["--batch-size", "0"], "--batch-size"),
                       (["--device", "tpu"], "--device"), (["--augment", "--images", "0"], "--images"),
                       (["--augment", "--workers", "-1"], "--workers")]:
        with pytest.raises(SystemExit) as exit: main(args)
        err = capsys.readouterr().err
        assert exit.value.code == 2, (args, err)
        assert name in err and err.count("\n") == 1, (args, err)  # one line
