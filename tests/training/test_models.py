"""Registry architectures: they build from hyper-parameters, learn, and report measured stats."""

from __future__ import annotations

import pytest
import torch

from training.data import load_digits_dataset, make_segmentation_2d, make_segmentation_3d
from training.models import (
    ARCHITECTURES,
    BottleneckFCN,
    build_model,
    check_input_shape,
    init_weights,
    model_stats,
    resolve_hparams,
)
from training.trainer import compute_loss

SMALL = {"depth": 2, "base_width": 4}


def _loss_falls(arch: str, hparams: dict, data, steps: int, lr: float) -> tuple[float, float]:
    model = build_model(arch, hparams, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(data.inputs)
    y = torch.from_numpy(data.targets)
    losses = []
    for _ in range(steps):
        loss = compute_loss(model(x), y, data.kind, "auto")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[:2]) / 2, sum(losses[-2:]) / 2


@pytest.mark.parametrize("arch", ["unet2d", "fcn"])
def test_segmentation_2d_loss_falls(arch: str) -> None:
    data = make_segmentation_2d(8, 16, seed=3)
    first, last = _loss_falls(arch, SMALL, data, steps=40, lr=1e-2)
    assert last < 0.8 * first


def test_unet3d_loss_falls() -> None:
    data = make_segmentation_3d(4, 8, seed=3)
    first, last = _loss_falls("unet3d", {"depth": 1, "base_width": 4}, data, steps=20, lr=1e-2)
    assert last < 0.8 * first


def test_cnn_loss_falls_on_digits() -> None:
    data = load_digits_dataset().subset(slice(0, 128))
    first, last = _loss_falls("cnn", {"base_width": 8}, data, steps=30, lr=1e-2)
    assert last < 0.7 * first


def test_every_architecture_outputs_documented_shape() -> None:
    shapes = {"unet2d": (2, 16, 16), "fcn": (2, 16, 16), "unet3d": (2, 8, 8, 8), "cnn": (2, 12, 12)}
    assert set(shapes) == set(ARCHITECTURES)
    for arch, shape in shapes.items():
        out_key = ARCHITECTURES[arch].output_key
        model = build_model(arch, {"in_channels": 2, out_key: 3, **SMALL})
        out = model(torch.zeros(5, *shape))
        if ARCHITECTURES[arch].kind == "segmentation":
            assert out.shape == (5, 3, *shape[1:])
        else:
            assert out.shape == (5, 3)


@pytest.mark.parametrize("arch", ["unet2d", "fcn"])
def test_init_weights_lets_the_input_reach_the_logits(arch: str) -> None:
    # PyTorch's default init shrank the signal ~6x per conv + ReLU: the demo U-Net's initial
    # logits varied by ~0.002 across pixels and images (at most 0.02 over these seeds), i.e. the
    # output was its bias, and some seeds never learned. He init keeps them >= 0.06 here.
    x = torch.from_numpy(make_segmentation_2d(16, 32, seed=7).inputs)  # (16, 1, 32, 32)
    for seed in range(8):
        model = build_model(arch, {"depth": 2, "base_width": 8}, seed=seed)
        with torch.no_grad():
            logits = model(x)  # (16, 1, 32, 32)
        assert logits.std() > 0.03, (seed, float(logits.std()))


def test_init_weights_he_normal_zero_bias_unit_gain_head() -> None:
    model = build_model("unet2d", {"depth": 2, "base_width": 32}, seed=0)
    bottom = model.bottom[2].weight.detach()  # 3x3 conv, 128 -> 128 filters: fan_in 1152
    assert abs(bottom.std().item() / (2 / 1152) ** 0.5 - 1) < 0.05  # 147k samples
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    head = model.head.weight.detach()  # 1x1 conv, 32 -> 1: unit gain, std sqrt(1/32)
    assert abs(head.std().item() / (1 / 32) ** 0.5 - 1) < 0.25  # 32 samples; He would be +41%


def test_init_weights_fcn_residual_blocks_start_as_identity() -> None:
    model = BottleneckFCN(1, 1, depth=1, base_width=8)
    block = model.net[2]  # the first bottleneck
    x = torch.rand(2, 8, 4, 4)  # non-negative, as after a ReLU
    assert torch.equal(block(x), x)


