"""ResNet-50 from torchvision, and its width-scaled variant (imported only when a ResNet is built: torchvision's
models take seconds to import)."""
from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from .models import Shape, scaled


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
