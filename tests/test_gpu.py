"""What only a CUDA GPU can show (`pytest -m gpu`; skipped without one). `scripts/gpu_run.sh` runs these first on a lent GPU."""
import pytest, torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

@pytest.mark.parametrize("precision, channels_last, compile", [
    ("bf16", True, None), ("bf16", True, "default"), ("bf16", False, "default"), ("fp32", True, "default")])
def test_fast_path_computes_the_same_function(precision, channels_last, compile):
    "Fast settings against eager fp32: bf16 rounding, no more (thresholds of nbs/09_bench); a failure names non-finite gradients."
    from attnresnet.bench import Setting, fast_path_error
    err = fast_path_error(Setting(precision, channels_last, compile), "cuda", width=8, batch_size=32)
    assert not err["nonfinite_grads"], f"non-finite gradients in {err['nonfinite_grads']} ({err['output']=}, {err['loss']=})"
    assert err["output"] < 2e-2 and err["loss"] < 2e-2 and err["grad_cosine"] > 0.9, err

def test_augmentation_on_cuda_matches_cpu():
    "The same generator seed gives the same augmented and mixed batch on the GPU as on the CPU."
    from attnresnet.augment import Augment, mix_batch, soft_targets
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = Augment("advanced")
    t = soft_targets(torch.arange(64) % 10, 10)
    for seed in range(4):  # seeds cover Mixup, CutMix and no mixing
        outs = []
        for dev in ("cpu", "cuda"):
            g = torch.Generator().manual_seed(seed)
            xs, ts = mix_batch(aug(x.to(dev), generator=g), t.to(dev), 0.5, 0.5, generator=g)
            outs.append((xs.cpu(), ts.cpu()))
        (xc, tc), (xg, tg) = outs
        diff = (xg - xc).abs()
        assert diff.quantile(0.999) < 1e-4 and diff.max() < 5e-2, (seed, diff.max())  # hue's branch points may flip on ties
        torch.testing.assert_close(tg, tc)

def test_training_step_does_not_wait_for_the_gpu(tmp_path):
    "A few `Trainer.train_step`s (augment, Mixup/CutMix, bf16, clipping, EMA, schedule) under sync debug mode 'error'."
    from attnresnet.config import make_config
    from attnresnet.train import Trainer
    from attnresnet.bench import trainer_splits
    c = make_config(width=8, batch_size=64, device="cuda", mixup_prob=0.5, cutmix_prob=0.5, run_dir=str(tmp_path), progress=False)
    tr = Trainer(c, trainer_splits(64 * 12, synthetic=True))
    assert tr.precision == "bf16" and tr.ema is not None and c.grad_clip > 0
    batches = list(tr.loader)
    tr.train_model.train()
    tr.train_step(*batches[0]); torch.cuda.synchronize()  # warm-up: cuDNN plans, allocator, pinned buffers
    torch.cuda.set_sync_debug_mode("error")
    try:
        for xb, yb in batches[1:]: loss, correct = tr.train_step(xb, yb)
    finally: torch.cuda.set_sync_debug_mode(0)
    assert loss.is_cuda and torch.isfinite(loss).item()
