"""The trainer on a pretend GPU: Trainers built on 'cuda' on a machine without one, the graph step checked for a tensor left
on the CPU, and whole epochs, whole runs (killed and resumed) and `attnresnet-predict` checked for GPU and CPU tensors mixed.

On a CPU every tensor is on the CPU, so test_step.py cannot see one that should have been on the GPU. Inside a CUDA graph such
a tensor is a silent error, not a slow one: an operation on it runs on the host once, while the graph is captured, and never
again when the graph replays (and a 0-d CPU tensor handed to a GPU kernel is read once, at capture, and frozen in). Outside
the graph, a GPU tensor mixed with a CPU one stops a run mid-lease. torch's `FakeTensorMode` makes tensors with a device, a
shape and a dtype but no data, so the Trainer, its model and its data can be made on 'cuda' here. `OnDevice` refuses any
operation of the graph step with a CPU operand; elsewhere FakeTensorMode itself raises where a real GPU would.

What stands in for the GPU, each in `pretend_gpu`: the host stays real (`HostIsReal`: the random draws, the augmentation's
choices, the model's initial weights are made for real and then moved); autograd's backward, whose engine asks the CUDA
driver, is replaced by gradients of each parameter's shape and device; the fused SGD kernel, which has no fake kernel, is
checked for its operands' devices only (its arithmetic: test_step.py's fused-SGD test); a host read of a GPU value, which
has none, reads 0 (a copy to the host, `.cpu()`, reads zeros: so checkpoints of GPU state are written, as zeros, and read
back); the Trainer's second move of the model (to channels-last) is skipped. Shapes, devices and dtypes are checked here;
numbers are not (tests/test_gpu.py does, on a GPU). Not covered: recording the graph, `torch.compile`, and SWA's last pass
(`update_bn` divides by a batch count read from the GPU)."""
import contextlib, types
from unittest import mock
import pytest, torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map_only
import attnresnet.runs as runs_module
import attnresnet.trainer as trainer_module
from attnresnet.config import make_config
from attnresnet.step import NoHostData, NoHostSync
from attnresnet.trainer import Trainer
from test_step import SHORT_RUN_OPTIONS, splits
from attnresnet.train import fit

# deepcopy (the EMA's copy of the model) asks a fake weight for its data pointer, which it does not have and does not need
pytestmark = pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor:UserWarning")

class OnDevice(TorchDispatchMode):
    """Raise on every operation with a CPU tensor among its operands, or that copies a tensor to the host (under `pretend_gpu`,
    where every tensor should be on 'cuda': a copy to the host waits for the GPU, which a CUDA graph's capture refuses)."""
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name, kwargs = func.overloadpacket.__name__, kwargs or {}
        on_cpu = [tuple(t.shape) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.device.type == "cpu"]
        if on_cpu: raise RuntimeError(f"a CPU tensor in the step: aten.{name} has CPU operands of shapes {on_cpu}")
        if name == "_to_copy" and torch.device(kwargs.get("device") or args[0].device).type == "cpu":
            raise RuntimeError(f"a copy to the host in the step: aten.{name} of a tensor of shape {tuple(args[0].shape)}")
        return func(*args, **kwargs)

