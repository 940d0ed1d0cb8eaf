"""The model registry: architectures a task spec may name, built from hyper-parameters only.

A publisher never ships code (docs/transactions.md): a `TaskSpec` names an entry of `ARCHITECTURES`
plus a flat mapping of hyper-parameters, and miners and validators build the very same module from
it. The inputs of paper Eq. 2–3 (model size, FLOPs per sample) come from `model_stats`, which
measures a real forward pass instead of trusting a formula.

Registered architectures (all outputs are logits, never probabilities):

* ``unet2d`` / ``unet3d`` — the paper's U-Net (Sec. V-A): per resolution step two 3x3 (3x3x3)
  convolutions + ReLU, 2x2 (2x2x2) max-pool down, nearest up-sampling followed by a 2x2 (2x2x2)
  "up-convolution" on the way up, skip connections by concatenation, filters doubling per step.
  Convolutions are zero-padded, so the output has the input's spatial size; every spatial size
  must therefore be divisible by ``2**depth``. Hyper-parameters: ``in_channels`` (1),
  ``out_channels`` (1; 1 means binary segmentation with a sigmoid, >= 2 means softmax classes),
  ``depth`` (3, number of pooling steps), ``base_width`` (16, filters of the first step).
* ``fcn`` — a fully convolutional 2D segmentation net of residual bottleneck blocks (paper
  Sec. V-A: "FCN ... which applied bottleneck design"), encoder-decoder without the U-Net's long
  skip connections. Same hyper-parameters and shape rule as ``unet2d``.
* ``cnn`` — a small classifier: ``depth`` blocks of 3x3 conv + ReLU + 2x2 max-pool with doubling
  filters, global average pooling, one linear layer. Hyper-parameters: ``in_channels`` (1),
  ``num_classes`` (10), ``depth`` (2), ``base_width`` (16). Spatial sizes must be >= ``2**depth``.

Input layouts: 2D models take ``(N, C, H, W)``, ``unet3d`` takes ``(N, C, D, H, W)``.

Initialisation (`init_weights`, applied by every model's constructor): He-normal weights and zero
biases, the output layer at unit gain, the last convolution of every residual branch at zero.
PyTorch's default initialisation is wrong for these ReLU stacks and made some seeds never learn
in a short budget; see `init_weights` for the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

HParamValue = int | float | str | bool
HParams = Mapping[str, HParamValue]
TaskKind = Literal["segmentation", "classification"]

# Caps that keep a hostile or mistyped spec from allocating absurd models: the widest layer of any
# registered model has base_width * 2**depth filters.
_MAX_CHANNELS_IO = 64
_MAX_DEPTH = 6
_MAX_WIDEST_LAYER = 4096
_MAX_CLASSES = 1000


# --------------------------------------------------------------------------------------------
# Building blocks


def _conv(ndim: int, cin: int, cout: int, kernel: int, padding: int) -> nn.Module:
    cls = nn.Conv2d if ndim == 2 else nn.Conv3d
    return cls(cin, cout, kernel_size=kernel, padding=padding)


def _double_conv(ndim: int, cin: int, cout: int) -> nn.Sequential:
    """Two 3x3(x3) convolutions + ReLU: one U-Net resolution step (paper Sec. V-A)."""
    return nn.Sequential(
        _conv(ndim, cin, cout, 3, 1),
        nn.ReLU(inplace=True),
        _conv(ndim, cout, cout, 3, 1),
        nn.ReLU(inplace=True),
    )


def _pool(ndim: int) -> nn.Module:
    return nn.MaxPool2d(2) if ndim == 2 else nn.MaxPool3d(2)


class _Up(nn.Module):
    """Up-sampling by 2 then a 2x2(x2) "up-convolution" that halves the filters (U-Net)."""

    def __init__(self, ndim: int, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        pad = nn.ZeroPad2d((0, 1, 0, 1)) if ndim == 2 else nn.ConstantPad3d((0, 1, 0, 1, 0, 1), 0.0)
        # Pad right/bottom by one so a 2-wide kernel keeps the up-sampled size.
        self.pad = pad
        self.conv = _conv(ndim, cin, cout, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(self.pad(self.up(x)))  # (N, cout, 2*S...)
        return out


def _check_spatial(x: Tensor, ndim: int, multiple: int, name: str) -> None:
    """Raise a clear ValueError instead of a deep shape error inside torch."""
    if x.dim() != ndim + 2:
        want = "(N, C, H, W)" if ndim == 2 else "(N, C, D, H, W)"
        raise ValueError(f"{name} expects a {ndim + 2}-D input {want}, got shape {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if any(s < multiple or s % multiple for s in spatial):
        raise ValueError(
            f"{name}: every spatial size must be a positive multiple of {multiple} "
            f"(2**depth), got {spatial}"
        )


_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


#: The generator `init_weights` draws from inside `build_model(..., seed=...)`: a thread's own
#: (a ContextVar is per thread), so a seeded build is the same whatever other threads do to
#: torch's global RNG meanwhile — the devnet trains several miners in one process, each
#: reseeding the global RNG every epoch, and a proof-of-learning anchored start
#: (training/proof/seeds.py) must come out bit for bit as a validator rebuilds it.
_init_generator: ContextVar[torch.Generator | None] = ContextVar("dlbc_init_generator",
                                                                 default=None)


def init_weights(
    model: nn.Module, *, output: nn.Module, zero: Sequence[nn.Module] = ()
) -> None:
    """Initialise `model` for a ReLU network; every registry model's constructor calls this.

    * Every convolution and linear weight: He-normal, std = sqrt(2 / fan_in) — the U-Net paper's
      own rule (Ronneberger et al. 2015, Sec. 3: "a Gaussian distribution with a standard
      deviation of sqrt(2/N), where N denotes the number of incoming nodes of one neuron"; He et
      al. 2015). It keeps the activation variance constant through each conv + ReLU.
    * Every bias: zero, so no unit starts dead for every input.
    * `output` (the layer producing logits, not followed by a ReLU): unit gain, std =
      sqrt(1 / fan_in), so the first logits are O(1) rather than inflated by the ReLU gain.
    * `zero` (the last layer of each residual branch): zero weights, so a residual block starts as
      the identity and stacking blocks does not blow up the signal (Goyal et al. 2017; Fixup).

    Why not PyTorch's default (uniform, variance 1/(3·fan_in), biases of the same scale): it is
    1/6 of the He variance, so each conv + ReLU shrinks the signal variance about six-fold. In the
    devnet's demo U-Net (depth 2, base width 8) the initial logits varied by 0.002 across pixels
    and images (the output was its bias), and up to half the bottleneck channels were negative for
    every input. Training first had to regrow the signal, and some seeds ended with every logit
    below 0 — an all-background prediction, Dice 0 (seeds 0 and 2 of 0..7 after 5 epochs on the
    demo task, seed 2 still after 20). With this initialisation all eight reach Dice > 0.88.

    The weights are larger than with the default (about 2.4x the standard deviation), so the
    watermark regulariser (docs/watermark.md) needs somewhat more optimizer steps to set every bit.
    """
    gen = _init_generator.get()
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu",
                                    generator=gen)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if not isinstance(output, _WEIGHTED):
        raise TypeError(f"output layer must be a convolution or linear layer, got {output}")
    nn.init.kaiming_normal_(output.weight, mode="fan_in", nonlinearity="linear", generator=gen)
    for module in zero:
        if not isinstance(module, _WEIGHTED):
            raise TypeError(f"zero-initialised layer must be a convolution or linear, got {module}")
        nn.init.zeros_(module.weight)


class UNet(nn.Module):
    """U-Net in 2D or 3D (paper Sec. V-A); see the module docstring for the configuration."""

    def __init__(
        self, ndim: int, in_channels: int, out_channels: int, depth: int, base_width: int
    ) -> None:
        super().__init__()
        self.ndim = ndim
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(ndim, cin, w))
            cin = w
        self.pool = _pool(ndim)
        self.bottom = _double_conv(ndim, widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.ups.append(_Up(ndim, widths[i + 1], widths[i]))
            self.up_convs.append(_double_conv(ndim, 2 * widths[i], widths[i]))
        self.head = _conv(ndim, widths[0], out_channels, 1, 0)
        init_weights(self, output=self.head)

    def forward(self, x: Tensor) -> Tensor:
        _check_spatial(x, self.ndim, 2**self.depth, f"unet{self.ndim}d")
        skips: list[Tensor] = []
        for block in self.down:
            x = block(x)  # (N, w_i, S/2^i ...)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)  # (N, w_depth, S/2^depth ...)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips), strict=True):
            x = conv(torch.cat([up(x), skip], dim=1))  # (N, w_i, S/2^i ...)
        logits: Tensor = self.head(x)  # (N, out_channels, S ...)
        return logits


class _Bottleneck(nn.Module):
    """Residual bottleneck block: 1x1 reduce to width/4, 3x3, 1x1 expand, identity shortcut."""

    def __init__(self, width: int) -> None:
        super().__init__()
        inner = max(1, width // 4)
        self.body = nn.Sequential(
            nn.Conv2d(width, inner, 1), nn.ReLU(inplace=True),
            nn.Conv2d(inner, inner, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(inner, width, 1),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(x + self.body(x))  # (N, width, H, W)
        return out


class BottleneckFCN(nn.Module):
    """Fully convolutional encoder-decoder of residual bottleneck blocks, no long skips.

    Paper Sec. V-A uses a "34-layer FCN, which applied bottleneck design" for 2D segmentation;
    this is that family scaled by `depth` and `base_width`: per resolution step a 3x3 conv that
    doubles the filters after a 2x2 max-pool, then a bottleneck block; the decoder mirrors it
    with up-sampling + 2x2 up-convolution. Unlike the U-Net, nothing bypasses the lowest
    resolution (paper Fig. 2: U-Net "adds more connections" to the FCN).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, base_width: int) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.ReLU(inplace=True),
            _Bottleneck(widths[0]),
        ]
        for i in range(depth):
            layers += [_pool(2), nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                       nn.ReLU(inplace=True), _Bottleneck(widths[i + 1])]
        for i in range(depth - 1, -1, -1):
            layers += [_Up(2, widths[i + 1], widths[i]), nn.ReLU(inplace=True),
                       _Bottleneck(widths[i])]
        head = nn.Conv2d(widths[0], out_channels, 1)
        layers.append(head)
        self.net = nn.Sequential(*layers)
        init_weights(self, output=head,
                     zero=[m.body[-1] for m in self.modules() if isinstance(m, _Bottleneck)])

    def forward(self, x: Tensor) -> Tensor:
        _check_spatial(x, 2, 2**self.depth, "fcn")
        logits: Tensor = self.net(x)  # (N, out_channels, H, W)
        return logits


