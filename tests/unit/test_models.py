import pytest
import torch

from visionloop.errors import VisionloopError
from visionloop.models.zoo import (
    ARCHITECTURES,
    build_model,
    freeze,
    load_pretrained,
    min_image_size,
)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_zoo_model_trains_at_its_minimum_input_size(arch):
    size = min_image_size(arch)
    model = build_model(arch, num_classes=7, image_size=size).train()
    logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, 7)
    logits.sum().backward()  # a training step is possible at that size
    with pytest.raises(ValueError, match=f"at least {size}x{size}"):
        build_model(arch, num_classes=7, image_size=size - 1)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="choose one of alexnet, efficientnet_b0"):
        build_model("resnet999", num_classes=2, image_size=32)


def test_pretrained_weights_copy_the_backbone_and_keep_a_fresh_head_for_new_classes(tmp_path):
    torch.manual_seed(0)
    source = build_model("resnet18", num_classes=10, image_size=32)
    torch.save({"model": source.state_dict()}, tmp_path / "checkpoint.pt")  # our checkpoint form
    target = build_model("resnet18", num_classes=3, image_size=32)
    fresh = load_pretrained(target, tmp_path / "checkpoint.pt")
    assert fresh == ["fc.bias", "fc.weight"]
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert target.fc.out_features == 3


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    torch.save(build_model("simple_cnn", 10, 32).state_dict(), tmp_path / "w.pt")
    with pytest.raises(VisionloopError, match="same architecture"):
        load_pretrained(build_model("resnet18", 10, 32), tmp_path / "w.pt")
    with pytest.raises(VisionloopError, match="not found"):
        load_pretrained(build_model("resnet18", 10, 32), tmp_path / "missing.pt")


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_freeze_all_leaves_only_the_head_trainable():
    model = build_model("mobilenet_v3_small", num_classes=4, image_size=32)
    assert freeze(model, "mobilenet_v3_small", "all") > 0
    assert trainable(model) == {"classifier.3.weight", "classifier.3.bias"}


def test_freeze_up_to_a_named_layer_trains_that_layer_and_after():
    model = build_model("resnet18", num_classes=4, image_size=32)
    freeze(model, "resnet18", "layer4")
    assert {name.split(".")[0] for name in trainable(model)} == {"layer4", "fc"}
    assert freeze(build_model("resnet18", 4, 32), "resnet18", "none") == 0
    with pytest.raises(VisionloopError, match=r"no layer 'layer9'.*conv1, bn1"):
        freeze(model, "resnet18", "layer9")
