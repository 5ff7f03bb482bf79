import pytest
import torch

import slimkit as sk
from slimkit.errors import UserError
from slimkit.measure.metric import evaluate


def test_shipped_baseline_accuracy(fashion):
    model = sk.load_model("zoo:fashion-cnn")
    assert sum(p.numel() for p in model.parameters()) == 308_074
    top1 = evaluate(model, fashion.subset(test=2000))["value"]
    assert top1 >= 0.93  # 94.57% on the whole test set; 2000 samples keep the test fast


def test_checkpoint_round_trip_is_exact(tmp_path, digits):
    model = sk.load_model("zoo:digits-cnn")
    sk.save_checkpoint(model, tmp_path / "ck")
    again = sk.load_model(str(tmp_path / "ck"))
    x = digits.test[0][:8]
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    # the weights file alone is a valid SPEC too
    torch.testing.assert_close(sk.load_model(str(tmp_path / "ck" / "model.safetensors"))(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("zoo:nope", "Unknown zoo model 'nope'"),
        ("no_such_pkg.models:net", "Could not import 'no_such_pkg.models'"),
        ("slimkit.models.zoo:no_such_fn", "has no attribute 'no_such_fn'"),
        ("slimkit.data:load_data", "with no arguments failed"),
        ("slimkit.models.zoo:WEIGHTS", "is not callable"),
        ("just-a-name", "neither zoo:NAME"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(UserError, match=message):
        sk.load_model(spec)


def test_checkpoint_that_is_not_safetensors(tmp_path):
    folder = tmp_path / "ck"
    sk.save_checkpoint(sk.load_model("zoo:digits-cnn"), folder)
    (folder / "model.safetensors").write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    with pytest.raises(UserError, match="not a valid safetensors file"):
        sk.load_model(str(folder))
    (folder / "history.json").write_text("{}")
    with pytest.raises(UserError, match="not a slimkit checkpoint"):
        sk.load_model(str(folder))


def test_minilm_matches_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from slimkit.models.hf import packaged_minilm_dir

    model = sk.load_model("zoo:minilm")
    text = ["Return the sum of two numbers.", "A queue of work items shared by threads."]
    enc = model.tokenizer(text, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = model(enc["input_ids"], enc["attention_mask"])
    reference = sentence_transformers.SentenceTransformer(str(packaged_minilm_dir()), device="cpu")
    theirs = torch.as_tensor(reference.encode(text, normalize_embeddings=True))
    assert ours.shape == (2, 384)
    assert torch.nn.functional.cosine_similarity(ours, theirs).min() > 0.9999
