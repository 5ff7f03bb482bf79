"""Quantization arithmetic and observers: ranges, packing, SQNR."""
import pytest
import torch

from slimkit.errors import UserError
from slimkit.quantize import make_observer, qparams, qrange, sqnr
from slimkit.quantize.ops import fake_quantize, pack, unpack


def test_qrange_and_reduce_range():
    assert qrange(8) == (-128, 127)
    assert qrange(8, reduce_range=True) == (-64, 63)
    assert qrange(4, signed=False) == (0, 15)
    for bad in (1, 9, 16):
        with pytest.raises(UserError, match="2..8"):
            qrange(bad)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_roundtrip_and_bytes(bits):
    qmin, qmax = qrange(bits)
    q = torch.randint(qmin, qmax + 1, (7, 9))
    packed = pack(q, bits, qmin)
    assert packed.dtype == torch.uint8
    assert packed.numel() == -(-63 * {2: 2, 3: 4, 4: 4, 8: 8}[bits] // 8)
    assert torch.equal(unpack(packed, bits, qmin, q.shape), q)


def test_qparams_zero_is_exact():
    scale, zero = qparams(torch.tensor(0.3), torch.tensor(2.0), 0, 255, symmetric=False)
    assert int(zero) == 0  # the range is widened to contain 0
    x = torch.tensor([0.0, 1.0, 2.0])
    assert fake_quantize(x, scale, zero, 0, 255)[0] == 0


def _weight(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(32, 64, generator=g) * torch.logspace(-2, 0, 32).unsqueeze(1)
    w[0, 0] = 8.0  # one outlier
    return w


def _sqnr_with(name, w, bits, axis):
    qmin, qmax = qrange(bits)
    obs = make_observer(name, axis=axis)
    obs.observe(w)
    scale, zero = qparams(*obs.range(qmin, qmax, True), qmin, qmax, True)
    return sqnr(w, fake_quantize(w, scale, zero, qmin, qmax, axis=axis))


def test_per_channel_int8_weights_have_high_sqnr():
    w = _weight()
    per_channel = _sqnr_with("minmax", w, 8, axis=0)
    per_tensor = _sqnr_with("minmax", w, 8, axis=None)
    assert per_channel > 38
    assert per_channel > per_tensor + 10


def test_clipping_observers_beat_minmax_at_low_bits():
    w = torch.randn(4, 4096, generator=torch.Generator().manual_seed(1))
    w[:, 0] = 12.0  # heavy outliers ruin min-max at 4 bits
    minmax = _sqnr_with("minmax", w, 4, axis=0)
    assert _sqnr_with("mse", w, 4, axis=0) > minmax + 3
    assert _sqnr_with("percentile", w, 4, axis=0) > minmax + 2
    assert _sqnr_with("entropy", w, 4, axis=None) > minmax + 3


def test_moving_average_and_minmax_ranges():
    mm, ema = make_observer("minmax"), make_observer("moving_average")
    for peak in (1.0, 1.0, 10.0):
        batch = torch.tensor([-peak, peak])
        mm.observe(batch)
        ema.observe(batch)
    assert mm.range(0, 255, False)[1] == 10.0
    assert 1.0 < float(ema.range(0, 255, False)[1]) < 2.0


def test_empty_observer_says_how_to_fix():
    with pytest.raises(UserError, match="no batches"):
        make_observer("mse").range(0, 255, False)
    with pytest.raises(UserError, match="Unknown observer"):
        make_observer("histogram")