class HostIsReal(TorchDispatchMode):
    """The host stays real: an operation on real CPU tensors only (or making one) runs for real, as the host of a GPU machine
    runs it; fake GPU tensors go on to FakeTensorMode. What fake tensors cannot do: the fused SGD kernel has no fake kernel
    (a no-op here), and a read of a fake tensor has no value (answered 0, and a copy to the host with real zeros)."""
    def __init__(self, fake: FakeTensorMode):
        super().__init__(); self.fake = fake

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs, name = kwargs or {}, func.overloadpacket.__name__
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not any(isinstance(t, FakeTensor) for t in tensors):
            if torch.device(kwargs.get("device") or "cpu").type == "cpu":
                with unset_fake_temporarily(): return func(*args, **kwargs)
            # a host tensor copied to the GPU: made fake first, or FakeTensorMode would try the copy for real (it does
            # for `aten.to` under inference mode, as `predict_views` runs it), which needs the driver
            args, kwargs = tree_map_only(torch.Tensor, self.fake.from_tensor, (args, kwargs))
        if name in ("_to_copy", "to") and torch.device(kwargs.get("device") or "cuda").type == "cpu":  # `.cpu()` of a GPU tensor:
            with unset_fake_temporarily(): return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)  # zeros, real
        if name == "_fused_sgd_": return None  # its operands' devices are what is checked (its arithmetic: test_step.py)
        if name == "_local_scalar_dense": return False if args[0].dtype == torch.bool else 0  # `.item()`, `.tolist()`, `bool()`
        return func(*args, **kwargs)

@contextlib.contextmanager
def pretend_gpu():
    "Build Trainers on device='cuda' without a GPU: FakeTensorMode and the few patches it needs, each with its reason."
    build = trainer_module.build_model
    def build_model(*args, **kw):  # weights made for real on the host, then moved to the fake 'cuda' as new Parameters, once:
        model = build(*args, **kw).to("cuda")  # fake weights cannot be moved again (`swap_tensors` refuses their weak
        model.to = types.MethodType(lambda self, *a, **k: self, model)  # references), so the Trainer's own .to() calls are no-ops
        return model
    save = torch.save
    def save_on_host(obj, *args, **kw):  # a checkpoint of fake GPU tensors: their `.cpu()`, zeros of their shapes (see HostIsReal)
        return save(tree_map_only(FakeTensor, lambda t: t.cpu(), obj), *args, **kw)
    load = torch.load
    def load_on_host(f, map_location=None, **kw):  # read for real (under FakeTensorMode, torch.load would make fake tensors: no
        with unset_fake_temporarily(): obj = load(f, map_location="cpu" if map_location is not None else None, **kw)  # random states)
        return obj if map_location is None else tree_map_only(torch.Tensor, lambda t: t.to(map_location), obj)  # then to the device asked
    benchmark = torch.backends.cudnn.benchmark
    try:
        with mock.patch.object(trainer_module, "resolve_device", torch.device), mock.patch.object(trainer_module, "build_model", build_model), \
             mock.patch.object(runs_module, "build_model", build_model), mock.patch("torch.cuda.device_count", lambda: 1), \
             mock.patch("torch.cuda.is_available", lambda: True), mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: True), \
             mock.patch("torch.cuda.get_device_name", lambda *a, **k: "a pretend GPU"), mock.patch("torch.save", save_on_host), \
             mock.patch("torch.load", load_on_host), \
             mock.patch.object(FakeTensorMode, "avoid_device_init", True), mock.patch("torch.Tensor.pin_memory", lambda self, *a, **k: self), \
             FakeTensorMode(allow_non_fake_inputs=True) as fake, HostIsReal(fake):  # the real CPU tensors of `splits()` become fake ones as the Trainer moves them
            yield
    finally:
        torch.backends.cudnn.benchmark = benchmark  # a Trainer on 'cuda' sets it for the process

def backward_into(trainer):
    "A `Tensor.backward` that gives every trainable parameter of `trainer()` a gradient of its shape and device (autograd's engine needs the driver)."
    def backward(self, *args, **kw):
        for p in trainer().model.parameters():
            if p.requires_grad: p.grad = torch.empty_like(p)
    return backward

@contextlib.contextmanager
def gradients_without_autograd(tr: Trainer):
    "`loss.backward()` gives every trainable parameter of `tr` a gradient (`backward_into`)."
    with mock.patch("torch.Tensor.backward", backward_into(lambda: tr)): yield

def config(**settings):
    "The paper's recipe at width 4 on 'cuda', as a GPU run would choose: bf16 (and the graph step, fused SGD)."
    return make_config(**{**dict(width=4, batch_size=16, device="cuda", precision="bf16", epochs=3, progress=False,
                                 mixup_prob=0.3, cutmix_prob=0.3), **settings})

