"""Model registry: every model is built for a dataset's shape and scaled by a width multiplier.

Width scales every hidden channel/unit count (rounded to the nearest integer, at least 1); the
Small-Dense baseline uses it to train a narrower dense model. Models use PyTorch's (or
torchvision's) default initialisation, so `torch.manual_seed` before `build_model` fixes the weights.
"""
from __future__ import annotations

import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet

Shape = tuple[int, int, int]
WRN_PATTERN = re.compile(r"wrn-(\d+)-(\d+)")
MLP_PATTERN = re.compile(r"mlp-([1-9]\d*)x([1-9]\d*)")


def scaled(channels: int, width: float) -> int:
    """`channels * width` rounded to the nearest integer, at least 1."""
    return max(1, round(channels * width))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (every element of every parameter tensor)."""
    return sum(p.numel() for p in model.parameters())


def lenet_300_100(num_classes: int, input_shape: Shape, width: float = 1.0) -> nn.Module:
    """LeNet-300-100: an MLP with hidden layers of 300 and 100 units (times width)."""
    h1, h2 = scaled(300, width), scaled(100, width)
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        fc1=nn.Linear(math.prod(input_shape), h1), relu1=nn.ReLU(),
        fc2=nn.Linear(h1, h2), relu2=nn.ReLU(),
        fc3=nn.Linear(h2, num_classes),
    ))


def mlp(hidden: int, layers: int, num_classes: int, input_shape: Shape, width: float = 1.0) -> nn.Module:
    """`mlp-HxL`: `layers` hidden ReLU layers of `hidden` units (times width), then the classifier."""
    sizes = [math.prod(input_shape), *[scaled(hidden, width)] * layers, num_classes]
    modules = OrderedDict(flatten=nn.Flatten())
    for j, (n_in, n_out) in enumerate(itertools.pairwise(sizes), 1):
        modules[f"fc{j}"] = nn.Linear(n_in, n_out)
        if j < len(sizes) - 1:
            modules[f"relu{j}"] = nn.ReLU()
    return nn.Sequential(modules)


def lenet_5(num_classes: int, input_shape: Shape, width: float = 1.0) -> nn.Module:
    """Caffe's LeNet-5 as used by SNIP: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc classes."""
    c1, c2, hidden = scaled(20, width), scaled(50, width), scaled(500, width)
    channels, *spatial = input_shape
    height, width_px = (((s - 4) // 2 - 4) // 2 for s in spatial)  # two unpadded 5x5 convs, each + 2x2 pool
    if min(height, width_px) < 1:
        raise ValueError(f"lenet-5 needs images of at least 16x16, got input shape {input_shape}")
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, c1, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(c1, c2, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(c2 * height * width_px, hidden), relu3=nn.ReLU(),
        fc2=nn.Linear(hidden, num_classes),
    ))


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus a 1x1 conv shortcut
    (applied to the pre-activated input) when the shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, padding=1, bias=False)
        reshapes = stride != 1 or in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, bias=False) if reshapes else None

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        return out + (self.shortcut(activated) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """CIFAR WideResNet-depth-k (Zagoruyko & Komodakis 2016), without dropout."""

    def __init__(self, depth: int, k: int, num_classes: int, input_shape: Shape, width: float = 1.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if k < 1:
            raise ValueError(f"WideResNet widen factor must be >= 1 (wrn-22-2: depth 22, widen factor 2), got {k}")
        blocks = (depth - 4) // 6
        stem, *stages = [scaled(c, width) for c in (16, 16 * k, 32 * k, 64 * k)]
        self.conv1 = nn.Conv2d(input_shape[0], stem, 3, padding=1, bias=False)
        in_planes = stem
        for i, (planes, stride) in enumerate(zip(stages, (1, 2, 2)), start=1):
            layers = [WideBasicBlock(in_planes if b == 0 else planes, planes, stride if b == 0 else 1)
                      for b in range(blocks)]
            self.add_module(f"block{i}", nn.Sequential(*layers))
            in_planes = planes
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(self.relu(self.bn(x))).flatten(1))


class ScaledResNet(ResNet):
    """torchvision's ResNet with the stem and every stage's planes multiplied by width.

    The stages come from torchvision's own `_make_layer` with scaled planes. `ResNet.__init__`
    hard-codes the stem (64 channels) and the classifier input (512 * expansion), so those two are
    rebuilt afterwards, initialised as torchvision does.
    """

    def __init__(self, layers: list[int], num_classes: int, width: float):
        self.width = width  # read by _make_layer during ResNet.__init__
        super().__init__(Bottleneck, layers, num_classes=num_classes)
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = nn.BatchNorm2d(stem)
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # layer1 takes the stem's output
            self.inplanes = scaled(64, self.width)
        return super()._make_layer(block, scaled(planes, self.width), blocks, stride, dilate)


def resnet_50(num_classes: int, input_shape: Shape, width: float = 1.0) -> nn.Module:
    """torchvision's ResNet-50 (exactly `torchvision.models.resnet50` at width 1)."""
    if input_shape[0] != 3:
        raise ValueError(f"resnet-50 takes 3-channel images, got input shape {input_shape}")
    if width == 1.0:
        return torchvision.models.resnet50(num_classes=num_classes)
    return ScaledResNet([3, 4, 6, 3], num_classes, width)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet-300-100": lenet_300_100,
    "lenet-5": lenet_5,
    "wrn-22-2": partial(WideResNet, 22, 2),  # any wrn-D-K with (D - 4) % 6 == 0 is built too, see build_model
    "resnet-50": resnet_50,
}


def glorot_init(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights, U(+-sqrt(6 / (fan_in + fan_out))), and zero biases for every Linear and
    Conv layer: TensorFlow's defaults, which the RigL reference code's models use."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """Build model `name` (a key of MODELS, `wrn-D-K` or `mlp-HxL`) for inputs of shape (C, H, W)."""
    if width <= 0:
        raise ValueError(f"width must be > 0 (1.0 is the full model; use e.g. 0.5 for half the channels), got {width}")
    if name in MODELS:
        return MODELS[name](num_classes, tuple(input_shape), width)
    if match := WRN_PATTERN.fullmatch(name):
        return WideResNet(int(match[1]), int(match[2]), num_classes, tuple(input_shape), width)
    if match := MLP_PATTERN.fullmatch(name):
        return mlp(int(match[1]), int(match[2]), num_classes, tuple(input_shape), width)
    known = ", ".join([*MODELS, "wrn-D-K (depth D = 6n+4, widen factor K)", "mlp-HxL (L hidden layers of H units)"])
    raise ValueError(f"unknown model {name!r}; known models: {known}")
