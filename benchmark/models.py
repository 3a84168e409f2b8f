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

import torch
from torch import Tensor, nn

from .catalog import MODEL_FAMILIES, TEXT_CORPORA

Shape = tuple[int, int, int]
WRN_PATTERN = re.compile(r"wrn-(\d+)-(\d+)")
MOBILENET_PATTERN = re.compile(r"mobilenet-v([12])-(\d+(?:\.\d+)?)")
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


def resnet_50(num_classes: int, input_shape: Shape, width: float = 1.0) -> nn.Module:
    """torchvision's ResNet-50 (exactly `torchvision.models.resnet50` at width 1; `benchmark.resnets`)."""
    from .resnets import resnet_50 as build  # torchvision's models import in seconds: only when one is built

    return build(num_classes, input_shape, width)


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to a multiple of `divisor` (at least `divisor`, never more than 10% below `value`):
    the channel rule of the MobileNet papers' and the RigL reference code's width multiplier."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + batch norm (+ ReLU)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class MobileNetV1(nn.Module):
    """MobileNet-v1 (Howard et al. 2017) as the RigL reference code builds it (`mobilenetv1_model.py`):
    a 3x3 stem, 13 depthwise-separable blocks (3x3 depthwise, 1x1 pointwise, each with BN and ReLU), average
    pooling and a fully connected classifier. Channels are `make_divisible(int(width * c))` (the first
    block's exactly `int(width * 64)`); 569M multiply-adds at 224x224 and width 1."""

    BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1))

    def __init__(self, num_classes: int, input_shape: Shape, width: float = 1.0):
        super().__init__()
        channels = make_divisible(32 * width)
        layers = [conv_bn(input_shape[0], channels, 3, 2)]
        for i, (filters, stride) in enumerate(self.BLOCKS):
            out = make_divisible(int(width * filters), 1 if i == 0 else 8)
            layers.append(nn.Sequential(conv_bn(channels, channels, 3, stride, groups=channels),
                                        conv_bn(channels, out, 1)))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNet-v2 block: 1x1 expansion (none for the first block), 3x3 depthwise, linear 1x1 projection,
    and the identity shortcut when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: float):
        super().__init__()
        hidden = int(expansion * in_channels)
        expand = [conv_bn(in_channels, hidden, 1)] if expansion != 1 else []
        self.block = nn.Sequential(*expand, conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   conv_bn(hidden, out_channels, 1, relu=False))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNet-v2 (Sandler et al. 2018) as the RigL reference code builds it (`mobilenetv2_model.py`):
    a 3x3 stem, 17 inverted-residual blocks (expansion 6), a 1x1 conv to `max(1280, make_divisible(1280 *
    width))` channels, average pooling and a fully connected classifier; ReLU activations. 300M
    multiply-adds at 224x224 and width 1."""

    BLOCKS = ((16, 1), (24, 2), (24, 1), (32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1), (64, 1),
              (96, 1), (96, 1), (96, 1), (160, 2), (160, 1), (160, 1), (320, 1))

    def __init__(self, num_classes: int, input_shape: Shape, width: float = 1.0, expansion: float = 6.0):
        super().__init__()
        channels = make_divisible(32 * width)
        layers = [conv_bn(input_shape[0], channels, 3, 2)]
        for i, (filters, stride) in enumerate(self.BLOCKS):
            out = make_divisible(int(width * filters), 1 if i == 0 else 8)
            layers.append(InvertedResidual(channels, out, stride, expansion if i > 0 else 1))
            channels = out
        last = max(1280, make_divisible(1280 * width))
        layers.append(conv_bn(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


MOBILENETS = {"1": MobileNetV1, "2": MobileNetV2}
# ----- character-level language models: input (batch, T) byte ids, output (batch, vocabulary, T) scores -----
#
# Scores come with the classes on dim 1, nn.CrossEntropyLoss's layout for a K-dimensional target, so the
# training loop's loss and accuracy need no change: the target is the (batch, T) next characters.


def _text_shape(name: str, input_shape: tuple[int, ...]) -> int:
    """The sequence length of a text dataset's input shape (T,); ValueError for an image shape."""
    if len(input_shape) != 1:
        raise ValueError(f"{name} is a character-level language model and takes a text dataset "
                         f"({', '.join(TEXT_CORPORA)}), got input shape {tuple(input_shape)}")
    return input_shape[0]