def pretend_trainer(**settings) -> Trainer:
    "A Trainer on the pretend GPU that takes the graph step with fused SGD, as a GPU run would."
    tr = Trainer(config(**settings), splits())
    assert tr.device.type == "cuda" and tr.step_mode == "graph" and tr.graph_step.capture and tr.graph_step.fused
    assert all(p.device.type == "cuda" for p in tr.model.parameters()) and tr.loader.x.device.type == "cuda"
    return tr

SETTINGS = {"paper": dict(), "padded-matmul": dict(channel_multiple=8, attention_matmul=True), "seresnet": dict(model="seresnet"),
            "wrn": dict(model="wrn", width=1, depth=10), "no-ema": dict(ema_decay=0.0), **SHORT_RUN_OPTIONS}

@pytest.mark.parametrize("settings", list(SETTINGS.values()), ids=list(SETTINGS))
def test_every_operand_of_the_graph_step_is_on_the_gpu(settings):
    "An epoch of the step a GPU would capture (bf16 autocast on 'cuda', fused SGD, EMA): no CPU operand, host read or host data."
    with pretend_gpu():
        tr = pretend_trainer(**settings)
        step = tr.graph_step
        step.begin_epoch()
        assert all(t.device.type == "cuda" for t in tree_leaves(step.tables))
        with gradients_without_autograd(tr), OnDevice(), NoHostSync(), NoHostData():
            for _ in range(step.steps): step.step_eager()
        assert step.k.device.type == "cuda"

def test_on_device_finds_a_cpu_tensor_in_the_step():
    "The check can fail: the EMA's step counter left on the CPU (torch's default, before the Trainer put it on the device) is found."
    with pretend_gpu():
        tr = pretend_trainer()
        tr.ema.n_averaged = torch.zeros((), dtype=torch.long, device="cpu")
        tr.graph_step.begin_epoch()
        with gradients_without_autograd(tr), OnDevice(), pytest.raises(RuntimeError, match=r"CPU tensor in the step: aten\.add_"):
            tr.graph_step.step_eager()

def test_on_device_finds_a_copy_to_the_host():
    "The check can fail: the step's loss sum copied to the host after each step (as a progress bar might read it) is found."
    with pretend_gpu():
        tr = pretend_trainer()
        tr.graph_step.begin_epoch()
        with gradients_without_autograd(tr), OnDevice(), pytest.raises(RuntimeError, match=r"copy to the host in the step: aten\._to_copy"):
            tr.graph_step.step_eager(); tr.graph_step.loss_sum.cpu()

EPOCHS = {**{f"graph-{k}": dict(v, step="graph") for k, v in SETTINGS.items()},
          **{f"eager-{k}": dict(SETTINGS[k], step="eager") for k in ("paper", "augment-and-optimiser", "swa-with-groups")},
          "eager-val-augment": dict(step="eager", val_augment=True, ema_buffers=False)}

@pytest.mark.parametrize("settings", list(EPOCHS.values()), ids=list(EPOCHS))
def test_epochs_of_a_run_on_the_pretend_gpu(settings):
    """Two epochs of `Trainer.run_epoch` on the pretend GPU, with the graph step (run without capture) and with the eager
    step that `gpu_run.sh` falls back on: the work around the step (the eager step's draws and choices, alternating flips,
    SWA's average, validation, the best weights kept on the device) mixes no GPU tensor with a CPU one, which a real GPU
    would refuse mid-run."""
    with pretend_gpu():
        tr = Trainer(config(**{"epochs": 2, **settings}), splits())
        if tr.graph_step is not None: tr.graph_step.capture = False  # recording a graph needs the driver
        with gradients_without_autograd(tr):
            while not tr.done: tr.run_epoch()
        assert [r["epoch"] for r in tr.history] == [1, 2] and tr.step_mode == settings["step"]
        assert tr._best_state is not None and all(v.device.type == "cuda" for v in tr._best_state.values())

