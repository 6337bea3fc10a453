"""Training: a run resumed after an interruption ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import torch

from triseg.models import build_model
from triseg.train import TrainConfig, fit


def _train(sample, tmp_path, name, epochs, resume=False):
    torch.manual_seed(0)
    model = build_model("lenet5")
    cfg = TrainConfig(epochs=3, batch_size=32, max_train_batches=5, seed=1)
    cfg_partial = TrainConfig(**{**vars(cfg)})
    if epochs < 3:
        # simulate a kill after `epochs` epochs: stop the loop early via a hook that raises
        class Stop(Exception):
            pass

        def hook(m, epoch):
            if epoch == epochs:
                raise Stop

        try:
            fit(model, sample, cfg_partial, tmp_path / f"{name}.ckpt", tmp_path / "tb", epoch_hook=hook)
        except Stop:
            pass
        model = build_model("lenet5")
        fit(model, sample, cfg, tmp_path / f"{name}.ckpt", tmp_path / "tb", resume=True)
        return model
    fit(model, sample, cfg, tmp_path / f"{name}.ckpt", tmp_path / "tb")
    return model


def test_resume_after_interrupted_epoch_gives_same_weights(sample, tmp_path):
    full = _train(sample, tmp_path, "full", 3)
    resumed = _train(sample, tmp_path, "resumed", 1)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    changed = build_model("lenet5").state_dict()
    assert not torch.equal(changed["conv1.0.weight"], full.state_dict()["conv1.0.weight"])
