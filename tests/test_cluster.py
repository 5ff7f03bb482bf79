import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.cluster import Cluster, ClusteredLayer, SharedWeight, kmeans_1d, pack_bits, unpack_bits
from slimkit.measure.metric import evaluate
from slimkit.measure.size import artifact_size
from slimkit.recipe import ConfigError, Recipe
from slimkit.train import FineTune, fit


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_digits_cnn(digits):
    """A digits-cnn trained for a few seconds (~95% top-1), saved as the base for clustering tests."""
    model = sk.load_model("zoo:digits-cnn")
    fit(model, digits, FineTune(epochs=4, lr=0.05, batch_size=64), progress=False)
    return model


@pytest.mark.parametrize("bits", range(1, 9))
def test_packing_round_trips_at_exact_width(bits):
    values = torch.randint(0, 2**bits, (1001,))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and len(packed) == -(-1001 * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), values)


@pytest.mark.parametrize("init", ["linear", "density"])
def test_kmeans_finds_well_separated_groups(init):
    means = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    values = (means[:, None] + 0.05 * torch.randn(4, 500)).flatten()
    centroids, index = kmeans_1d(values, 4, init)
    assert torch.allclose(centroids, means, atol=0.02)
    assert torch.equal(torch.bincount(index), torch.full((4,), 500))


def test_shared_weight_has_2_pow_bits_values_keeps_zeros_and_packs_4_bits():
    layer = nn.Linear(256, 256)
    with torch.no_grad():
        layer.weight[:, :128] = 0  # as if pruned
    dense_bytes = artifact_size(nn.Sequential(layer))[0]
    shared = SharedWeight.fit(layer.weight, 4, "linear", keep_zeros=True)
    weight = shared()
    assert shared.zero and len(shared.codebook) == 15
    assert torch.equal(weight[:, :128], torch.zeros(256, 128)) and (weight[:, 128:] != 0).all()
    assert len(weight.unique()) <= 16
    err = (weight - layer.weight).norm() / layer.weight.norm()
    assert err < 0.08  # uniform weights, 15 levels: step / sqrt(12) relative to the std
    clustered = nn.Sequential(ClusteredLayer(layer, shared))
    size = artifact_size(clustered)[0]
    assert 256 * 256 // 2 < size < 256 * 256 // 2 + 256 * 4 + 15 * 4 + 512  # indices + bias + codebook + header
    assert size < dense_bytes / 7


def test_centroid_gradient_is_the_mean_over_its_cluster():
    layer = nn.Conv2d(4, 6, 3)
    shared = SharedWeight.fit(layer.weight, 3, "density", keep_zeros=True)
    clustered = ClusteredLayer(layer, shared)
    x = torch.randn(2, 4, 7, 7)
    clustered(x).square().sum().backward()
    weight = shared().detach().requires_grad_()
    nn.functional.conv2d(x, weight, layer.bias).square().sum().backward()
    index = unpack_bits(shared.indices, 3, weight.numel())
    counts = torch.bincount(index, minlength=8).clamp_min(1)
    expected = torch.zeros(8).index_add_(0, index, weight.grad.flatten()) / counts
    assert torch.allclose(shared.codebook.grad, expected, rtol=1e-4, atol=1e-5)


def test_bits_outside_1_to_8_are_errors():
    with pytest.raises(ConfigError, match="bits: must be in 1..8, got 9"):
        Cluster(bits=9)
    with pytest.raises(sk.UserError, match=r"steps\[0\].cluster.bits: must be in 1..8, got 0"):
        Recipe.from_dict({"steps": [{"cluster": {"bits": 0}}]})


def test_centroid_fine_tuning_recovers_2_bit_accuracy(trained_digits_cnn, digits):
    base = evaluate(trained_digits_cnn, digits)["value"]
    plain = sk.apply(_copy(trained_digits_cnn), Cluster(bits=2), data=digits)
    tuned = sk.apply(_copy(trained_digits_cnn), Cluster(bits=2, epochs=3, lr=0.02, batch_size=64), data=digits)
    indices = {n: m.shared.indices for n, m in plain.named_modules() if isinstance(m, ClusteredLayer)}
    tuned_indices = {n: m.shared.indices for n, m in tuned.named_modules() if isinstance(m, ClusteredLayer)}
    assert all(torch.equal(indices[n], tuned_indices[n]) for n in indices)  # only the centroids moved
    plain_acc, tuned_acc = evaluate(plain, digits)["value"], evaluate(tuned, digits)["value"]
    assert base > 0.9
    assert tuned_acc > plain_acc + 0.2 and tuned_acc > base - 0.1, (base, plain_acc, tuned_acc)


def test_checkpoint_round_trip_is_exact_and_smaller(trained_digits_cnn, digits, tmp_path):
    model = _copy(trained_digits_cnn)
    dense = artifact_size(model)[0]
    small = sk.apply(model, Cluster(bits=3, init="density"), data=digits)
    sk.save_checkpoint(small, tmp_path / "ckpt")
    loaded = sk.load_model(str(tmp_path / "ckpt"))
    x = digits.test[0][:32]
    assert torch.equal(loaded(x), small.eval()(x))
    assert (tmp_path / "ckpt" / "model.safetensors").stat().st_size == artifact_size(small)[0] < dense / 3


def _copy(model):
    import copy

    return copy.deepcopy(model)