@contextlib.contextmanager
def trainers_without_autograd():
    "`gradients_without_autograd` for the Trainers that `fit` builds, each taking the graph step without recording a graph."
    built, init = [], Trainer.__init__
    def noted(self, *args, **kw):
        init(self, *args, **kw); built.append(self)
        if self.graph_step is not None: self.graph_step.capture = False  # recording a graph needs the driver
    with mock.patch.object(Trainer, "__init__", noted), mock.patch("torch.Tensor.backward", backward_into(lambda: built[-1])): yield built

class Killed(Exception): "The run's process, stopped after an epoch (at the time limit of a command, say)."

RUNS = {"paper-graph-then-graph": ("paper", "graph", "graph", {}),
        "paper-graph-then-eager": ("paper", "graph", "eager", {}),  # gpu_run.sh's fallback when the graph step fails mid-run
        "fast-graph-tta": ("fast", "graph", "graph", dict(tta=True, tta_shift=2))}

@pytest.mark.parametrize("recipe, first, then, settings", list(RUNS.values()), ids=list(RUNS))
def test_a_run_killed_and_resumed_on_the_pretend_gpu(tmp_path, recipe, first, then, settings):
    """`fit` as `gpu_run.sh --steps paper500` runs it, on the pretend GPU with a test split: killed after the epoch of a
    checkpoint, then resumed by the same call (with the other step, for the fallback) to its end. Checkpoints of GPU state
    are written and read back, the best weights tested, `metrics.json` written; no GPU tensor meets a CPU one on the way.
    (The checkpoints hold zeros: a fake tensor's `.cpu()`, as `pretend_gpu` says.)"""
    run_dir = tmp_path / "run"
    c = config(recipe=recipe, epochs=3, run_dir=str(run_dir), checkpoint_every=2, **settings)
    data = splits(val=32, test=24)
    run_epoch, epochs = Trainer.run_epoch, []
    def killed_after_checkpoint(self, *args, **kw):
        row = run_epoch(self, *args, **kw); epochs.append(row["epoch"])
        if self.epoch == 2: raise Killed
        return row
    with pretend_gpu(), trainers_without_autograd() as built:
        with mock.patch.object(Trainer, "run_epoch", killed_after_checkpoint), pytest.raises(Killed): fit(c, step=first, splits=data)
        assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.json", "history.csv", "last.pt"]
        with mock.patch.object(Trainer, "run_epoch", killed_after_checkpoint): metrics = fit(c, step=then, splits=data)
    assert [tr.step_mode for tr in built] == [first, then] and epochs == [1, 2, 3]
    assert metrics["completed"] and metrics["epochs"] == 3 and metrics["device"] == "cuda" and metrics["device_name"] == "a pretend GPU"
    assert (metrics["test_acc_tta"] is not None) == bool(settings.get("tta")) and (run_dir / "metrics.json").exists()

def test_predict_on_the_pretend_gpu(tmp_path, capsys):
    "`attnresnet-predict --device cuda` with a run trained on the CPU: the weights go to the GPU, the images follow, the classes print."
    from torchvision.io import write_png
    from attnresnet.predict import Classifier, main
    run_dir = tmp_path / "run"
    fit(make_config(width=4, batch_size=16, epochs=1, device="cpu", precision="fp32", progress=False, run_dir=str(run_dir)), splits=splits(test=8))
    write_png(torch.randint(0, 256, (3, 40, 24), dtype=torch.uint8), str(tmp_path / "an image.png"))  # any size: resized to 32x32
    with pretend_gpu():
        clf = Classifier.from_run(run_dir, "best", "cuda")
        assert next(clf.model.parameters()).device.type == "cuda" and clf.precision == "fp32"
        tops = main([str(run_dir), str(tmp_path / "an image.png"), "--device", "cuda", "--top", "3"])
    assert [len(t) for t in tops] == [3] and "an image.png (24x40)" in capsys.readouterr().out
