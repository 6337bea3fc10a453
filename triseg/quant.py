"""The quantization backend: the only module that imports ``torch.ao.quantization``.

Eager-mode quantization is deprecated in PyTorch but still shipped; keeping every call here means a
new backend replaces this file and nothing else.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.nn.quantized as nnq
    import torch.ao.quantization as tq

from triseg.errors import TrisegError

BACKENDS = ("fbgemm", "qnnpack", "x86")
QuantStub = tq.QuantStub
DeQuantStub = tq.DeQuantStub
FloatFunctional = nnq.FloatFunctional


def activation_top_code(backend: str) -> int:
    """The largest activation code the backend's observers produce.

    fbgemm and x86 observe activations with ``reduce_range=True`` (7-bit range 0..127, to avoid
    overflow in their int16 accumulation paths); qnnpack uses the full 8-bit range 0..255.
    """
    check_backend(backend)
    return 255 if backend == "qnnpack" else 127


def default_engine(backend: str) -> str:
    """The kernels to run a converted model on: x86 for fbgemm/x86 models, qnnpack for qnnpack ones.

    fbgemm and x86 share one QAT qconfig (7-bit activations, per-channel symmetric int8 weights),
    so a model quantized for either runs on either; the x86 engine (oneDNN for small convolutions)
    is several times faster on LeNet-5's 3- and 6-channel convolutions and gives the same codes.
    """
    check_backend(backend)
    return "qnnpack" if backend == "qnnpack" else "x86"


def check_engine(backend: str, engine: str) -> None:
    """An engine can run a model only if it shares the model's qconfig."""
    check_backend(engine)
    if (backend == "qnnpack") != (engine == "qnnpack"):
        raise TrisegError(f"engine {engine} cannot run a model quantized for {backend}")


def check_backend(backend: str) -> None:
    """Raise a one-line error for an unknown or unavailable backend."""
    if backend not in BACKENDS:
        raise TrisegError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend not in torch.backends.quantized.supported_engines:
        raise TrisegError(f"backend {backend!r} is not available in this PyTorch build")


def set_engine(backend: str) -> None:
    """Select the quantized kernel library used by converted models."""
    check_backend(backend)
    torch.backends.quantized.engine = backend


def fuse(model: nn.Module, groups: list[list[str]], qat: bool) -> nn.Module:
    """Fuse Conv+BN(+ReLU) and Linear+ReLU groups in place (QAT fusion keeps BN trainable)."""
    if not groups:
        return model
    fuse_fn = tq.fuse_modules_qat if qat else tq.fuse_modules
    return fuse_fn(model, groups, inplace=True)


def prepare_qat(model: nn.Module, backend: str) -> nn.Module:
    """Attach the backend's default QAT qconfig and insert fake-quant modules (in place)."""
    set_engine(backend)
    model.qconfig = tq.get_default_qat_qconfig(backend)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(model, inplace=True)
    return model


def freeze_observers(model: nn.Module) -> None:
    """Stop updating the activation/weight ranges (fake quantization stays on)."""
    model.apply(tq.disable_observer)


def freeze_bn_stats(model: nn.Module) -> None:
    """Stop updating BatchNorm running statistics inside fused QAT modules."""
    model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)


def convert(qat_model: nn.Module, engine: str) -> nn.Module:
    """A converted (real INT8) copy of a QAT model, in eval mode, packed for ``engine``."""
    set_engine(engine)
    model = copy.deepcopy(qat_model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tq.convert(model, inplace=False)


def output_qparams(module: nn.Module) -> tuple[float, int]:
    """(scale, zero point) of the activation a fake-quant or converted module emits."""
    for mod in (module, *module.children()):
        post = getattr(mod, "activation_post_process", None)
        if post is not None and hasattr(post, "calculate_qparams"):
            scale, zp = post.calculate_qparams()
            return float(scale.flatten()[0]), int(zp.flatten()[0])
        if isinstance(getattr(mod, "scale", None), (float, torch.Tensor)) and hasattr(mod, "zero_point"):
            return float(mod.scale), int(mod.zero_point)
    raise TrisegError(f"module {type(module).__name__} carries no output quantization parameters")


def activation_qrange(module: nn.Module) -> tuple[int, int]:
    """(quant_min, quant_max) of a QAT module's activation fake-quant."""
    for mod in (module, *module.children()):
        post = getattr(mod, "activation_post_process", None)
        if post is not None and hasattr(post, "quant_min"):
            return int(post.quant_min), int(post.quant_max)
    raise TrisegError(f"module {type(module).__name__} has no activation fake-quant")


def is_quantized_module(module: nn.Module) -> bool:
    """True for a converted quantized module (conv, linear, functional)."""
    return type(module).__module__.startswith("torch.ao.nn.quantized") or type(
        module
    ).__module__.startswith("torch.ao.nn.intrinsic.quantized")


def int8_layer(module: nn.Module) -> dict | None:
    """What the integer simulation needs from a converted module, or None for other modules.

    Returns ``kind`` ('quantize', 'dequantize', 'conv', 'linear' or 'add') and, per kind, the
    output scale / zero point, integer weights with their per-channel scales, the float bias,
    whether ReLU is fused, and the convolution geometry.
    """
    import torch.ao.nn.intrinsic.quantized as nniq

    if isinstance(module, nnq.Quantize):
        return {"kind": "quantize", "scale": float(module.scale), "zero_point": int(module.zero_point)}
    if isinstance(module, nnq.DeQuantize):
        return {"kind": "dequantize"}
    if isinstance(module, nnq.QFunctional):
        return {"kind": "add", "scale": float(module.scale), "zero_point": int(module.zero_point)}
    if isinstance(module, (nnq.Conv2d, nnq.Linear)):
        w = module.weight()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            w_scale = w.q_per_channel_scales().float()
            w_zp = w.q_per_channel_zero_points()
        else:
            w_scale = torch.full((w.shape[0],), float(w.q_scale()))
            w_zp = torch.full((w.shape[0],), int(w.q_zero_point()))
        if bool((w_zp != 0).any()):
            raise TrisegError("integer simulation needs symmetric weights (zero point 0)")
        info = {
            "scale": float(module.scale), "zero_point": int(module.zero_point),
            "weight": w.int_repr().to(torch.int32), "w_scale": w_scale,
            "bias": None if module.bias() is None else module.bias().detach().float(),
            "relu": isinstance(module, (nniq.ConvReLU2d, nniq.LinearReLU)),
        }
        if isinstance(module, nnq.Conv2d):
            info.update(kind="conv", stride=module.stride, padding=module.padding, dilation=module.dilation,
                        groups=module.groups)
        else:
            info.update(kind="linear")
        return info
    return None