class TiedOutput(nn.Module):
    """Scores over the vocabulary from the embedding matrix E it shares: `x @ E^T + bias` (the RigL paper's
    shared embedding, Appendix I). It holds only the bias, so E stays one dense parameter (the embedding's,
    never a sparse layer); a module of its own so the FLOP counter charges the projection (always dense)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return nn.functional.linear(x, weight, self.bias)


class CharGRU(nn.Module):
    """The RigL paper's character model (Appendix I): an embedding, a stacked GRU, a readout of two Linear
    layers (ReLU between them; the paper names no activation) to the embedding's width, and scores by the
    shared embedding matrix (`TiedOutput`, with an output bias)."""

    def __init__(self, vocab: int, embedding: int, hidden: int, readout: int, layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.gru = nn.GRU(embedding, hidden, num_layers=layers, batch_first=True)
        self.readout1 = nn.Linear(hidden, readout)
        self.relu = nn.ReLU()
        self.readout2 = nn.Linear(readout, embedding)
        self.output = TiedOutput(vocab)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.gru(self.embedding(x))
        return self.output(self.readout2(self.relu(self.readout1(h))), self.embedding.weight).transpose(1, 2)


def char_gru(embedding: int, hidden: int, readout: int, layers: int, num_classes: int, input_shape: tuple[int, ...],
             width: float = 1.0) -> nn.Module:
    """A GRU character model with every size times width (embedding, GRU state, first readout layer)."""
    _text_shape("char-gru", input_shape)
    return CharGRU(num_classes, scaled(embedding, width), scaled(hidden, width), scaled(readout, width), layers)


class AttentionMatmuls(nn.Module):
    """Causal scaled dot-product attention of (batch, heads, T, d) queries, keys and values: the QK^T and AV
    matmuls, a module of their own so the FLOP counter charges them (always dense work)."""

    def __init__(self, length: int):
        super().__init__()
        self.register_buffer("future", torch.ones(length, length, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        t = q.shape[-2]
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(self.future[:t, :t], float("-inf"))
        return torch.matmul(scores.softmax(-1), v)


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head attention and a 4x MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, length: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention = AttentionMatmuls(length)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(self.attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(self.gelu(self.fc1(self.norm2(x))))


class CharGPT(nn.Module):
    """A GPT-style character model: token and learned position embeddings, pre-norm blocks, a final norm
    and a Linear head to the vocabulary."""

    def __init__(self, vocab: int, length: int, dim: int, heads: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(length, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, length) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x: Tensor) -> Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.blocks(self.embedding(x) + self.position(positions))
        return self.head(self.norm(h)).transpose(1, 2)


def char_gpt(dim: int, heads: int, layers: int, num_classes: int, input_shape: tuple[int, ...],
             width: float = 1.0) -> nn.Module:
    """A CharGPT whose model dimension is times width, rounded to a multiple of the heads."""
    length = _text_shape("char-gpt", input_shape)
    return CharGPT(num_classes, length, heads * max(1, round(dim * width / heads)), heads, layers)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet-300-100": lenet_300_100,
    "lenet-5": lenet_5,
    "wrn-22-2": partial(WideResNet, 22, 2),  # any wrn-D-K with (D - 4) % 6 == 0 is built too, see build_model
    "resnet-50": resnet_50,
    "mobilenet-v1": MobileNetV1,  # mobilenet-vN-A: width multiplier A, see build_model
    "mobilenet-v2": MobileNetV2,
    # RigL Appendix I's character model (shared embedding 128, GRU state 512, readout 256 and 128) and a
    # CPU-sized one of the same shape (embedding 32, GRU state 128, readout 64 and 32)
    "char-gru": partial(char_gru, 128, 512, 256, 1),
    "char-gru-small": partial(char_gru, 32, 128, 64, 1),
    "char-gpt": partial(char_gpt, 256, 8, 6),  # dimension 256, 8 heads, 6 blocks
    "char-gpt-tiny": partial(char_gpt, 64, 4, 2),
}
TEXT_MODELS = ("char-gru", "char-gru-small", "char-gpt", "char-gpt-tiny")


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
    """Build model `name` (a key of MODELS, or one of MODEL_FAMILIES) for inputs of shape (C, H, W)."""
    if width <= 0:
        raise ValueError(f"width must be > 0 (1.0 is the full model; use e.g. 0.5 for half the channels), got {width}")
    if name in MODELS:
        if len(input_shape) == 1 and name not in TEXT_MODELS:
            raise ValueError(f"{name} takes images; a text dataset takes {', '.join(TEXT_MODELS)}")
        return MODELS[name](num_classes, tuple(input_shape), width)
    if match := WRN_PATTERN.fullmatch(name):
        return WideResNet(int(match[1]), int(match[2]), num_classes, tuple(input_shape), width)
    if (match := MOBILENET_PATTERN.fullmatch(name)) and float(match[2]) > 0:
        return MOBILENETS[match[1]](num_classes, tuple(input_shape), float(match[2]) * width)
    if match := MLP_PATTERN.fullmatch(name):
        return mlp(int(match[1]), int(match[2]), num_classes, tuple(input_shape), width)
    known = ", ".join([*MODELS, *(f"{k} ({v})" for k, v in MODEL_FAMILIES.items())])
    raise ValueError(f"unknown model {name!r}; known models: {known}")
