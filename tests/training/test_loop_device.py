"""The training loop at the limit: no host synchronisation per step, mixed precision, channels_last.

On a CPU there is no device to synchronise with, so the test counts the calls that would
synchronise with a GPU (``Tensor.item``, ``.cpu``, ``.tolist``, ``.numpy``, ``float()``, ``int()``,
``bool()`` on a tensor) while the steps run.
"""

import math
import sys

import pytest
import torch

import grouprobust.training as training
from grouprobust.config import resolve_config
from grouprobust.data.registry import load_dataset
from grouprobust.errors import DivergedError
from grouprobust.methods.base import Method, TrainData
from grouprobust.methods.registry import get_method, method_names
from grouprobust.training import DIVERGENCE_CHECK_EVERY, Trainer, TrainerContext, autocast_dtype, memory_format

SYNCING = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")
LOOP_METHODS = [name for name in method_names() if issubclass(get_method(name), Method)]
FAST = {"jtt": {"stage1_epochs": 1}, "gerne-pseudo": {"erm_epochs": 1}}


class SyncCounter:
    """Counts calls, from grouprobust's own code, of the tensor methods that read a GPU tensor back to the host,
    while ``active``. (torch's optimizers call ``.item()`` on their step counters, which torch keeps on the CPU
    even when training on a GPU: no synchronisation, and not counted.)"""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        self.active = False
        for name in SYNCING:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if self.active and caller.startswith("grouprobust"):
                self.calls.append(f"{name} in {caller}")
            return original(tensor, *args, **kwargs)
        return counted


def method_on(name: str, n: int, batch_size: int):
    hp = {"epochs": 1, "batch_size": batch_size, **FAST.get(name, {})}
    config = resolve_config("spurious-gaussian", name, 0, {"n": n, "n_val": 100, "n_test": 100}, hp,
                            regime="full" if get_method(name).needs == "full" else "val")
    trainer = Trainer(config, load_dataset("spurious-gaussian", 0, **config.data))
    method = trainer.new_method(trainer.method_cls, TrainData(trainer.train_set, trainer.device))
    method.setup(TrainerContext(trainer))
    return trainer, method


@pytest.mark.parametrize("name", LOOP_METHODS)
def test_no_method_reads_a_tensor_back_in_its_steps(name, monkeypatch):
    trainer, method = method_on(name, 320, 32)
    counter = SyncCounter(monkeypatch)
    loss, batches = method.loss, method.batches

    def counted_loss(model, batch):
        counter.active = True
        try:
            return loss(model, batch)
        finally:
            counter.active = False

    def counted_batches():
        counter.active = True
        try:
            epoch = list(batches())
        finally:
            counter.active = False
        return iter(epoch)

    monkeypatch.setattr(method, "loss", counted_loss)
    monkeypatch.setattr(method, "batches", counted_batches)
    trainer.run_epochs(method, trainer.new_model(), 2)
    assert counter.calls == []


def test_the_loop_synchronises_once_per_check_not_once_per_step(monkeypatch):
    trainer, method = method_on("groupdro", 2048, 8)  # 256 steps an epoch
    model = trainer.new_model()
    counter = SyncCounter(monkeypatch)
    counter.active = True
    trainer.run_epochs(method, model, 1)
    counter.active = False
    steps = math.ceil(2048 / 8)
    assert 0 < len(counter.calls) <= steps // DIVERGENCE_CHECK_EVERY + 2


class ExplodesAt(Method):
    """ERM whose loss is NaN from step ``at`` on (to see where divergence is reported)."""

    at = 0

    def __init__(self, *args):
        super().__init__(*args)
        self.step = 0

    def loss(self, model, batch):
        self.step += 1
        out = super().loss(model, batch)
        return out * float("nan") if self.step >= self.at else out


@pytest.mark.parametrize("at", [1, 5, DIVERGENCE_CHECK_EVERY, DIVERGENCE_CHECK_EVERY + 3])
def test_divergence_names_the_first_bad_step(at, tiny_gaussian):
    config = resolve_config("spurious-gaussian", "erm", 0, {**tiny_gaussian, "n": 2400}, {"batch_size": 32})
    trainer = Trainer(config, load_dataset("spurious-gaussian", 0, **config.data))
    ExplodesAt.at = at
    method = trainer.new_method(ExplodesAt, TrainData(trainer.train_set, trainer.device))
    with pytest.raises(DivergedError, match=f"train: loss became nan at epoch 1 step {at}; lower the learning rate"):
        trainer.run_epochs(method, trainer.new_model(), 1)


def test_divergence_in_a_short_last_window_is_caught(tiny_gaussian):
    # 400 examples / 64 = 7 steps: fewer than one check window, caught by the epoch-end check.
    config = resolve_config("spurious-gaussian", "erm", 0, tiny_gaussian, {})
    trainer = Trainer(config, load_dataset("spurious-gaussian", 0, **config.data))
    ExplodesAt.at = 7
    method = trainer.new_method(ExplodesAt, TrainData(trainer.train_set, trainer.device))
    with pytest.raises(DivergedError, match="at epoch 1 step 7;"):
        trainer.run_epochs(method, trainer.new_model(), 1)


