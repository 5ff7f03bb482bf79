"""Runtime executorch: fp32 and PT2E-int8 model.pte files reload and match PyTorch within their tolerance; static
shapes, slimkit's own int8 models, missing calibration and ops ExecuTorch lacks are clear errors."""
import copy
import re

import pytest
import torch
from torch import nn

import slimkit
from slimkit.errors import UserError
from slimkit.runtime import TOLERANCES, get_runtime, verify

pytest.importorskip("executorch")


class Net(nn.Module):
    """Two convs and a linear layer on 1x1x8x8 inputs; outputs of order 1, so int8's error is measured at scale."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(1024, 10))
        with torch.no_grad():
            self.body[-1].weight.mul_(10)

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Net().eval()
    assert 0.5 < model(torch.rand(4, 1, 8, 8)).abs().max().item() < 5
    return model


@pytest.fixture(scope="module")
def fp32_file(net, tmp_path_factory):
    return get_runtime("executorch").save(net, (torch.randn(1, 1, 8, 8),), tmp_path_factory.mktemp("fp32"))[0]


def images(batch: int, generator: torch.Generator) -> tuple:
    """Inputs in [0, 1), like images: inside the calibrated ranges (PT2E's histogram observer clips outliers)."""
    return (torch.rand(batch, 1, 8, 8, generator=generator),)


@pytest.fixture(scope="module")
def int8_file(net, tmp_path_factory):
    generator = torch.Generator().manual_seed(1)
    calibration = [images(64, generator) for _ in range(8)]  # cut into 16 batches of 32, the exported batch
    return get_runtime("executorch").save(net, images(32, generator), tmp_path_factory.mktemp("int8"),
                                          precision="int8", calibration=calibration)[0]


def test_executorch_is_available_here():
    assert get_runtime("executorch").available() is None


def test_fp32_model_pte_reloads_by_path_and_folder_and_matches_pytorch(net, fp32_file):
    assert fp32_file.name == "model.pte" and fp32_file.stat().st_size > 0
    x = (torch.randn(1, 1, 8, 8),)
    for source in (fp32_file, fp32_file.parent):
        predictor = get_runtime("executorch").prepare(source, x)
        assert (predictor.runtime, predictor.precision) == ("executorch", "fp32")
        assert verify(predictor, net, x, TOLERANCES["fp32"]) <= TOLERANCES["fp32"]


def test_pt2e_int8_pte_is_int8_smaller_and_within_int8_tolerance(net, fp32_file, int8_file):
    generator = torch.Generator().manual_seed(2)
    predictor = get_runtime("executorch").prepare(int8_file, images(32, generator))
    assert predictor.precision == "int8"  # read back from the file
    diff = verify(predictor, net, images(32, generator), TOLERANCES["int8"])
    assert TOLERANCES["fp32"] < diff <= TOLERANCES["int8"]  # really quantized, and close
    assert int8_file.stat().st_size < 0.5 * fp32_file.stat().st_size


def test_threads_size_the_pool_and_a_resize_reloads_the_programs_loaded_before(net, fp32_file, monkeypatch):
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    x = (torch.randn(1, 1, 8, 8),)
    one, two = (get_runtime("executorch").prepare(fp32_file, x, threads=n) for n in (1, 2))
    loads, load = [], Runtime.get().load_program  # preparing `two` recreated the pool `one` was loaded with
    monkeypatch.setattr(Runtime.get(), "load_program", lambda data: loads.append(data) or load(data))
    expected = net(*x)
    for predictor, threads, reloads in ((one, 1, 1), (one, 1, 1), (two, 2, 2), (one, 1, 3), (two, 2, 4)):
        assert torch.allclose(predictor(*x), expected, atol=TOLERANCES["fp32"])
        assert (portable_lib._threadpool_get_thread_count(), len(loads)) == (threads, reloads)


def test_static_batch_and_bad_inputs_are_user_errors(net, fp32_file):
    runtime = get_runtime("executorch")
    predictor = runtime.prepare(fp32_file, (torch.randn(1, 1, 8, 8),))
    with pytest.raises(UserError, match=r"inputs of shape \[\(1, 1, 8, 8\)\].*got \[\(3, 1, 8, 8\)\]"):
        predictor(torch.randn(3, 1, 8, 8))
    with pytest.raises(UserError, match="dtype=Float"):
        predictor(torch.randn(1, 1, 8, 8, dtype=torch.float64))
    x = (torch.randn(3, 1, 8, 8),)
    assert verify(runtime.prepare(net, x), net, x, TOLERANCES["fp32"]) <= TOLERANCES["fp32"]  # exported for batch 3
    with pytest.raises(UserError, match="not cuda"):
        runtime.prepare(fp32_file, x, device="cuda")
    with pytest.raises(UserError, match="threads >= 1"):
        runtime.prepare(fp32_file, x, threads=0)
    with pytest.raises(UserError, match="no ExecuTorch program"):
        runtime.prepare(fp32_file.parent / "missing.pte", x)


def test_int8_needs_calibration_and_a_float_model(net, tmp_path):
    runtime, x = get_runtime("executorch"), (torch.randn(1, 1, 8, 8),)
    with pytest.raises(UserError, match="needs `calibration`"):
        runtime.prepare(net, x, precision="int8")
    with pytest.raises(UserError, match="needs `calibration`"):
        runtime.save(net, x, tmp_path, precision="int8", calibration=[])
    with pytest.raises(UserError, match=r"no batch of the exported shapes \[\(1, 1, 8, 8\)\]"):
        runtime.save(net, x, tmp_path, precision="int8", calibration=[(torch.rand(2, 1, 7, 7),)])
    quantized = slimkit.apply(copy.deepcopy(net), slimkit.Quantize(weights="int8", activations="none"), example_inputs=x)
    with pytest.raises(UserError, match="takes slimkit's float model and quantizes it with PT2E"):
        runtime.prepare(quantized, x)
    with pytest.raises(UserError, match="no precision 'fp16'"):
        runtime.prepare(net, x, precision="fp16")
    assert not list(tmp_path.iterdir())


class Eig(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x).real


class Sorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return torch.sort(self.proj(x), dim=-1).values


@pytest.mark.parametrize("model, x, op", [
    (Eig(), torch.randn(2, 4, 4), "linalg_eig is called in module <root> (Eig)"),
    (Sorted(), torch.randn(2, 8), "no kernel for operator aten::sort.values; sort is called in module <root> (Sorted)"),
])
def test_ops_executorch_cannot_take_are_named(model, x, op):
    with pytest.raises(UserError, match=r"ExecuTorch \(XNNPACK\) cannot take this model: .*" + re.escape(op)):
        get_runtime("executorch").prepare(model, (x,))
