"""The graph-ready training step (`attnresnet.step`, nbs/12_step.ipynb) on a CPU: bit-identical to `Trainer.train_step`,
free of host reads and host data, and exact across a resume; and its CUDA-graph capture emulated (`Recording`, `Replayed`:
each replay must run the operations, arguments and memory the capture recorded, as a real graph does). Width 4, 48
images: seconds each."""
import contextlib, math, types
from unittest import mock
import pytest, torch
from attnresnet.bench_step import random_images
from attnresnet.config import make_config
from attnresnet.evaluate import accuracy, average_views, prepare_batch
from attnresnet.models import count_parameters, padding_size, unpad_channels
from attnresnet.splits import Splits
from attnresnet.step import GraphStep, NoHostData, NoHostSync, draw_augment, draw_mix
from attnresnet.trainer import Trainer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from conftest import untimed

def splits(n=48, val=32, test=0):
    x, y = random_images(n + val + test, seed=1)
    return Splits(x[:n], y[:n], x[n:n + val], y[n:n + val], x[n + val:], y[n + val:], [str(i) for i in range(10)], "random uint8 images",
                  (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

def config(**kw):
    return make_config({**dict(width=4, batch_size=16, precision="fp32", device="cpu", lr_schedule="cosine", epochs=3, progress=False,
                               ema_warmup=True), **kw})

def same_tensors(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)

def lockstep(eager: Trainer, step: GraphStep, epochs: int = 2):
    "Epochs of `eager.train_step` and of `step` (another Trainer's) from the same dropout generator: yields each step's eager (loss, correct)."
    fast = step.tr
    for _ in range(epochs):
        rng = torch.get_rng_state()  # dropout's generator: the same start for both
        eager.train_model.train(); fast.train_model.train()
        outs = [eager.train_step(xb, yb) for xb, yb in eager.loader]
        after = torch.get_rng_state(); torch.set_rng_state(rng)
        step.begin_epoch()
        for out in outs:
            step.step_eager()
            yield out
        step.end_epoch()
        eager.epoch += 1; fast.epoch += 1
        assert torch.equal(after, torch.get_rng_state())  # and the same draws from it

@pytest.mark.parametrize("mix", [(0.999, 0.0), (0.0, 0.999), (0.0, 0.0)], ids=["mixup", "cutmix", "neither"])
def test_graph_step_is_bit_identical_to_train_step(mix):
    "Losses, correct counts, weights, EMA, momentum, schedule and every generator: equal, not close, over 2 epochs of 3 steps."
    c, s = config(mixup_prob=mix[0], cutmix_prob=mix[1]), splits()
    eager, fast = Trainer(c, s), Trainer(c, s)
    assert eager.graph_step is None and fast.graph_step is None  # "auto" on a CPU: the eager step
    step = GraphStep(fast)
    for loss, correct in lockstep(eager, step):
        assert torch.equal(step.loss, loss) and torch.equal(step.correct, correct)
    assert same_tensors(eager.model.state_dict(), fast.model.state_dict())
    assert same_tensors(eager.ema.state_dict(), fast.ema.state_dict())
    for p, q in zip(eager.model.parameters(), fast.model.parameters()):
        assert torch.equal(eager.optimizer.state[p]["momentum_buffer"], fast.optimizer.state[q]["momentum_buffer"])
    assert eager.scheduler.state_dict() == fast.scheduler.state_dict() and eager.steps == fast.steps
    assert eager.optimizer.param_groups[0]["lr"] == fast.optimizer.param_groups[0]["lr"]
    for a, b in ((eager.aug_generator, fast.aug_generator), (eager.loader.generator, fast.loader.generator)):
        assert torch.equal(a.get_state(), b.get_state())

def test_fused_sgd_of_the_gpu_follows_train_step():
    """On a GPU the step updates with torch's fused SGD, reading each step's learning rate from the uploaded table (a host
    float would be frozen into the graph). Run on a CPU: the same losses and, within float rounding, the same weights."""
    c, s = config(mixup_prob=0.3, cutmix_prob=0.3, lr=0.5), splits()
    eager, fast = Trainer(c, s), Trainer(c, s)
    step = GraphStep(fast)
    step.fused = True
    for loss, _ in lockstep(eager, step):
        assert torch.allclose(step.loss, loss, rtol=1e-5)
    for p, q in zip(eager.model.parameters(), fast.model.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-5), (p - q).abs().max()
    assert step.lr_host[0] != step.lr_host[-1]  # the learning rate did change within the epoch

def test_epoch_draws_leave_the_generator_where_train_step_does():
    "An epoch of draws (augmentation then mix, per step) consumes the generator exactly as the steps of `train_step` do."
    from attnresnet.augment import Augment, mix_batch, soft_targets
    x, y = random_images(16)
    aug, g1, g2 = Augment("advanced"), torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(6):
        mix_batch(aug(x, generator=g1), soft_targets(y, 10), 0.3, 0.3, 1.0, g1)
        draw_augment(aug, 16, (32, 32), g2); draw_mix(16, (32, 32), 0.3, 0.3, 1.0, g2)
    assert torch.equal(g1.get_state(), g2.get_state())

@pytest.mark.parametrize("settings", [dict(), dict(channel_multiple=8, attention_matmul=True), dict(model="seresnet"),
                                      dict(model="wrn", width=1, depth=10), dict(precision="bf16", ema_decay=0.0)])
def test_no_host_read_or_host_data_in_the_graph_step_but_in_train_step(settings):
    """NoHostSync raises on _local_scalar_dense, nonzero, unique, masked_select; NoHostData on tensors made from Python numbers
    and draws from an explicit generator. A step of each network and setting passes both; today's fails both."""
    tr = Trainer(config(mixup_prob=0.3, cutmix_prob=0.3, **settings), splits())
    tr.train_model.train()
    step = GraphStep(tr)
    step.begin_epoch()
    with NoHostSync(), NoHostData():
        for _ in range(step.steps): step.step_eager()
    xb, yb = next(iter(tr.loader))
    with NoHostSync(), pytest.raises(RuntimeError, match="host read"): tr.train_step(xb, yb)
    with NoHostData(), pytest.raises(RuntimeError, match="host data"): tr.train_step(xb, yb)
    with NoHostSync(), pytest.raises(RuntimeError, match="host read"): torch.tensor([1.0]).item()  # the modes do catch reads
    with NoHostData(), pytest.raises(RuntimeError, match="host data"): torch.tensor([1.0])  # and host data

def test_resume_mid_run_with_the_graph_step_gives_the_eager_run():
    "step='graph' (run as it is on a CPU) resumed after 1 of 2 epochs: the same history, weights and EMA as an unbroken eager run."
    s = splits()
    eager = Trainer(config(step="eager", epochs=2), s)
    while not eager.done: eager.run_epoch()
    first = Trainer(config(step="graph", epochs=2), s)
    assert first.step_mode == "graph" and first.graph_step is not None
    first.run_epoch()
    state = first.state_dict()
    resumed = Trainer(config(step="graph", epochs=2), s)
    resumed.load_state_dict(state)
    while not resumed.done: resumed.run_epoch()
    assert untimed(resumed.history) == untimed(eager.history) and not math.isnan(eager.history[-1]["val_acc_ema"])
    assert same_tensors(resumed.model.state_dict(), eager.model.state_dict())
    assert same_tensors(resumed.ema.state_dict(), eager.ema.state_dict())

def test_graph_step_refuses_fp16():
    with pytest.raises(ValueError, match="precision='fp16'"):
        Trainer(make_config(width=4, batch_size=16, device="cpu", precision="fp16", step="graph", progress=False), splits())

def padding_of_momentum(tr) -> float:
    "The largest |value| in the padding of the optimiser's momentum buffers (0.0 when none of it moved)."
    out = 0.0
    for m in tr.model.modules():
        for name, shape in getattr(m, "true_shapes", {}).items():
            if name not in m._parameters: continue
            buf = tr.optimizer.state[getattr(m, name)]["momentum_buffer"].clone()
            buf[tuple(slice(0, n) for n in shape)] = 0
            out = max(out, buf.abs().max().item())
    return out

def test_padded_channels_stay_zero_through_the_graph_step_and_a_resume():
    """channel_multiple=8 (nbs/01_models.ipynb): the graph-ready step resumed after 1 of 2 epochs gives the eager run's history,
    the padding of the weights, the EMA and the momentum stays exactly 0, and the run reports the true parameter count."""
    s = splits()
    eager = Trainer(config(step="eager", epochs=2, channel_multiple=8), s)
    while not eager.done: eager.run_epoch()
    first = Trainer(config(step="graph", epochs=2, channel_multiple=8), s)
    first.run_epoch()
    state = first.state_dict()  # before the next Trainer, which seeds the global generator (dropout's) afresh
    resumed = Trainer(config(step="graph", epochs=2, channel_multiple=8), s)
    resumed.load_state_dict(state)
    while not resumed.done: resumed.run_epoch()
    assert untimed(resumed.history) == untimed(eager.history)
    assert resumed.model.stem[0].conv.out_channels == 8 and resumed.model.stages[0][0].conv1.conv.out_channels == 8  # 4 -> 8
    assert padding_size(resumed.model) == padding_size(resumed.ema.module) == padding_of_momentum(resumed) == 0.0
    plain = Trainer(config(epochs=2), s)
    assert eager.n_parameters == plain.n_parameters == count_parameters(unpad_channels(resumed.model))  # metrics.json's count

def test_validation_waits_for_the_device_once():
    """`Trainer.validate` counts every candidate's correct answers on the device and reads them in one `.tolist()`: no `.item()`
    (`_local_scalar_dense`) or other host read per candidate, which NoHostSync would refuse."""
    tr = Trainer(config(), splits())
    with NoHostSync(), NoHostData(): row = tr.validate()
    assert list(row) == ["val_acc_raw", "val_acc_ema"] and all(0 <= v <= 1 for v in row.values())

def test_multi_view_tta_is_reported_beside_the_plain_test():
    "tta_shift=2: test_acc_tta averages six views of each test image (`predict_views`); test_acc stays the plain pass."
    x, y = random_images(80, seed=3)
    s = Splits(x[:48], y[:48], x[48:56], y[48:56], x[56:], y[56:], [str(i) for i in range(10)], "random uint8 images",
               (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    results = {}
    for shift in (0, 2):
        tr = Trainer(config(epochs=1, tta=True, tta_shift=shift), s)
        tr.run_epoch()
        results[shift] = tr.finish()
    assert results[0]["test_acc"] == results[2]["test_acc"]  # the same weights, the same plain pass
    _, model = tr.chosen()
    p, views = tr.probabilities(model, s.test_x, flips=True, shift=2)
    assert views.shape == (5, len(s.test_x), 10)
    assert results[2]["test_acc_tta"] == accuracy(average_views(p, views), s.test_y)
    # the six views made here by index arithmetic: plain, mirrored, and each moved 2 pixels down-right and up-left with
    # the edges mirrored (the crop augmentation's reflect padding: the border pixel is not repeated)
    def moved(img, d):
        n = img.shape[-1]
        i = torch.tensor([abs(k) if k < n else 2 * (n - 1) - k for k in range(-d, n - d)])
        return img[..., i, :][..., i]
    x = prepare_batch(s.test_x, tr.mean, tr.std, False)
    by_hand = [im for v in (x, x.flip(3)) for im in (v, moved(v, 2), moved(v, -2))]
    with torch.no_grad(): probs = torch.stack([model.eval()(v).softmax(1) for v in by_hand]).mean(0)
    assert torch.allclose(probs, average_views(p, views), atol=1e-6)
    assert results[2]["test_acc_tta"] == accuracy(probs, s.test_y)

def test_short_run_network_options_reach_the_trainers_model():
    "zero_init_residual and bn_momentum (nbs/01_models.ipynb) are built into the model the trainer trains, and its EMA copy."
    tr = Trainer(config(zero_init_residual=True, bn_momentum=0.2), splits())
    blocks = [b for s in tr.model.stages for b in s]
    assert all(b.conv2.bn.weight.abs().sum() == 0 for b in blocks) and len(blocks) == 8
    assert {m.momentum for m in tr.ema.module.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.2}

SHORT_RUN_OPTIONS = {
    "augment-and-optimiser": dict(augment="basic", crop_pad=2, cutout=8, flip_alternate=True, bn_scale_lr=0.0, bn_bias_lr=8.0,
                                  decoupled_weight_decay=True, weight_decay=5e-5, stem_whitening=True),
    "swa-with-groups": dict(bn_bias_lr=4.0, swa=True, swa_start=0.5, swa_lr=0.05, cutout=6),
}

@pytest.mark.parametrize("options", list(SHORT_RUN_OPTIONS.values()), ids=list(SHORT_RUN_OPTIONS))
def test_short_run_options_in_the_graph_step_and_across_a_resume(options):
    """The fast recipe's options (cutout, translation, alternating flips, batch-norm learning rates, decoupled decay, whitened
    stem; with SWA's per-group rates): the graph-ready step resumed after 1 of 2 epochs gives the unbroken eager run's
    history, weights and momentum bit for bit."""
    s = splits()
    eager = Trainer(config(step="eager", epochs=2, **options), s)
    while not eager.done: eager.run_epoch()
    first = Trainer(config(step="graph", epochs=2, **options), s)
    first.run_epoch()
    state = first.state_dict()
    resumed = Trainer(config(step="graph", epochs=2, **options), s)
    resumed.load_state_dict(state)
    while not resumed.done: resumed.run_epoch()
    assert untimed(resumed.history) == untimed(eager.history) and len(eager.optimizer.param_groups) > 1
    assert same_tensors(resumed.model.state_dict(), eager.model.state_dict())
    for p, q in zip(eager.model.parameters(), resumed.model.parameters()):
        assert torch.equal(eager.optimizer.state[p]["momentum_buffer"], resumed.optimizer.state[q]["momentum_buffer"])
    if options.get("swa"): assert same_tensors(resumed.swa_model.state_dict(), eager.swa_model.state_dict())

def test_whitened_stem_and_frozen_scales_reach_the_run():
    "stem_whitening starts the stem from the training patches (not the seed's random filters); bn_scale_lr=0 keeps every scale at 1."
    s = splits()
    plain, white = Trainer(config(), s), Trainer(config(stem_whitening=True, bn_scale_lr=0.0), s)
    w, w0 = white.model.stem[0].conv.weight, plain.model.stem[0].conv.weight
    assert not torch.equal(w, w0) and torch.equal(w[1], -w[0])
    white.run_epoch()
    norms = [m for m in white.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert not all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)  # the shifts still learn

def test_matmul_attention_is_the_same_function_in_every_copy():
    """attention_matmul (nbs/00_attention.ipynb) reaches the trained model, its EMA and the model `chosen` rebuilds for the test;
    one epoch in fp32 ends within rounding of the 1x1-convolution run."""
    from attnresnet.attention import ChannelAttention
    s = splits()
    conv = Trainer(config(epochs=1), s); conv.run_epoch()  # each Trainer seeds dropout's generator: one after the other
    product = Trainer(config(epochs=1, attention_matmul=True), s); product.run_epoch()
    _, tested = product.chosen()
    for m in (product.model, product.ema.module, tested):
        assert {g.matmul for g in m.modules() if isinstance(g, ChannelAttention)} == {True}
    assert math.isclose(conv.history[0]["train_loss"], product.history[0]["train_loss"], rel_tol=1e-5)
    for a, b in zip(conv.model.parameters(), product.model.parameters()): assert torch.allclose(a, b, atol=1e-5)

class Recording(TorchDispatchMode):
    """What a CUDA graph fixes when it is captured, as a list: every operation in order, its non-tensor arguments, and the
    memory of every tensor the step reads but did not make (a graph replays those addresses; what it makes lives in the
    graph's own pool). A replay that differs from the capture in any of these is a step a real graph would not repeat."""
    def __enter__(self):
        self.ops, self.made = [], set()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "profiler": return out  # torch's own markers (record_function), no device work
        def what(v):
            if not isinstance(v, torch.Tensor): return repr(v)
            where = v.untyped_storage().data_ptr()
            return ("made" if where in self.made else where, tuple(v.shape), v.stride(), v.storage_offset(), v.dtype)
        self.ops.append((str(func), [what(v) for v in tree_leaves((args, kwargs or {}))]))
        self.made.update(t.untyped_storage().data_ptr() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out

class Replayed:
    """Stands in for `torch.cuda.CUDAGraph` on a CPU: `replay` runs the step's device work again and checks that it is
    the work recorded at the capture (`Recording`): what a real replay would run, it runs; what it would not, raises."""
    def __init__(self, step: GraphStep): self.step, self.replays, self.captured = step, 0, None
    def replay(self):
        with Recording() as now: self.step.step_eager()
        differ = next((i for i, (a, b) in enumerate(zip(self.captured, now.ops)) if a != b), None)
        if differ is not None or len(now.ops) != len(self.captured):
            i = differ if differ is not None else min(len(now.ops), len(self.captured))
            raise AssertionError(f"replay {self.replays + 1} differs from the captured step at operation {i}: captured "
                                 f"{self.captured[i] if i < len(self.captured) else 'nothing'}, now {now.ops[i] if i < len(now.ops) else 'nothing'}")
        self.replays += 1

@contextlib.contextmanager
def captured_into(graph: Replayed):
    "Stands in for `torch.cuda.graph(graph)`: the step runs (a GPU only records it; `_capture` puts the state back after either)."
    with Recording() as rec: yield
    graph.captured = rec.ops

@contextlib.contextmanager
def emulated_capture(step: GraphStep):
    "torch.cuda's capture on a CPU: one stream, the CPU generator for dropout (the CUDA one on a GPU), a `Replayed` graph."
    stream = types.SimpleNamespace(wait_stream=lambda other: None)
    with mock.patch("torch.cuda.get_rng_state", lambda *a: torch.get_rng_state()), \
         mock.patch("torch.cuda.set_rng_state", lambda state, *a: torch.set_rng_state(state)), \
         mock.patch("torch.cuda.Stream", lambda *a, **k: stream), mock.patch("torch.cuda.current_stream", lambda *a: stream), \
         mock.patch("torch.cuda.stream", lambda s: contextlib.nullcontext()), mock.patch("torch.cuda.CUDAGraph", lambda: Replayed(step)), \
         mock.patch("torch.cuda.graph", lambda graph, *a, **k: captured_into(graph)):
        yield

CAPTURED = {"paper": (48, {}), "one-step-epochs": (16, {}), "padded-matmul": (48, dict(channel_multiple=8, attention_matmul=True)),
            "seresnet": (48, dict(model="seresnet")), "wrn": (48, dict(model="wrn", width=1, depth=10)), "no-ema": (48, dict(ema_decay=0.0)),
            **{k: (48, v) for k, v in SHORT_RUN_OPTIONS.items()}}

@pytest.mark.parametrize("images, settings", list(CAPTURED.values()), ids=list(CAPTURED))
def test_capture_puts_back_what_its_warm_up_changed(images, settings):
    """`GraphStep._capture` runs warm-up steps before recording (weights, batch-norm statistics, momentum, EMA, counters and
    dropout's generator all move) and puts them back: with the capture emulated on a CPU, a run whose first epoch captures
    and then replays is bit-identical to the same step never captured, over 3 epochs with validation. An epoch of fewer
    steps than the warm-up has too (the warm-up read past the epoch's last batch: on a GPU, a device-side assert)."""
    def run(capture: bool) -> Trainer:
        tr = Trainer(config(**{**dict(step="graph", epochs=3, mixup_prob=0.3, cutmix_prob=0.3), **settings}), splits(n=images))
        tr.graph_step.fused, tr.graph_step.capture = True, capture  # the GPU's SGD (learning rate from the device table)
        with emulated_capture(tr.graph_step):
            while not tr.done: tr.run_epoch()
        return tr
    plain, captured = run(False), run(True)
    assert plain.graph_step.graph is None and captured.graph_step.graph.replays == 3 * captured.graph_step.steps
    assert untimed(captured.history) == untimed(plain.history)
    assert same_tensors(captured.model.state_dict(), plain.model.state_dict())
    if plain.ema is not None: assert same_tensors(captured.ema.state_dict(), plain.ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(captured.graph_step.bufs, plain.graph_step.bufs))

def _host_learning_rate(tr): pass  # fused stays False: the CPU's SGD takes each step's learning rate as a Python number
def _images_replaced(tr): tr.loader.x = tr.loader.x.clone()  # new memory, where `mirror_epoch` rewrites the images in place

@pytest.mark.parametrize("fault", [_host_learning_rate, _images_replaced], ids=["host-learning-rate", "images-replaced"])
def test_an_emulated_replay_refuses_what_a_graph_would_freeze(fault):
    """The check can fail: a learning rate passed as a Python number (a real graph repeats the captured step's forever), or
    images moved to new memory between epochs (a real graph reads the old): the replay is not the captured step."""
    tr = Trainer(config(step="graph", epochs=2), splits(n=96))
    tr.graph_step.capture, tr.graph_step.fused = True, fault is not _host_learning_rate
    with emulated_capture(tr.graph_step), pytest.raises(AssertionError, match="differs from the captured step"):
        tr.run_epoch()
        fault(tr)
        tr.run_epoch()

@pytest.mark.slow
def test_compiled_model_in_the_captured_step_compiles_once():
    """`compile=True` in the graph step: torch.compile compiles at the first warm-up step, before the capture, and the
    capture and replays reuse that code (a recompile during a GPU's capture would launch work the capture cannot hold).
    bf16 on a CPU (inductor's C++ backend), the capture emulated; about a minute."""
    import torch._dynamo
    torch._dynamo.reset()
    tr = Trainer(config(step="graph", epochs=2, compile=True, precision="bf16", mixup_prob=0.3, cutmix_prob=0.3), splits())
    tr.graph_step.fused, tr.graph_step.capture = True, True
    with torch._dynamo.config.patch(error_on_recompile=True), emulated_capture(tr.graph_step):
        while not tr.done: tr.run_epoch()
        with pytest.raises(torch._dynamo.exc.RecompileError):  # the check is armed: another batch size would recompile
            tr.train_model(torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert tr.graph_step.graph.replays == 2 * tr.graph_step.steps and math.isfinite(tr.history[-1]["train_loss"])
