"""Training: a run resumed after an interruption ends with the same weights as an uninterrupted one; bf16
autocast."""

from __future__ import annotations

import pytest
import torch

from triseg.errors import TrisegError
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


def test_bf16_trains_in_bfloat16_and_resumes_a_float32_run(sample, tmp_path):
    seen = []
    torch.manual_seed(0)
    model = build_model("lenet5")
    hook = model.conv1.register_forward_hook(lambda m, args, out: seen.append(out.dtype) if m.training else None)
    fp32 = TrainConfig(epochs=2, batch_size=32, max_train_batches=3, seed=1)
    ckpt = tmp_path / "run.ckpt"

    def kill_after_first_epoch(m, epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, sample, fp32, ckpt, tmp_path / "tb", epoch_hook=kill_after_first_epoch)
    assert set(seen) == {torch.float32}
    state = torch.load(ckpt, weights_only=False)
    del state["config"]["amp"]  # a checkpoint written before the option existed
    torch.save(state, ckpt)
    seen.clear()
    bf16 = TrainConfig(**{**vars(fp32), "amp": True})
    fit(model, sample, bf16, ckpt, tmp_path / "tb", resume=True)  # precision may change on resume
    hook.remove()
    assert set(seen) == {torch.bfloat16}
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(TrisegError, match="other settings"):  # what the run trains may not change
        fit(build_model("lenet5"), sample, TrainConfig(**{**vars(bf16), "lr": 0.01}), ckpt, tmp_path / "tb",
            resume=True)
