import gzip
import struct

import numpy as np
import pytest

from slimkit.data import load_data
from slimkit.data import fashion_mnist, text
from slimkit.errors import UserError


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_normalisation(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    for split in ("train", "t10k"):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.array([1, 2, 9]))
    task = load_data("fashion-mnist", data_dir=str(tmp_path))
    x, y = task.test
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [1, 2, 9]
    expected = (images[2, 5, 7] / 255 - fashion_mnist.MEAN) / fashion_mnist.STD
    assert abs(x[2, 0, 5, 7].item() - expected) < 1e-6


def test_missing_data_dir_names_the_install_command(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", data_dir=str(tmp_path))  # exists but empty


def test_real_fashion_mnist(fashion):
    assert fashion.train[0].shape == (60000, 1, 28, 28) and fashion.test[0].shape == (10000, 1, 28, 28)
    assert fashion.test[1].bincount().tolist() == [1000] * 10
    assert abs(fashion.train[0].mean().item()) < 0.01 and abs(fashion.train[0].std().item() - 1) < 0.01


def test_augmentation_keeps_shape_and_shifts_at_most_two_pixels(fashion):
    x = fashion.test[0][:16]
    out = fashion_mnist.flip_and_shift(x)
    assert out.shape == x.shape
    assert not (out == x).all()


def test_digits_split(digits):
    assert len(digits.train[0]) + len(digits.test[0]) == 1797
    assert digits.train[0].shape[1:] == (1, 8, 8) and 0 <= digits.train[0].min() and digits.train[0].max() <= 1


def test_text_corpus_is_deterministic_english():
    first, again = text.sentences(4000), text.sentences(4000)
    assert first == again and len(set(first)) == 4000
    assert all(s[0].isupper() and s[-1] in ".!?" and len(s.split()) >= 6 for s in first)


def test_unknown_dataset():
    with pytest.raises(UserError, match="fashion-mnist, digits, text"):
        load_data("imagenet")
