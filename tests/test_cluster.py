import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.cluster import (
    Cluster, ClusteredLayer, SharedWeight, decode, encode, kmeans_1d, load_artifact, pack_bits, save_artifact,
    stream_sizes, unpack_bits,
)
from slimkit.measure.metric import evaluate
from slimkit.measure.size import artifact_size
from slimkit.prune import MagnitudePrune
from slimkit.recipe import ConfigError, Recipe


pytestmark = pytest.mark.usefixtures("one_thread")


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
    with pytest.raises(sk.UserError, match="cluster.layers: 'block.*' matches no Linear/Conv/Embedding layer"):
        sk.apply(nn.Sequential(nn.Linear(8, 8)), Cluster(layers=("block.*",)), example_inputs=(torch.zeros(1, 8),))


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


def _entropy_bytes(counts):
    """Order-0 entropy of symbols with these counts, in bytes."""
    p = counts[counts > 0].double() / counts.sum()
    return float(-(p * p.log2()).sum() * counts.sum() / 8)


def test_deep_compression_artifact_decodes_exactly_and_codes_near_the_entropy(trained_digits_cnn, digits, tmp_path):
    pruned = sk.apply(_copy(trained_digits_cnn), MagnitudePrune(sparsity=0.8, scope="layer"), data=digits)
    model = sk.apply(pruned, Cluster(bits=4), data=digits)
    path = tmp_path / "model.slimdc"
    size = save_artifact(model, path)
    state, reference = load_artifact(path), model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) and state[k].dtype == reference[k].dtype for k in reference)
    sk.save_checkpoint(model, tmp_path / "ckpt")  # the structure: rebuilt by replay, then its tensors wiped
    rebuilt = sk.load_model(str(tmp_path / "ckpt"))
    with torch.no_grad():
        for tensor in rebuilt.state_dict().values():
            tensor.zero_()
    rebuilt.load_state_dict(state)
    x = digits.test[0][:64]
    assert torch.equal(rebuilt(x), model.eval()(x))
    # Every byte of the file is accounted for; the sparse indices cost little more than their entropy.
    sizes = stream_sizes(path.read_bytes())
    assert sum(sizes.values()) == size == path.stat().st_size
    entropy = 0.0
    for m in model.modules():
        if isinstance(m, ClusteredLayer):
            index = unpack_bits(m.shared.indices, 4, m.shared().numel())
            entropy += _entropy_bytes(torch.bincount((index != 0).long())) + _entropy_bytes(torch.bincount(index[index != 0]))
    assert sizes["gaps"] + sizes["cluster_indices"] < 1.15 * entropy + 150, (sizes, entropy)
    assert size < artifact_size(model)[1]  # smaller than DEFLATE of the safetensors file, headers and all


def test_artifact_codes_long_zero_runs_and_rejects_other_files():
    weight = torch.zeros(2, 1000)
    weight.view(-1)[[0, 254, 510, 511, 1999]] = torch.tensor([1.0, -1.0, 2.0, 0.5, -2.0])  # gaps 0, 253, 255, 0, 1487
    layer = nn.Linear(1000, 2, bias=False)
    shared = SharedWeight.fit(weight, 2, "linear", keep_zeros=True)
    model = nn.Sequential(ClusteredLayer(layer, shared))
    rebuilt = nn.Sequential(ClusteredLayer(nn.Linear(1000, 2, bias=False), SharedWeight((2, 1000), 2, zero=True)))
    rebuilt.load_state_dict(decode(encode(model)))
    assert torch.equal(rebuilt[0].shared.indices, shared.indices) and torch.equal(rebuilt[0].shared(), shared())
    assert torch.equal(shared() != 0, weight != 0)
    with pytest.raises(sk.UserError, match="bad magic"):
        decode(b"PK\x03\x04 not an artifact")


def _copy(model):
    import copy

    return copy.deepcopy(model)
