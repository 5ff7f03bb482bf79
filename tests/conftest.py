import os

import pytest
import torch


@pytest.fixture(scope="session")
def fashion():
    """The real Fashion-MNIST test split (installed by ./dev via Debian's dataset-fashion-mnist)."""
    from slimkit.data import load_data

    return load_data("fashion-mnist")


@pytest.fixture(scope="session")
def digits():
    from slimkit.data import load_data

    return load_data("digits")


@pytest.fixture(scope="session")
def trained_digits_cnn(digits):
    """zoo:digits-cnn trained for a few seconds (~95% top-1); shared, so copy it before changing it."""
    import slimkit as sk
    from slimkit.train import FineTune, fit

    torch.manual_seed(0)
    model = sk.load_model("zoo:digits-cnn")
    fit(model, digits, FineTune(epochs=6, lr=0.05, batch_size=64), progress=False)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: small kernels oversubscribe a shared 2-core CPU badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