@pytest.mark.slow
def test_amp_runs_the_same_loop_and_learns(monkeypatch):
    """amp=true takes the autocast + GradScaler path (bfloat16 on this CPU, no scaling needed) and trains a CNN
    about as well as full precision on colored-digits."""
    seen = []
    autocast = torch.autocast

    def recording(*args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return autocast(*args, **kwargs)

    monkeypatch.setattr(training.torch, "autocast", recording)
    results = {}
    for amp in (False, True):
        config = resolve_config("colored-digits", "erm", 0, {"conflict": 0.2},
                                {"model": "cnn", "epochs": 2, "amp": amp, "lr": 3e-3})
        results[amp] = Trainer(config, load_dataset("colored-digits", 0, **config.data)).fit()
    assert seen == [torch.bfloat16]  # amp=false trains without autocast; amp=true under the CPU's bfloat16
    full, mixed = (results[a]["metrics"]["test"]["avg_acc"] for a in (False, True))
    assert mixed > 0.5 and abs(mixed - full) < 0.1


def test_precision_and_layout_choices():
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16
    assert memory_format(torch.device("cuda"), "cnn") == torch.channels_last
    assert memory_format(torch.device("cuda"), "mlp") == torch.contiguous_format
    assert memory_format(torch.device("cpu"), "cnn") == torch.contiguous_format


def test_channels_last_gives_the_same_training(monkeypatch):
    """The GPU's layout, forced on the CPU: the same losses as the contiguous layout (to float tolerance)."""
    def train(fmt):
        monkeypatch.setattr(training, "memory_format", lambda device, name: fmt)
        config = resolve_config("colored-digits", "erm", 0, {"conflict": 0.2}, {"model": "cnn", "epochs": 1})
        trainer = Trainer(config, load_dataset("colored-digits", 0, **config.data))
        result = trainer.fit()
        return result["metrics"]["val"]["avg_acc"], trainer.model
    contiguous, _ = train(torch.contiguous_format)
    last, model = train(torch.channels_last)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert last == pytest.approx(contiguous, abs=0.02)


def test_features_amp_runs_the_backbone_under_autocast(tmp_path):
    """``amp`` for feature extraction: the backbone runs under autocast on the chosen device (here the CPU's
    bfloat16), and the features come back float32 and close to full precision."""
    import numpy as np

    from grouprobust.data.encoders import Encoder
    from grouprobust.data.extract import extract_features
    from grouprobust.data.readers import read_benchmark

    from readers_fixtures import write_civilcomments

    table = read_benchmark("civilcomments", write_civilcomments(tmp_path))
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 8)
    modes = []

    def encode(texts):
        modes.append(torch.is_autocast_enabled("cpu"))
        x = torch.tensor([[len(t), t.count(" "), t.count("e")] for t in texts], dtype=torch.float32)
        with torch.no_grad():
            return layer(x).float().numpy()

    backbone = Encoder("toy", "text", encode)
    full = extract_features(table, backbone, batch_size=16)
    mixed = extract_features(table, backbone, batch_size=16, amp_device=torch.device("cpu"))
    assert modes and not any(modes[:len(modes) // 2]) and all(modes[len(modes) // 2:])
    assert mixed.dtype == np.float32 and mixed.shape == full.shape
    assert np.allclose(mixed, full, rtol=0.05, atol=0.5) and not np.array_equal(mixed, full)


@pytest.mark.parametrize("name", LOOP_METHODS)
def test_samplers_keep_indices_beside_host_held_inputs(name):
    """With images or tokens on the host and the model on a GPU, every sampler's index tensors stay on the
    CPU: gathering the batch's rows then reads no device tensor back (one sync per step otherwise). The
    GPU is played by the meta device, which any index moved to ``data.device`` would land on."""
    trainer, method = method_on(name, 320, 32)
    method.data.device, method.data.index_device = torch.device("meta"), torch.device("cpu")
    devices = {idx.device.type for idx in method.batches()}
    assert devices == {"cpu"}


def test_host_held_inputs_are_indexed_from_the_cpu_and_features_from_their_device():
    from grouprobust.data.dataset import GroupDataset

    y, a = torch.tensor([0, 1, 0, 1]).numpy(), torch.tensor([0, 0, 1, 1]).numpy()
    images = GroupDataset(torch.zeros(4, 3, 2, 2, dtype=torch.uint8).numpy(), y, a, n_classes=2, n_attrs=2,
                          inputs="image")
    features = GroupDataset(torch.zeros(4, 3).numpy(), y, a, n_classes=2, n_attrs=2)
    assert TrainData(images, torch.device("meta")).index_device == torch.device("cpu")
    assert TrainData(features, torch.device("meta")).index_device == torch.device("meta")
