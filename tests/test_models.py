import pytest
import torch
import torchvision

from benchmark.models import MODELS, build_model, count_parameters

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def module_names(model):
    return [name for name, _ in model.named_modules()]


@pytest.mark.parametrize("name, shape, classes, expected", [
    # 784*300+300 + 300*100+100 + 100*10+10
    ("lenet-300-100", MNIST, 10, 266_610),
    # conv 20*1*25+20, conv 50*20*25+50, fc 800*500+500 (50 channels of 4x4), fc 500*10+10
    ("lenet-5", MNIST, 10, 431_080),
    # WRN-22-2: 3 blocks per stage, channels 16 | 32, 64, 128; BN has 2 params per channel.
    #   stem conv 3*16*9                                   =     432
    #   stage 1: first block 32 + 16*32*9 + 64 + 32*32*9 + 16*32 (1x1 shortcut) = 14_432,
    #            two more blocks of 64 + 32*32*9 + 64 + 32*32*9 = 18_560 each   = 51_552
    #   stage 2: 64 + 32*64*9 + 128 + 64*64*9 + 32*64 = 57_536, 2 x 73_984     = 205_504
    #   stage 3: 128 + 64*128*9 + 256 + 128*128*9 + 64*128 = 229_760, 2 x 295_424 = 820_608
    #   final BN 2*128 = 256, fc 128*10+10 = 1_290      -> total 1_079_642
    ("wrn-22-2", CIFAR, 10, 1_079_642),
    # the 36.5M of the WRN paper; 36,479,194 is what the reference PyTorch WideResNet counts
    ("wrn-28-10", CIFAR, 10, 36_479_194),
    ("resnet-50", (3, 224, 224), 1000, 25_557_032),
])
def test_parameter_counts(name, shape, classes, expected):
    assert count_parameters(build_model(name, classes, shape)) == expected


def test_resnet50_is_torchvisions_at_width_1():
    torch.manual_seed(0)
    ours = build_model("resnet-50", 1000, (3, 224, 224))
    torch.manual_seed(0)
    theirs = torchvision.models.resnet50(num_classes=1000)
    assert type(ours) is type(theirs)
    ours, theirs = ours.state_dict(), theirs.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_resnet50_width_scales_every_stage():
    model = build_model("resnet-50", 10, CIFAR, width=0.5)
    assert module_names(model) == module_names(torchvision.models.resnet50())
    assert model.conv1.out_channels == 32 and model.bn1.num_features == 32
    assert [layer[0].conv1.out_channels for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [32, 64, 128, 256]
    assert model.layer4[-1].conv3.out_channels == 1024 and model.fc.in_features == 1024
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


@pytest.mark.parametrize("name, shape", [("lenet-300-100", MNIST), ("lenet-5", MNIST), ("wrn-22-2", CIFAR), ("wrn-16-1", CIFAR)])
def test_width_shrinks_model_and_keeps_names(name, shape):
    full, half = build_model(name, 10, shape), build_model(name, 10, shape, width=0.5)
    assert count_parameters(half) < count_parameters(full)
    assert module_names(half) == module_names(full)
    assert half(torch.randn(3, *shape)).shape == (3, 10)


@pytest.mark.parametrize("name, shape, classes", [
    ("lenet-300-100", (1, 8, 8), 10), ("lenet-5", MNIST, 10), ("wrn-16-2", CIFAR, 100), ("resnet-50", CIFAR, 100),
    ("mobilenet-v1", (1, 8, 8), 10), ("mobilenet-v2", CIFAR, 100),
])
def test_forward_shapes(name, shape, classes):
    model = build_model(name, classes, shape, width=0.25).eval()
    assert model(torch.randn(2, *shape)).shape == (2, classes)


def test_hidden_sizes_are_rounded_and_at_least_one():
    model = build_model("lenet-300-100", 10, MNIST, width=0.001)
    assert (model.fc1.out_features, model.fc2.out_features) == (1, 1)
    model = build_model("lenet-300-100", 10, MNIST, width=0.333)
    assert (model.fc1.out_features, model.fc2.out_features) == (100, 33)


def test_init_is_deterministic_given_the_seed():
    def weights(seed):
        torch.manual_seed(seed)
        return build_model("wrn-16-1", 10, CIFAR).state_dict()
    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model 'vgg-16'") as err:
        build_model("vgg-16", 10, CIFAR)
    assert all(name in str(err.value) for name in MODELS) and "wrn-D-K" in str(err.value)


@pytest.mark.parametrize("width", [0, -1.0])
def test_width_must_be_positive(width):
    with pytest.raises(ValueError, match="width must be > 0"):
        build_model("lenet-5", 10, MNIST, width=width)


def test_wrn_depth_must_be_6n_plus_4():
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-20-2", 10, CIFAR)


def test_lenet5_rejects_too_small_images():
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("lenet-5", 10, (1, 8, 8))


@pytest.mark.parametrize("name, macs, params", [
    # Howard et al. 2017, table 1 / 8: 569M multiply-adds, 4.2M parameters at 224x224 and width 1
    ("mobilenet-v1", 568_740_352, 4_231_976),
    # Sandler et al. 2018, table 3: 300M multiply-adds (3.4M parameters there; torchvision's count is also 3,504,872)
    ("mobilenet-v2", 300_774_272, 3_504_872),
])
def test_mobilenet_multiply_adds_and_parameters_match_the_architecture_papers(name, macs, params):
    from benchmark.flops import forward_flops

    model = build_model(name, 1000, (3, 224, 224))
    assert count_parameters(model) == params
    assert sum(forward_flops(model, (3, 224, 224)).values()) == 2 * macs
    assert round(macs / 1e6) == {"mobilenet-v1": 569, "mobilenet-v2": 301}[name]


def test_mobilenet_width_follows_the_reference_rounding():
    """Channels are make_divisible(int(A * c), 8) (the first block's int(A * 64) exactly); v2's last conv never
    narrows below 1280; the width in the name and the width argument multiply."""
    v1 = build_model("mobilenet-v1-1.98", 1000, (3, 224, 224))
    convs = [m for m in v1.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 64 and convs[2].out_channels == 126 and v1.fc.in_features == 2024
    assert build_model("mobilenet-v2-0.5", 10, CIFAR).fc.in_features == 1280
    assert build_model("mobilenet-v2-2", 10, CIFAR).fc.in_features == 2560
    half = build_model("mobilenet-v1-2", 10, CIFAR, width=0.5)
    assert count_parameters(half) == count_parameters(build_model("mobilenet-v1", 10, CIFAR))
    with pytest.raises(ValueError, match="unknown model 'mobilenet-v3-1'"):
        build_model("mobilenet-v3-1", 10, CIFAR)
