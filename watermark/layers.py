"""Reading the watermark-carrying weight out of a model, a state dict or a safetensors file.

Uchida et al. (2017) §3.2 embed into w, the mean over output channels of one conv kernel: for a
weight of shape (O, I, kH, kW) that is a vector of I·kH·kW coordinates, shared by every output
channel so the task can keep using channel diversity. Validators only ever see a safetensors file
(docs/verification.md, docs/artifacts.md), so everything here works on tensors alone and never
imports miner code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors import safe_open
from torch import nn

from watermark.errors import WatermarkError
from watermark.keys import DEFAULT_MATRIX, DEFAULT_N_BITS

StateDict = Mapping[str, "torch.Tensor | npt.NDArray[Any]"]


def mean_kernel_numpy(weight: npt.NDArray[Any], name: str) -> npt.NDArray[np.float64]:
    """w (m,) in float64 from a weight (O, ...): mean over output channels, then flattened."""
    check_weight_shape(tuple(weight.shape), name)
    if not np.issubdtype(weight.dtype, np.floating):
        raise WatermarkError(f"layer {name!r} has non-float dtype {weight.dtype}")
    w: npt.NDArray[np.float64] = np.asarray(weight, dtype=np.float64).mean(axis=0).reshape(-1)
    if not np.all(np.isfinite(w)):
        raise WatermarkError(f"layer {name!r} contains NaN or infinite weights")
    return w


def mean_kernel_torch(weight: torch.Tensor, name: str) -> torch.Tensor:
    """w (m,) as a differentiable float32 tensor, for the embedding loss."""
    check_weight_shape(tuple(weight.shape), name)
    if weight.dtype != torch.float32:
        weight = weight.float()
    return weight.mean(dim=0).reshape(-1)  # (O, ...) -> (m,)


def check_weight_shape(shape: tuple[int, ...], name: str) -> None:
    """A watermark needs an (output channels, ...) weight with at least one coordinate per channel."""
    if len(shape) < 2:
        raise WatermarkError(
            f"layer {name!r} has shape {shape}; need a conv or linear weight (O, I, ...)"
        )
    if any(d < 1 for d in shape):
        raise WatermarkError(f"layer {name!r} has an empty dimension in shape {shape}")


def layer_from(model_or_state_dict: nn.Module | StateDict, layer: str) -> npt.NDArray[np.float64]:
    """The mean kernel w of ``layer`` from a module or a state dict of tensors / arrays."""
    if isinstance(model_or_state_dict, nn.Module):
        params = dict(model_or_state_dict.named_parameters())
        tensor: Any = params.get(layer)
        if tensor is None:
            tensor = model_or_state_dict.state_dict().get(layer)
    elif isinstance(model_or_state_dict, Mapping):
        tensor = model_or_state_dict.get(layer)
    else:
        raise WatermarkError(
            f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}"
        )
    if tensor is None:
        raise WatermarkError(f"layer {layer!r} not found in the model")
    if isinstance(tensor, torch.Tensor):
        array = tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
        return mean_kernel_numpy(array, layer)
    if isinstance(tensor, np.ndarray):
        return mean_kernel_numpy(tensor, layer)
    raise WatermarkError(f"layer {layer!r} is a {type(tensor).__name__}, not a tensor")


def layer_from_file(path: str | os.PathLike[str], layer: str) -> npt.NDArray[np.float64]:
    """The mean kernel w of ``layer`` read from a safetensors file, touching only that tensor.

    safe_open memory-maps the file and reads one tensor, so a 270 MB model costs one layer's
    bytes, not the whole file. The torch framework is used so bf16/fp16 files also load.
    """
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            if layer not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise WatermarkError(f"layer {layer!r} not found in {os.fspath(path)!r}")
            tensor = f.get_tensor(layer)
    except WatermarkError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise WatermarkError(f"cannot read safetensors file {os.fspath(path)!r}: {exc}") from exc
    if not torch.is_floating_point(tensor):
        raise WatermarkError(f"layer {layer!r} has non-float dtype {tensor.dtype}")
    return mean_kernel_numpy(tensor.to(torch.float64).numpy(), layer)


def default_layer(
    state_dict: nn.Module | Mapping[str, Any],
    *,
    n_bits: int = DEFAULT_N_BITS,
    matrix: str = DEFAULT_MATRIX,
) -> str:
    """Pick the watermark layer of an architecture from tensor names and shapes alone.

    Rule (order-independent, so miner and validator agree whether they hold a live module or a
    safetensors file, whose keys are sorted): among conv weights (ndim >= 3, name ending in
    ".weight") with enough coordinates for the matrix, take the one with the largest mean-kernel
    size m, ties broken by the smallest name. In an encoder–decoder (U-Net) that is a bottleneck
    or first decoder conv — a middle block, as Uchida chose conv2 of the middle group — and a large
    m spreads the watermark thin so it costs the task least. Falls back to linear weights (ndim 2)
    when the model has no conv.
    """
    if isinstance(state_dict, nn.Module):
        shapes = {k: tuple(v.shape) for k, v in state_dict.state_dict().items()}
    else:
        shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    need = 2 * n_bits if matrix == "diff" else n_bits if matrix == "direct" else 1
    for min_ndim in (3, 2):
        candidates = [
            (-int(np.prod(shape[1:])), name)
            for name, shape in shapes.items()
            if name.endswith(".weight") and len(shape) >= min_ndim and np.prod(shape[1:]) >= need
        ]
        if candidates:
            return min(candidates)[1]
    raise WatermarkError(f"no conv or linear weight with at least {need} coordinates per channel")
