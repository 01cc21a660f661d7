"""The graph step on a pretend GPU: a Trainer built on 'cuda' on a machine without one, and every operation of its step checked
for a tensor left on the CPU.

On a CPU every tensor is on the CPU, so test_step.py cannot see one that should have been on the GPU. Inside a CUDA graph such
a tensor is a silent error, not a slow one: an operation on it runs on the host once, while the graph is captured, and never
again when the graph replays (and a 0-d CPU tensor handed to a GPU kernel is read once, at capture, and frozen in). torch's
`FakeTensorMode` makes tensors with a device, a shape and a dtype but no data, so the Trainer, its model and the step's
tables can be made on 'cuda' here, and `OnDevice` refuses any operation with a CPU tensor among its operands.

What stands in for the GPU, each in `pretend_gpu`: the model's weights are made for real and then moved (FakeTensorMode cannot
move weights it made itself); the epoch's random draws are made for real, on the host, as on a GPU; autograd's backward,
whose engine asks the CUDA driver, is replaced by gradients of each parameter's shape and device; the fused SGD kernel, which
has no fake kernel, is checked for its operands' devices only (its arithmetic: test_step.py's fused-SGD test). Shapes,
devices and dtypes are checked here; numbers are not (tests/test_gpu.py, on a GPU)."""
import contextlib, types
from unittest import mock
import pytest, torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
import attnresnet.trainer as trainer_module
from attnresnet.config import make_config
from attnresnet.step import GraphStep, NoHostData, NoHostSync
from attnresnet.trainer import Trainer
from test_step import SHORT_RUN_OPTIONS, splits

class OnDevice(TorchDispatchMode):
    "Raise on every operation with a CPU tensor among its operands (under `pretend_gpu`, where every tensor should be on 'cuda')."
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        on_cpu = [tuple(t.shape) for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor) and t.device.type == "cpu"]
        if on_cpu: raise RuntimeError(f"a CPU tensor in the step: aten.{func.overloadpacket.__name__} has CPU operands of shapes {on_cpu}")
        if func.overloadpacket.__name__ == "_fused_sgd_": return None  # no fake kernel: its operands' devices are what is checked
        return func(*args, **(kwargs or {}))

@contextlib.contextmanager
def pretend_gpu():
    "Build Trainers on device='cuda' without a GPU: FakeTensorMode and the few patches it needs, each with its reason."
    build, draw = trainer_module.build_model, GraphStep.draw_epoch
    def build_model(*args, **kw):  # weights made for real, then moved; the Trainer's own .to() calls (device, channels_last) are no-ops
        with unset_fake_temporarily(): model = build(*args, **kw)
        model = model.to("cuda")  # under the mode: fake tensors on 'cuda', as new Parameters (the `__future__` flag below)
        model.to = types.MethodType(lambda self, *a, **k: self, model)
        return model
    def draw_epoch(self):  # the epoch's draws are real numbers made on the host, as on a GPU; uploading them is the mode's
        with unset_fake_temporarily(): return draw(self)
    overwrite, benchmark = torch.__future__.get_overwrite_module_params_on_conversion(), torch.backends.cudnn.benchmark
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        with mock.patch.object(trainer_module, "resolve_device", torch.device), mock.patch.object(trainer_module, "build_model", build_model), \
             mock.patch.object(GraphStep, "draw_epoch", draw_epoch), \
             mock.patch("torch.cuda.is_available", lambda: True), mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: True), \
             mock.patch.object(FakeTensorMode, "avoid_device_init", True), mock.patch("torch.Tensor.pin_memory", lambda self, *a, **k: self), \
             FakeTensorMode(allow_non_fake_inputs=True):  # the real CPU tensors of `splits()` become fake ones as the Trainer moves them
            yield
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        torch.backends.cudnn.benchmark = benchmark  # a Trainer on 'cuda' sets it for the process

@contextlib.contextmanager
def gradients_without_autograd(tr: Trainer):
    "`loss.backward()` gives every trainable parameter a gradient of its shape and device (autograd's engine needs the driver)."
    params = [p for p in tr.model.parameters() if p.requires_grad]
    def backward(self, *args, **kw):
        for p in params: p.grad = torch.empty_like(p)
    with mock.patch("torch.Tensor.backward", backward): yield

def pretend_trainer(**settings) -> Trainer:
    "A Trainer of the paper's recipe at width 4 on the pretend GPU, as a GPU run would choose: bf16, the graph step, fused SGD."
    tr = Trainer(make_config(**{**dict(width=4, batch_size=16, device="cuda", precision="bf16", epochs=3, progress=False,
                                       mixup_prob=0.3, cutmix_prob=0.3), **settings}), splits())
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
