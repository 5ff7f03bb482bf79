"""Quantization-aware training: fake quantization with straight-through gradients, LSQ step sizes,
and conversion back to stored low-bit layers."""
import copy

import pytest
import torch

import slimkit
import slimkit.quantize as q
from slimkit.quantize.qat import fake_quantize_ste


@torch.inference_mode()
def accuracy(model, task):
    x, y = task.test
    return float((model(x).argmax(1) == y).float().mean())


def test_straight_through_rounding_and_lsq_gradients():
    x = torch.tensor([0.26, -0.74, 3.0], requires_grad=True)
    scale = torch.tensor(0.5, requires_grad=True)
    out = fake_quantize_ste(x, scale, torch.tensor(0.0), -4, 3)
    assert out.tolist() == [0.5, -0.5, 1.5]  # 3.0 clips at qmax * scale
    out.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]  # straight through inside the range, none where clipped
    # d/ds: round(x/s) - x/s inside the range, qmax outside (LSQ)
    assert scale.grad.item() == pytest.approx((1 - 0.52) + (-1 + 1.48) + 3)


@pytest.mark.parametrize("lsq", [False, True])
def test_qat_recovers_w2a8_accuracy_and_stores_two_bit_weights(trained_digits_cnn, digits, lsq, one_thread):
    base = accuracy(trained_digits_cnn, digits)
    ptq_cfg = dict(weights="int2", activations="int8", weight_observer="mse", calibration_batches=4)
    ptq = slimkit.apply(copy.deepcopy(trained_digits_cnn), q.Quantize(**ptq_cfg), data=digits)
    qat_cfg = q.Quantize(**ptq_cfg, qat={"max_batches": 60, "epochs": 2, "lr": 2e-3, "lsq": lsq})
    trained = slimkit.apply(copy.deepcopy(trained_digits_cnn), qat_cfg, data=digits)
    layers = q.quantized_layers(trained)
    assert len(layers) == 7 and all(m.fmt.bits == 2 and m.weight_packed.dtype == torch.uint8 for m in layers.values())
    ptq_acc, qat_acc = accuracy(ptq, digits), accuracy(trained, digits)
    assert ptq_acc < base - 0.1  # 2-bit rounding alone loses a lot
    assert qat_acc > ptq_acc + 0.5 and qat_acc > base - 0.2, (base, ptq_acc, qat_acc)  # STE: 98.4 -> 21.2 -> 86.9%
    if lsq:  # the learned step sizes moved away from the post-training ones
        moved = [not torch.allclose(a.weight_scale, b.weight_scale) for a, b in zip(layers.values(), q.quantized_layers(ptq).values())]
        assert all(moved)