class SmallCNN(nn.Module):
    """A small image classifier; global average pooling makes it input-size agnostic."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, base_width: int) -> None:
        super().__init__()
        self.depth = depth
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            w = base_width * 2**i
            layers += [_conv(2, cin, w, 3, 1), nn.ReLU(inplace=True), _pool(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)
        init_weights(self, output=self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        _check_spatial(x, 2, 1, "cnn")
        if any(s < 2**self.depth for s in x.shape[2:]):
            raise ValueError(
                f"cnn: spatial sizes must be >= {2**self.depth} (2**depth), "
                f"got {tuple(x.shape[2:])}"
            )
        x = self.features(x)  # (N, w, H/2^depth, W/2^depth)
        x = x.mean(dim=(2, 3))  # (N, w)
        logits: Tensor = self.classifier(x)  # (N, num_classes)
        return logits


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True, slots=True)
class Architecture:
    """One registry entry: how to build it, what its hyper-parameters are, what it outputs."""

    name: str
    kind: TaskKind
    spatial_dims: int
    defaults: Mapping[str, int]
    builder: Callable[[Mapping[str, int]], nn.Module] = field(repr=False)
    output_key: str  # the hyper-parameter giving the number of output channels / classes
    doc: str = ""


def _seg_validate(h: Mapping[str, int]) -> None:
    _range(h, "in_channels", 1, _MAX_CHANNELS_IO)
    _range(h, "out_channels", 1, _MAX_CHANNELS_IO)
    _range(h, "depth", 1, _MAX_DEPTH)
    _range(h, "base_width", 1, _MAX_WIDEST_LAYER)
    if h["base_width"] * 2 ** h["depth"] > _MAX_WIDEST_LAYER:
        raise ValueError(
            f"base_width * 2**depth = {h['base_width'] * 2 ** h['depth']} exceeds "
            f"{_MAX_WIDEST_LAYER} filters"
        )


def _cnn_validate(h: Mapping[str, int]) -> None:
    _range(h, "in_channels", 1, _MAX_CHANNELS_IO)
    _range(h, "num_classes", 2, _MAX_CLASSES)
    _range(h, "depth", 1, _MAX_DEPTH)
    _range(h, "base_width", 1, _MAX_WIDEST_LAYER)
    if h["base_width"] * 2 ** (h["depth"] - 1) > _MAX_WIDEST_LAYER:
        raise ValueError(f"base_width * 2**(depth-1) exceeds {_MAX_WIDEST_LAYER} filters")


def _range(h: Mapping[str, int], key: str, lo: int, hi: int) -> None:
    if not lo <= h[key] <= hi:
        raise ValueError(f"hyper-parameter {key}={h[key]} out of range [{lo}, {hi}]")


def _build_unet2d(h: Mapping[str, int]) -> nn.Module:
    _seg_validate(h)
    return UNet(2, h["in_channels"], h["out_channels"], h["depth"], h["base_width"])


def _build_unet3d(h: Mapping[str, int]) -> nn.Module:
    _seg_validate(h)
    return UNet(3, h["in_channels"], h["out_channels"], h["depth"], h["base_width"])


def _build_fcn(h: Mapping[str, int]) -> nn.Module:
    _seg_validate(h)
    return BottleneckFCN(h["in_channels"], h["out_channels"], h["depth"], h["base_width"])


def _build_cnn(h: Mapping[str, int]) -> nn.Module:
    _cnn_validate(h)
    return SmallCNN(h["in_channels"], h["num_classes"], h["depth"], h["base_width"])


_SEG_DEFAULTS = {"in_channels": 1, "out_channels": 1, "depth": 3, "base_width": 16}

ARCHITECTURES: dict[str, Architecture] = {
    "unet2d": Architecture("unet2d", "segmentation", 2, _SEG_DEFAULTS, _build_unet2d,
                           "out_channels", "2D U-Net (paper Sec. V-A)"),
    "unet3d": Architecture("unet3d", "segmentation", 3, _SEG_DEFAULTS, _build_unet3d,
                           "out_channels", "3D U-Net (paper Sec. V-A)"),
    "fcn": Architecture("fcn", "segmentation", 2, _SEG_DEFAULTS, _build_fcn,
                        "out_channels", "2D FCN of residual bottleneck blocks (paper Sec. V-A)"),
    "cnn": Architecture("cnn", "classification", 2,
                        {"in_channels": 1, "num_classes": 10, "depth": 2, "base_width": 16},
                        _build_cnn, "num_classes", "small conv classifier"),
}


def get_architecture(arch: str) -> Architecture:
    """The registry entry for `arch`, or a ValueError naming the known ones."""
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def resolve_hparams(arch: str, hparams: HParams) -> dict[str, int]:
    """Defaults overlaid with `hparams`, type-checked; unknown keys are an error, not ignored.

    Rejecting unknown keys matters: two nodes that silently ignored different typos would build
    different models from the same spec.
    """
    entry = get_architecture(arch)
    unknown = sorted(set(hparams) - set(entry.defaults))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) for {arch}: {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(entry.defaults))}"
        )
    resolved = dict(entry.defaults)
    for key, value in hparams.items():
        # bool is an int subclass; `depth=True` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"hyper-parameter {key} must be an integer, got {value!r}"
            raise ValueError(msg)  # noqa: TRY004 - one error type for every bad spec
        resolved[key] = value
    return resolved


def build_model(arch: str, hparams: HParams | None = None, *, seed: int | None = None) -> nn.Module:
    """Build registry architecture `arch` from `hparams` (missing keys take the defaults).

    With `seed`, the initial weights are drawn from a generator of their own seeded `seed`
    (`_init_generator`): reproducible, also while other threads use torch's global RNG, which
    is left as it was. Raises ValueError for an unknown architecture or bad / impossible
    hyper-parameters.
    """
    entry = get_architecture(arch)
    resolved = resolve_hparams(arch, hparams or {})
    if seed is None:
        return entry.builder(resolved)
    token = _init_generator.set(torch.Generator().manual_seed(seed))
    try:
        with torch.random.fork_rng(devices=[]):  # layers' own default init draws from it
            return entry.builder(resolved)
    finally:
        _init_generator.reset(token)


def check_input_shape(arch: str, hparams: HParams | None, input_shape: Sequence[int]) -> None:
    """Raise ValueError unless a sample of `input_shape` (C, *spatial) fits the architecture.

    Lets a spec be rejected before any data is downloaded or any model is built.
    """
    entry = get_architecture(arch)
    h = resolve_hparams(arch, hparams or {})
    shape = tuple(input_shape)
    if len(shape) != entry.spatial_dims + 1 or any(
        isinstance(s, bool) or not isinstance(s, int) for s in shape
    ):
        raise ValueError(
            f"{arch} needs a per-sample shape of {entry.spatial_dims + 1} integers "
            f"(C, {'D, ' if entry.spatial_dims == 3 else ''}H, W), got {shape}"
        )
    if shape[0] != h["in_channels"]:
        raise ValueError(f"{arch}: input has {shape[0]} channels, in_channels={h['in_channels']}")
    multiple = 2 ** h["depth"]
    if entry.kind == "segmentation":
        bad = any(s < multiple or s % multiple for s in shape[1:])
    else:
        bad = any(s < multiple for s in shape[1:])
    if bad:
        raise ValueError(
            f"{arch} with depth={h['depth']}: spatial sizes {shape[1:]} must be "
            f"{'multiples of' if entry.kind == 'segmentation' else 'at least'} {multiple}"
        )


# --------------------------------------------------------------------------------------------
# Measured statistics (inputs of paper Eq. 2-3)


@dataclass(frozen=True, slots=True)
class ModelStats:
    """Measured size and cost of a model.

    `size_bytes` is the byte size of all parameter and buffer tensors (the safetensors payload,
    without its small JSON header). `flops_per_sample` counts one forward pass of one sample as
    2 FLOPs per multiply-add of every convolution, transposed convolution and linear layer
    (`macs_per_sample` is the multiply-add count); ReLU, pooling and up-sampling are ignored, as
    is customary, being orders of magnitude cheaper.
    """

    parameters: int
    size_bytes: int
    flops_per_sample: int
    macs_per_sample: int


def _layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() * per_out
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        per_in = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        return inputs[0].numel() * per_in
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def model_stats(model: nn.Module, input_shape: Sequence[int]) -> ModelStats:
    """Measure `model` on one zero sample of per-sample shape `input_shape` (C, *spatial).

    The multiply-adds are counted by forward hooks during a real forward pass, so the figure
    follows the actual layer shapes rather than a formula that could drift from the code.
    """
    shape = tuple(int(s) for s in input_shape)
    params = sum(p.numel() for p in model.parameters())
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    macs = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal macs
        macs += _layer_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return ModelStats(parameters=params, size_bytes=size, flops_per_sample=2 * macs,
                      macs_per_sample=macs)
