"""ImageInput: the evaluation crop, the random resized crop + flip on the device, its generator."""

import pytest
import torch
import torch.nn.functional as F

from grouprobust.backbones.image_input import ImageInput, eval_crop_side
from grouprobust.errors import GroupRobustError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(batch=4, side=16, seed=0):
    return torch.randint(0, 256, (batch, 3, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _normalise(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_eval_is_the_centre_crop_normalised_at_the_stored_side():
    x = _images(side=256)  # stored_size(224)
    out = ImageInput(224, MEAN, STD, augment=True).eval()(x)
    assert out.shape == (4, 3, 224, 224) and out.dtype == torch.float32
    assert torch.allclose(out, _normalise(x[..., 16:240, 16:240].float() / 255), atol=1e-6)


def test_eval_resizes_the_centre_crop_when_its_side_is_not_the_image_size():
    x = _images(side=40)
    crop = eval_crop_side(40)  # 35
    out = ImageInput(20, MEAN, STD, augment=False)(x)
    start = round((40 - crop) / 2)
    expected = F.interpolate(x[..., start:start + crop, start:start + crop].float() / 255, size=(20, 20),
                             mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(out, _normalise(expected), atol=1e-6)


def test_augment_off_is_the_eval_path_in_training_mode():
    x = _images(side=37)
    module = ImageInput(32, MEAN, STD, augment=False).train()
    assert torch.equal(module(x), module.eval()(x))


def test_float_and_uint8_inputs_give_the_same_output():
    x = _images(side=37)
    for augment in (False, True):
        a = ImageInput(32, MEAN, STD, augment=augment)
        b = ImageInput(32, MEAN, STD, augment=augment)
        assert torch.allclose(a(x), b(x.float() / 255), atol=1e-6)


def test_training_calls_differ_and_reseeding_reproduces():
    x = _images(side=37)
    module = ImageInput(32, MEAN, STD, augment=True)
    module.seed(3)
    first, second = module(x), module(x)
    assert first.shape == (4, 3, 32, 32)
    assert not torch.equal(first, second)
    module.seed(3)
    assert torch.equal(module(x), first)
    other = ImageInput(32, MEAN, STD, augment=True)
    other.seed(4)
    assert not torch.equal(other(x), first)


def test_saved_generator_state_resumes_the_same_sequence():
    x = _images(side=37)
    module = ImageInput(32, MEAN, STD, augment=True)
    module.seed(1)
    module(x)
    state = module.get_rng_state()
    expected = module(x)
    resumed = ImageInput(32, MEAN, STD, augment=True)
    resumed.set_rng_state(state)  # before its generator exists
    assert torch.equal(resumed(x), expected)
    module.set_rng_state(state)  # on a live generator
    assert torch.equal(module(x), expected)


def test_a_full_square_crop_without_flip_returns_the_image():
    x = _images(side=24)
    module = ImageInput(24, MEAN, STD, augment=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(module(x), _normalise(x.float() / 255), atol=1e-5)
    # and resized to another side, it is a plain bilinear resize of the whole square
    module = ImageInput(16, MEAN, STD, augment=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    expected = F.interpolate(x.float() / 255, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(module(x), _normalise(expected), atol=1e-5)


def test_flips_happen_about_half_the_time():
    # a full crop with flip is either the image or its mirror, so each sample's flip can be read off
    x = _images(batch=2000, side=8)
    module = ImageInput(8, (0, 0, 0), (1, 1, 1), augment=True, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out = module(x)
    plain = torch.isclose(out, x.float() / 255, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(out, x.flip(-1).float() / 255, atol=1e-5).flatten(1).all(1)
    assert bool((plain ^ mirrored).all())
    assert 900 < int(mirrored.sum()) < 1100


def test_crop_boxes_follow_scale_and_ratio():
    module = ImageInput(32, MEAN, STD, augment=True, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    boxes = module.crop_boxes(5000, 100, 100, torch.device("cpu"))
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 100) & (left + w <= 100)).all())
    area = h * w / 1e4
    assert 0.29 <= float(area.min()) and float(area.max()) <= 0.61  # rounding moves the area slightly
    assert 0.45 <= float((w / h).min()) and float((w / h).max()) <= 2.2
    assert float(area.std()) > 0.05 and len(torch.unique(top)) > 30


def test_has_no_parameters_and_needs_no_gradient():
    module = ImageInput(32, MEAN, STD, augment=True)
    assert list(module.parameters()) == [] and module.state_dict() == {}
    x = _images(side=37).float().requires_grad_(False)
    assert not module(x).requires_grad


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(GroupRobustError, match="image_size"):
        ImageInput(0, MEAN, STD, augment=True)
    with pytest.raises(GroupRobustError, match="scale"):
        ImageInput(32, MEAN, STD, augment=True, scale=(0.5, 1.5))
    with pytest.raises(GroupRobustError, match="ratio"):
        ImageInput(32, MEAN, STD, augment=True, ratio=(2.0, 1.0))
    with pytest.raises(GroupRobustError, match="std"):
        ImageInput(32, MEAN, (0.2, 0.0, 0.2), augment=True)
    with pytest.raises(GroupRobustError, match="shape"):
        ImageInput(32, MEAN, STD, augment=True)(torch.zeros(2, 1, 37, 37))
