"""What only a CUDA GPU can show (`pytest -m gpu`; skipped without one). `scripts/gpu_run.sh` runs these first on a GPU machine."""
import pytest, torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

def check_fast_path(precision, channels_last, compile, width=8, batch=32):
    "Fast settings against eager fp32: bf16 rounding, no more (thresholds of nbs/09_bench); a failure names non-finite gradients."
    from attnresnet.bench_step import Setting, fast_path_error
    err = fast_path_error(Setting(precision, channels_last, compile), "cuda", width=width, batch_size=batch)
    assert not err["nonfinite_grads"], (f"non-finite gradients in {len(err['nonfinite_grads'])} parameters, the one nearest the loss "
                                        f"{err['nonfinite_origin']} ({err['output']=}, {err['loss']=})")
    # fp32 too: cuDNN runs fp32 convolutions in TF32 by default (allow_tf32), and the compiled and eager ones may pick
    # different algorithms, so fp32's bound is the same bf16-sized one until a GPU run has measured what TF32 gives
    assert err["output"] < 2e-2 and err["loss"] < 2e-2 and err["grad_cosine"] > 0.9, err

def test_bf16_channels_last_computes_the_same_function():
    check_fast_path("bf16", True, None)

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
    from attnresnet.trainer import Trainer
    from attnresnet.bench_step import trainer_splits
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

def _graph_trainers(tmp_path, steps=12, batch=64, **kw):
    "Two trainers from one bf16 config on random images: the graph step captured, and the same step without a graph."
    from attnresnet.config import make_config
    from attnresnet.trainer import Trainer
    from attnresnet.bench_step import trainer_splits
    from attnresnet.step import GraphStep
    c = make_config(width=8, batch_size=batch, device="cuda", mixup_prob=0.3, cutmix_prob=0.3, step="graph", run_dir=str(tmp_path),
                    progress=False, lr_schedule="cosine", epochs=10, **kw)
    s = trainer_splits(steps * batch, synthetic=True)
    graph, plain = Trainer(c, s), Trainer(c, s)
    assert graph.step_mode == "graph" and graph.graph_step.capture and graph.precision == "bf16"
    plain.graph_step = GraphStep(plain, capture=False)
    return graph, plain

def test_graph_step_captures_and_matches_the_same_step_without_a_graph(tmp_path):
    "Replayed graph vs the same device work run eagerly, 2 epochs: per-epoch loss and weights agree to bf16 rounding; nothing non-finite."
    graph, plain = _graph_trainers(tmp_path)
    for epoch in range(2):
        rng = torch.cuda.get_rng_state()
        a = graph.train_epoch(); torch.cuda.set_rng_state(rng); b = plain.train_epoch()
        graph.epoch += 1; plain.epoch += 1
        assert graph.graph_step.graph is not None and plain.graph_step.graph is None
        assert abs(a["train_loss"] - b["train_loss"]) < 2e-2 * abs(b["train_loss"]), (epoch, a, b)
        assert graph.graph_step.nonfinite.item() == 0 and plain.graph_step.nonfinite.item() == 0
    for p, q in zip(graph.model.parameters(), plain.model.parameters()):
        assert (p - q).norm() <= 2e-2 * q.norm() + 1e-6, (p - q).norm() / q.norm()
    assert graph.steps == plain.steps == 24 and graph.scheduler.last_epoch == plain.scheduler.last_epoch
    assert graph.ema.n_averaged.item() == plain.ema.n_averaged.item() == 24  # the EMA's counter advances on replay too (on the device)

def test_graph_step_is_close_to_train_step(tmp_path):
    "The graph against today's eager `train_step` (for-each SGD instead of fused, bf16 kernels): one epoch's loss within bf16 rounding."
    graph, plain = _graph_trainers(tmp_path)
    plain.graph_step = None  # Trainer.train_step
    rng = torch.cuda.get_rng_state()
    a = graph.train_epoch(); torch.cuda.set_rng_state(rng); b = plain.train_epoch()
    assert abs(a["train_loss"] - b["train_loss"]) < 3e-2 * abs(b["train_loss"]), (a, b)
    for p, q in zip(graph.model.parameters(), plain.model.parameters()):
        assert (p - q).norm() <= 5e-2 * q.norm() + 1e-6, (p - q).norm() / q.norm()

def test_graph_epoch_does_not_wait_for_the_gpu(tmp_path):
    "After the capture, a whole epoch (draws, pinned uploads, replays, schedule) runs under sync debug mode 'error'."
    graph, _ = _graph_trainers(tmp_path)
    graph.train_model.train()
    graph.graph_step.run(); torch.cuda.synchronize()  # the first epoch captures (cuDNN plans, allocations)
    torch.cuda.set_sync_debug_mode("error")
    try: loss_sum, correct_sum = graph.graph_step.run()
    finally: torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss_sum).item() and graph.graph_step.nonfinite.item() == 0

def test_auto_takes_the_graph_on_cuda_and_resumes_as_the_unbroken_run(tmp_path):
    "step='auto' is the graph on a GPU; a checkpoint after epoch 1 resumed into a fresh trainer continues as the unbroken run does."
    from attnresnet.config import make_config
    from attnresnet.trainer import Trainer
    from attnresnet.bench_step import trainer_splits
    s = trainer_splits(8 * 64, synthetic=True)
    c = make_config(width=8, batch_size=64, device="cuda", epochs=3, run_dir=str(tmp_path), progress=False)
    full = Trainer(c, s)
    assert full.step_mode == "graph"
    full.run_epoch(); state = full.state_dict()
    while not full.done: full.run_epoch()
    resumed = Trainer(c, s); resumed.load_state_dict(state)
    while not resumed.done: resumed.run_epoch()
    rows = lambda tr: [(r["train_loss"], r["train_acc"]) for r in tr.history]
    assert len(rows(full)) == len(rows(resumed)) == 3
    for (la, aa), (lb, ab) in zip(rows(full), rows(resumed)):  # graph replays are deterministic up to cuDNN/atomics
        assert abs(la - lb) < 1e-2 * abs(la) and abs(aa - ab) < 0.05, (rows(full), rows(resumed))

def test_state_finite_finds_nan_and_infinity_on_cuda():
    "The end-of-epoch check `state_finite` on the GPU's fused ∞-norm: a NaN or an infinity in any weight or buffer is found."
    from attnresnet.models import build_model
    from attnresnet.trainer import state_finite
    net = build_model("attnresnet", width=4).cuda()
    assert state_finite(net).item()
    for value in (float("nan"), float("inf"), -float("inf")):
        for where in ("running_var", "weight"):  # a buffer, a parameter
            broken = build_model("attnresnet", width=4).cuda()
            getattr(broken.stages[1][0].conv1.bn, where).data[3] = value
            assert not state_finite(net, broken).item(), (value, where)

# Compiling takes the longest, so the compiled checks come last: gpu_run.sh's time box cuts them before the graph step's
@pytest.mark.parametrize("precision, channels_last, compile", [("bf16", True, "default"), ("bf16", False, "default"), ("fp32", True, "default")])
def test_compiled_fast_path_computes_the_same_function(precision, channels_last, compile):
    check_fast_path(precision, channels_last, compile)

def test_bf16_compile_at_the_papers_width_and_batch():
    "bf16 + torch.compile at the paper's width and batch (the H200's NaN gradients came at width 8, batch 32: the compiled test above). Last in this file: compiling the paper's network takes the longest, and gpu_run.sh's time box should cut it before the tests above."
    check_fast_path("bf16", True, "default", width=31, batch=128)
