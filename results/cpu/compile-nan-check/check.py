"""bf16 autocast + torch.compile on the CPU against eager fp32 (`fast_path_error`): are the gradients finite?
python check.py [amax] [WIDTH BATCH]: `amax` puts the channel attention's max pooling back to `amax` over the spatial
dimensions, as it was in the H200 runs whose compiled gradients were NaN; default width 8, batch 32 (where they failed)."""
import sys, time, torch
import torch.nn.functional as F
from attnresnet.bench_step import Setting, fast_path_error
import attnresnet.attention as A
args = sys.argv[1:]
amax = bool(args) and args[0] == "amax"
if amax:
    args = args[1:]
    A.F = type("F", (), {**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")},
                         "adaptive_max_pool2d": staticmethod(lambda x, s: x.amax((2, 3), keepdim=True))})
width, batch = map(int, args) if args else (8, 32)
t0 = time.time()
err = fast_path_error(Setting("bf16", True, "default"), "cpu", width=width, batch_size=batch)
print("amax" if amax else "adaptive_max_pool2d", f"width {width}, batch {batch}, torch {torch.__version__}:", err, f"{time.time() - t0:.0f} s")
