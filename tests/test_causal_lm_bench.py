"""The causal-LM benchmark: its corpus (bench/stdlib_corpus.py), the training script (bench/train_causal_lm.py) and
the compression bench (bench/llm_compress.py) in --smoke mode, which trains a tiny Llama itself."""
import json
import math

import pytest

import slimkit as sk
from benches import load_bench

pytest.importorskip("transformers")  # the benches' model and tokenizer
pytestmark = pytest.mark.usefixtures("one_thread")


def benches():
    """bench/llm_compress.py and the modules it imports: stdlib_corpus and train_causal_lm (as imported, registered in
    sys.modules, which stdlib_corpus's dataclass needs)."""
    llm_compress = load_bench("llm_compress")
    return llm_compress, llm_compress.stdlib_corpus, llm_compress.train_causal_lm


def test_stdlib_corpus_holds_whole_modules_out_and_tokenizes_them_losslessly_and_reproducibly():
    _, stdlib_corpus, _ = benches()
    corpus = stdlib_corpus.load()
    modules = len(corpus.train) + len(corpus.heldout)
    assert not set(corpus.train) & set(corpus.heldout) and 0.03 < len(corpus.heldout) / modules < 0.08
    assert "traceback.py" in corpus.heldout and "argparse.py" in corpus.train  # by the hash of the path alone
    every = {*corpus.train, *corpus.heldout}
    assert "encodings/utf_8.py" in every and "encodings/cp1252.py" not in every  # codec tables are not code
    assert not any(part in {"test", "tests", "idle_test", "site-packages", "pydoc_data"}
                   for path in every for part in path.split("/")[:-1])

    small = corpus.limited(20)
    assert len(small.train) == 20 and len(small.heldout) == 2 and small.heldout == corpus.heldout[:2]
    first, second = (stdlib_corpus.train_tokenizer(small.texts("train"), 300) for _ in range(2))
    assert first.get_vocab() == second.get_vocab() and len(first) == 300
    text = small.texts("heldout")[0]  # never seen by the tokenizer
    assert first.decode(first(text, add_special_tokens=False)["input_ids"]) == text
    stream = stdlib_corpus.token_stream(first, small.texts("heldout"))
    assert int((stream == first.eos_token_id).sum()) == 2 and stream[-1] == first.eos_token_id
    ids, mask = stdlib_corpus.token_blocks(stream, 64)
    assert ids.shape == mask.shape == (len(stream) // 64, 64) and bool(mask.all())
    assert ids.flatten().tolist() == stream[: ids.numel()].tolist()


def test_train_causal_lm_needs_a_budget_and_llm_compress_its_training_corpus():
    llm_compress, _, train_causal_lm = benches()
    with pytest.raises(SystemExit):
        train_causal_lm.main(["--size", "tiny"])
    recorded = {"corpus": {"modules_limit": 1, "fingerprint": "0" * 64, "python": "2.7", "stdlib": "/elsewhere"},
                "command": "python bench/train_causal_lm.py --size tiny --steps 3"}
    with pytest.raises(sk.UserError, match="Python 2.7.*--size tiny --steps 3"):
        llm_compress.trained_corpus(recorded)


def test_llm_compress_smoke_trains_a_tiny_llama_and_measures_quantizing_and_pruning(tmp_path):
    """--smoke trains a 2-layer Llama with grouped-query attention for 40 steps (train_causal_lm.py --size tiny),
    then measures one variant of each kind (the onnxruntime table's exports are left to tests/test_quant_nbits.py,
    to keep CI under its time limit)."""
    llm_compress, stdlib_corpus, train_causal_lm = benches()
    only = ["w4_gptq", "sparsegpt24", "w8a8_smooth"]
    result = llm_compress.main(["--smoke", "--only", *only, "--threads", "1", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "llm_compress_smoke.json").read_text()) == json.loads(json.dumps(result))
    assert result["checks"] is None and result["variants"].keys() == set(only) and "onnx" not in result

    model_dir = tmp_path / "llm_compress_smoke_model"
    train = json.loads((model_dir / "train.json").read_text())
    assert train == result["train"] and train["training"]["steps"] == 40 and "--steps 40" in train["command"]
    assert train["perplexity"]["heldout"] < 0.6 * train["corpus"]["vocab_size"]  # it learnt: uniform would be 512
    model = sk.load_model(f"hf:{model_dir}")
    config = model.model.config
    assert type(model).__name__ == "CausalLM" and config.num_key_value_heads < config.num_attention_heads
    heldout = llm_compress.language_task(model.tokenizer, stdlib_corpus.load().limited(20), 256).test
    batches = train_causal_lm.batches(heldout, None)
    assert math.isclose(sk.measure.perplexity(model, batches), train["perplexity"]["heldout"], rel_tol=1e-5)

    fp32, runs = result["fp32_perplexity"], result["variants"]
    assert abs(runs["w4_gptq"]["perplexity"] / fp32 - 1) < 0.05
    assert runs["sparsegpt24"]["sparsity"] == 0.5 and runs["sparsegpt24"]["increase"] > 0
    assert abs(runs["w8a8_smooth"]["increase"]) < 0.05 * fp32
