"""``hf:DIR`` loads each transformers task as its own wrapper (tiny random models saved with save_pretrained), typed
example inputs (``--input NAME:DTYPE[SHAPE]<HIGH``) and the perplexity of causal LMs."""
import math

import pytest
import torch

import slimkit as sk
from slimkit.cli import main
from slimkit.measure.inputs import SYNTAX, InputSpec, parse_input

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, LENGTH = 100, 12
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_models() -> dict[str, torch.nn.Module]:
    """One random-weight model per supported task (the Llama one with grouped-query attention)."""
    t = transformers
    return {
        "bert": t.BertModel(t.BertConfig(vocab_size=VOCAB, **SIZES), add_pooling_layer=False),
        "bert-classifier": t.BertForSequenceClassification(
            t.BertConfig(vocab_size=VOCAB, id2label={0: "negative", 1: "positive", 2: "mixed"}, **SIZES)),
        "vit": t.ViTForImageClassification(t.ViTConfig(image_size=16, patch_size=8, num_labels=5, **SIZES)),
        "gpt2": t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
        "llama": t.LlamaForCausalLM(t.LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2, max_position_embeddings=64,
                                                  **SIZES)),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[str, torch.nn.Module]]:
    """{name: ("hf:DIR", the model as saved, in eval mode)}."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    out = {}
    for name, model in tiny_models().items():
        model.save_pretrained(root / name)
        out[name] = (f"hf:{root / name}", model.eval())
    return out


def tokens(batch=2, length=LENGTH, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, wrapper, output", [
    ("bert", "SentenceEmbedder", (2, 32)),
    ("bert-classifier", "TextClassifier", (2, 3)),
    ("gpt2", "CausalLM", (2, LENGTH, VOCAB)),
    ("llama", "CausalLM", (2, LENGTH, VOCAB)),
])
def test_text_models_load_as_their_task_and_match_transformers(saved, name, wrapper, output):
    spec, raw = saved[name]
    model = sk.load_model(spec)
    ids, mask = tokens(), torch.ones(2, LENGTH, dtype=torch.long)
    mask[1, -3:] = 0
    assert type(model).__name__ == wrapper and model.tokenizer is None
    with torch.no_grad():
        got = model(ids, mask)
        expected = raw(input_ids=ids, attention_mask=mask)
    assert got.shape == output
    if wrapper != "SentenceEmbedder":
        assert torch.allclose(got, expected.logits, atol=1e-5)


def test_classifiers_name_their_labels_and_images_take_pixels(saved):
    assert sk.load_model(saved["bert-classifier"][0]).label_names == ["negative", "positive", "mixed"]
    spec, raw = saved["vit"]
    model = sk.load_model(spec)
    assert type(model).__name__ == "ImageClassifier" and model.label_names == [f"LABEL_{i}" for i in range(5)]
    (pixels,) = sk.example_inputs(model)  # inferred from the config: 3 channels of 16x16
    assert pixels.shape == (1, 3, 16, 16) and pixels.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(model(pixels), raw(pixel_values=pixels).logits, atol=1e-5)


def test_llama_keeps_grouped_query_attention(saved):
    model = sk.load_model(saved["llama"][0])
    attention = model.model.model.layers[0].self_attn
    assert model.model.config.num_key_value_heads < model.model.config.num_attention_heads
    assert attention.k_proj.out_features == attention.q_proj.out_features // 2


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_perplexity_is_exp_of_the_mean_next_token_loss(saved, name):
    spec, raw = saved[name]
    model = sk.load_model(spec)
    ids, mask = tokens(seed=2), torch.ones(2, LENGTH, dtype=torch.long)
    mask[1, -4:] = 0  # padding: not predicted
    def losses(mask):
        with torch.no_grad():
            logits = raw(input_ids=ids, attention_mask=mask).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")

    by_hand = losses(mask)[mask[:, 1:] == 1].mean().item()
    assert sk.measure.next_token_loss(model, [(ids, mask)]) == pytest.approx(by_hand, rel=1e-5)
    ppl = sk.measure.perplexity(model, [(ids[:1], mask[:1]), (ids[1:], mask[1:])])  # token-weighted over batches
    assert math.isfinite(ppl) and ppl == pytest.approx(math.exp(by_hand), rel=1e-5)
    unmasked = losses(torch.ones_like(mask)).mean().item()
    assert sk.measure.perplexity(model, [ids]) == pytest.approx(math.exp(unmasked), rel=1e-5)


def test_perplexity_refuses_a_model_without_token_logits(saved):
    with pytest.raises(sk.UserError, match="causal language model"):
        sk.measure.perplexity(sk.load_model(saved["bert-classifier"][0]), [tokens()])


def test_a_folder_that_is_not_a_supported_model_is_refused(tmp_path):
    with pytest.raises(sk.UserError, match="no config.json.*ForSequenceClassification"):
        sk.load_model(f"hf:{tmp_path}")
    transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=VOCAB, **SIZES)).save_pretrained(tmp_path / "mlm")
    with pytest.raises(sk.UserError, match="BertForMaskedLM.*supported: .*ForCausalLM"):
        sk.load_model(f"hf:{tmp_path / 'mlm'}")


def test_the_folders_tokenizer_rides_along(saved, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    saved["bert-classifier"][1].save_pretrained(tmp_path / "model")
    transformers.BertTokenizer(vocab_file=str(vocab)).save_pretrained(tmp_path / "model")
    model = sk.load_model(f"hf:{tmp_path / 'model'}")
    encoding = model.tokenizer(["hello world"], return_tensors="pt")
    assert model(encoding["input_ids"], encoding["attention_mask"]).shape == (1, 3)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert-classifier"])
def test_compressed_checkpoints_reload(saved, name, tmp_path):
    model = sk.load_model(saved[name][0])
    x = sk.example_inputs(model)
    small = sk.apply(sk.apply(model, sk.LowRank(), example_inputs=x), sk.MagnitudePrune(sparsity=0.5), example_inputs=x)
    sk.save_checkpoint(small, tmp_path / "checkpoint")
    again = sk.load_model(str(tmp_path / "checkpoint"))
    assert type(again) is type(model)
    with torch.no_grad():
        assert torch.allclose(again(*x), small(*x), atol=1e-6)


def test_token_inputs_are_inferred_from_the_config(saved):
    ids, mask = sk.example_inputs(sk.load_model(saved["gpt2"][0]))
    assert ids.shape == mask.shape == (1, 64) and ids.dtype == torch.int64  # min(128, n_positions)
    assert 0 <= ids.min() and ids.max() < VOCAB and bool((mask == 1).all())


def test_typed_inputs_follow_forward_and_fill_what_they_may(saved):
    model = sk.load_model(saved["gpt2"][0])
    mask, ids = parse_input("attention_mask:int64[1,8]<2"), parse_input(" input_ids : int32[1, 8] < 5 ")
    assert ids == InputSpec("input_ids", torch.int32, (1, 8), 5) and str(ids) == "input_ids:int32[1,8]<5"
    got_ids, got_mask = sk.example_inputs(model, inputs=[mask, "input_ids:int32[1,8]<5"])  # forward's order
    assert got_ids.dtype == torch.int32 and got_ids.max() < 5 and set(got_mask.unique().tolist()) <= {0, 1}
    got_ids, got_mask = sk.example_inputs(model, inputs=["input_ids:int64[2,16]"])  # bound from the model, mask added
    assert got_ids.max() < VOCAB and got_mask.shape == (2, 16) and bool((got_mask == 1).all())
    assert torch.equal(got_ids, sk.example_inputs(model, inputs=["input_ids:int64[2,16]"])[0])  # seeded


@pytest.mark.parametrize("spec, problem", [
    ("input_ids:int64[1,32", "is not of the form"),
    ("input_ids[1,32]", "is not of the form"),
    ("input_ids:long[1,32]", "unknown dtype"),
    ("input_ids:int64[1,0]", "each >= 1"),
    ("input_ids:int64[]", "1 to 8 dimensions"),
    ("pixel_values:float32[1,3]<4", "integer values only"),
    ("input_ids:int8[1,4]<1000", "1..128"),
])
def test_bad_input_specs_name_the_syntax(spec, problem):
    with pytest.raises(sk.UserError, match=problem) as error:
        parse_input(spec)
    assert SYNTAX in str(error.value)


def test_inputs_the_model_cannot_place_are_refused(saved):
    model = sk.load_model(saved["gpt2"][0])
    with pytest.raises(sk.UserError, match=r"forward takes \(input_ids, attention_mask\), not \(x\)"):
        sk.example_inputs(model, inputs=["x:float32[1,3]"])
    with pytest.raises(sk.UserError, match="twice"):
        sk.example_inputs(model, inputs=["input_ids:int64[1,3]<5", "input_ids:int64[1,3]<5"])
    with pytest.raises(sk.UserError, match="not both"):
        sk.example_inputs(model, inputs=["input_ids:int64[1,3]<5"], shape=(1, 3))
    with pytest.raises(sk.UserError, match="upper bound"):
        sk.example_inputs(sk.load_model("zoo:digits-cnn"), inputs=["x:int64[1,1,8,8]"])


def test_cli_bench_takes_typed_inputs(saved, capsys):
    spec = saved["gpt2"][0]
    assert main(["bench", "--model", spec, "--input", "input_ids:int64[1,16]<100", "--input",
                 "attention_mask:int64[1,16]", "--backends", "eager", "--batch", "1", "--repeats", "1"]) == 0
    assert "MACs" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--input", "input_ids:int64[1,16"], ["--input", "input_ids:int64[1,16]<100",
                                                                         "--input-shape", "1,16"]])
def test_cli_refuses_bad_input_flags_with_exit_2(saved, capsys, flags):
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--model", saved["gpt2"][0], *flags, "--backends", "eager"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert SYNTAX in err or "not allowed with argument" in err
    assert main(["bench", "--model", saved["gpt2"][0], "--input", "ids:int64[1,4]<9", "--backends", "eager"]) == 2
    assert "forward takes (input_ids, attention_mask)" in capsys.readouterr().err