def test_invalid_init_weights_output_layer() -> None:
    model = build_model("cnn", {}, seed=0)
    with pytest.raises(TypeError, match="output layer"):
        init_weights(model, output=torch.nn.ReLU())


def test_build_model_seed_is_reproducible() -> None:
    a = build_model("unet2d", SMALL, seed=7).state_dict()
    b = build_model("unet2d", SMALL, seed=7).state_dict()
    c = build_model("unet2d", SMALL, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_model_stats_hand_computed_cnn() -> None:
    # conv 3x3, 1->2 channels, padded, on 4x4: 2*4*4 outputs x 9 MACs = 288; linear 2->2: 4 MACs.
    model = build_model("cnn", {"depth": 1, "base_width": 2, "num_classes": 2})
    stats = model_stats(model, (1, 4, 4))
    assert stats.macs_per_sample == 288 + 4
    assert stats.flops_per_sample == 2 * 292
    assert stats.parameters == (2 * 9 + 2) + (2 * 2 + 2)
    assert stats.size_bytes == 4 * stats.parameters


def test_model_stats_scale_with_pixels() -> None:
    model = build_model("unet2d", SMALL)
    small, big = model_stats(model, (1, 16, 16)), model_stats(model, (1, 32, 32))
    assert big.macs_per_sample == 4 * small.macs_per_sample
    assert big.parameters == small.parameters == sum(p.numel() for p in model.parameters())


def test_unet_filters_double_per_step() -> None:
    model = build_model("unet2d", {"depth": 3, "base_width": 8})
    widths = [block[0].out_channels for block in model.down] + [model.bottom[0].out_channels]
    assert widths == [8, 16, 32, 64]
    assert all(conv.kernel_size == (3, 3) for conv in model.modules()
               if isinstance(conv, torch.nn.Conv2d) and conv.in_channels != 2 * conv.out_channels
               and conv.kernel_size not in ((1, 1), (2, 2)))


def test_invalid_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet", {})


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"depht": 2}, "unknown hyper-parameter"),
        ({"depth": True}, "must be an integer"),
        ({"depth": 2.0}, "must be an integer"),
        ({"depth": "2"}, "must be an integer"),
        ({"depth": 0}, "out of range"),
        ({"base_width": 1024, "depth": 6}, "exceeds"),
        ({"out_channels": 0}, "out of range"),
    ],
)
def test_invalid_hparams(hparams: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("unet2d", hparams)


def test_invalid_impossible_shape() -> None:
    check_input_shape("unet2d", {"depth": 2}, (1, 32, 32))
    with pytest.raises(ValueError, match="multiples of 4"):
        check_input_shape("unet2d", {"depth": 2}, (1, 30, 32))
    with pytest.raises(ValueError, match="channels"):
        check_input_shape("unet2d", {"depth": 2}, (3, 32, 32))
    with pytest.raises(ValueError, match="4 integers"):
        check_input_shape("unet3d", {}, (1, 32, 32))
    with pytest.raises(ValueError, match="at least 4"):
        check_input_shape("cnn", {"depth": 2}, (1, 2, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        build_model("unet2d", {"depth": 2})(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="5-D input"):
        build_model("unet3d", {"depth": 1})(torch.zeros(1, 1, 8, 8))


def test_resolve_hparams_fills_defaults() -> None:
    assert resolve_hparams("cnn", {"num_classes": 3}) == {
        "in_channels": 1, "num_classes": 3, "depth": 2, "base_width": 16,
    }


def test_seeded_build_is_the_same_while_another_thread_reseeds_the_global_rng() -> None:
    """A seeded build draws from its own generator (issue 15: an anchored start must come out
    bit for bit as a validator rebuilds it, while other miner threads of the devnet reseed
    torch's global RNG every epoch)."""
    import threading

    import torch

    from training.models import build_model

    def flat(seed: int) -> torch.Tensor:
        model = build_model("unet2d", {"depth": 2, "base_width": 8}, seed=seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    want = flat(5)
    stop = threading.Event()

    def reseed() -> None:
        while not stop.is_set():
            torch.manual_seed(1)
            torch.randn(64)

    t = threading.Thread(target=reseed, daemon=True)
    t.start()
    try:
        assert all(torch.equal(flat(5), want) for _ in range(30))
    finally:
        stop.set()
        t.join()
    assert not torch.equal(flat(6), want)
