"""TensorBoard output of gradlab.Monitor (read back with TensorBoard's own event reader) and the
Lightning callback in a real Trainer with TensorBoardLogger and CSVLogger."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import gradlab

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

QUANTITIES = ["log10_grad_ratio", "log10_decay_rate", "ln_decay_rate", "fit_r2", "memory_length",
              "nonfinite_frac"]  # fmt: skip


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(2, 6, batch_first=True, num_layers=2)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _events(logdir):
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def test_tensorboard_scalars_and_images(tmp_path):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(4, 12, 2), torch.randn(4, 1)
    with gradlab.Monitor(model, every=2, tensorboard=tmp_path / "tb", image_every=2) as mon:
        for _ in range(5):  # recorded: 0, 2, 4; images at 0 and 4 (every 2nd recorded)
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    ea = _events(tmp_path / "tb")
    tags = ea.Tags()
    want = {f"gradlab/rnn/layer{k}/{q}" for k in (0, 1) for q in QUANTITIES}
    assert want <= set(tags["scalars"])
    summ = mon.summary()
    for ev in ea.Scalars("gradlab/rnn/layer1/ln_decay_rate"):
        row = summ[(summ["iteration"] == ev.step) & (summ["layer"] == 1)
                   & (summ["quantity"] == "ln_decay_rate")]  # fmt: skip
        assert ev.value == pytest.approx(row["value"].item(), rel=1e-6)  # stored as float32
    assert [ev.step for ev in ea.Scalars("gradlab/rnn/layer0/memory_length")] == [0, 2, 4]
    img_tags = {f"gradlab/rnn/layer{k}/{n}" for k in (0, 1) for n in ("heatmap", "decay_curves")}
    assert img_tags <= set(tags["images"])
    assert [ev.step for ev in ea.Images("gradlab/rnn/layer0/decay_curves")] == [0, 4]
    assert [ev.step for ev in ea.Images("gradlab/rnn/layer0/heatmap")] == [4]  # needs 2 its
    img = ea.Images("gradlab/rnn/layer0/heatmap")[-1]
    assert img.width > 100 and img.height > 100


def test_tensorboard_takes_a_writer_and_leaves_it_open(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(tmp_path / "tb")
    model = Net()
    with gradlab.Monitor(model, every=1, tensorboard=w, image_every=5):
        for _ in range(2):
            model(torch.randn(2, 5, 2)).sum().backward()
    w.add_scalar("mine", 1.0, 0)  # still open
    w.close()
    ea = _events(tmp_path / "tb")
    assert "mine" in ea.Tags()["scalars"]
    # images at the first recorded iteration and, on exit, at the last one
    assert [e.step for e in ea.Images("gradlab/rnn/layer1/decay_curves")] == [0, 1]
    with pytest.raises(TypeError, match="log dir or a SummaryWriter"):
        with gradlab.Monitor(model, tensorboard=3):
            pass


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"gradlab\[tensorboard\]"):
        with gradlab.Monitor(Net(), tensorboard=tmp_path):
            pass


# ---------------------------------------------------------------------------------------------
# Lightning


def test_lightning_callback_logs_through_a_real_trainer(tmp_path):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from gradlab.integrations.lightning import GradientFlow

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(2, 6, batch_first=True)
            self.head = nn.Linear(6, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return (self.head(self.rnn(x)[0][:, -1]) - y).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-2)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(24, 10, 2), torch.randn(24, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    cb = GradientFlow(every=2, image_every=2)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv = CSVLogger(tmp_path, name="csv", version=0)
    trainer = L.Trainer(max_steps=5, accelerator="cpu", logger=[tb, csv], callbacks=[cb],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1)  # fmt: skip
    module = Module()
    trainer.fit(module, loader)

    assert sorted(cb.monitor.frame()["iteration"].unique()) == [0, 2, 4]
    for m in module.modules():  # the callback left the module clean
        assert "forward" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks
    metrics = pd.read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    cols = [f"gradlab/rnn/layer0/{q}" for q in QUANTITIES]
    assert set(cols) <= set(metrics.columns)
    logged = metrics.dropna(subset=cols[2])
    assert logged["step"].tolist() == [0, 2, 4]
    summ = cb.monitor.summary()
    want = summ[summ["quantity"] == "ln_decay_rate"].sort_values("iteration")["value"]
    np.testing.assert_allclose(logged[cols[2]].to_numpy(float), want.to_numpy(), rtol=1e-6)
    ea = _events(tmp_path / "tb" / "version_0")
    assert set(cols) <= set(ea.Tags()["scalars"])
    assert {"gradlab/rnn/layer0/heatmap", "gradlab/rnn/layer0/decay_curves"} <= set(
        ea.Tags()["images"]
    )
    assert [e.step for e in ea.Images("gradlab/rnn/layer0/decay_curves")] == [0, 4]
    mem = metrics.dropna(subset=cols[4])[cols[4]].to_numpy(float)
    assert np.all((mem > 0) | np.isposinf(mem)) and not any(math.isnan(v) for v in mem)
