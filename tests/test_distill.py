import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import slimkit as sk
from slimkit.data.task import Task
from slimkit.distill import Distill, distill_into, narrower, shallower, soft_target_loss
from slimkit.distill.losses import adapter
from slimkit.measure.counts import count_params
from slimkit.measure.metric import evaluate, outputs
from slimkit.models.hf import SentenceEmbedder
from slimkit.prune import MagnitudePrune
from slimkit.recipe import Recipe


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def teacher(trained_digits_cnn):
    """The shared trained digits-cnn (conftest) as the teacher."""
    return trained_digits_cnn


def tiny_bert() -> SentenceEmbedder:
    """A 4-layer, 32-wide BERT sentence embedder with fixed random weights (a SPEC for checkpoint tests)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, initializer_range=0.2)
    return SentenceEmbedder(transformers.BertModel(config).eval())


def token_task(n_train: int = 256, n_test: int = 64, length: int = 12) -> Task:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (n_train + n_test, length), generator=gen)
    mask = torch.ones_like(ids)
    return Task("tokens", (ids[:n_train], mask[:n_train]), (ids[n_train:], mask[n_train:]), "cosine", 2)


def test_soft_target_loss_is_t2_scaled_kl_with_averaged_teachers():
    student, t1, t2 = torch.randn(3, 5, 10).unbind(0)
    T = 3.0
    target = (F.softmax(t1 / T, -1) + F.softmax(t2 / T, -1)) / 2
    expected = (target * (target.log() - F.log_softmax(student / T, -1))).sum(-1).mean() * T**2
    assert soft_target_loss(student, [t1, t2], T).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_target_loss(target.log() * T, [t1, t2], T).item() == pytest.approx(0, abs=1e-5)
    logits = student.clone().requires_grad_()
    soft_target_loss(logits, [t1], T).backward()
    grad = T * (F.softmax(student / T, -1) - F.softmax(t1 / T, -1)) / len(student)  # why T^2 keeps gradients O(1)
    assert torch.allclose(logits.grad, grad, atol=1e-6)


def test_adapters_map_student_widths_to_teacher_widths():
    assert isinstance(adapter(torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 4, 4), "a"), nn.Identity)
    conv = adapter(torch.zeros(2, 4, 4, 4), torch.zeros(2, 8, 4, 4), "a")
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (8, 4, 1, 1)
    linear = adapter(torch.zeros(2, 7, 16), torch.zeros(2, 7, 32), "a")
    assert isinstance(linear, nn.Linear) and linear.weight.shape == (32, 16)
    with pytest.raises(sk.UserError, match=r"\(2, 4, 4, 4\) cannot be mapped to teacher output \(2, 8, 2, 2\)"):
        adapter(torch.zeros(2, 4, 4, 4), torch.zeros(2, 8, 2, 2), "a")


def test_narrow_student_has_at_most_a_quarter_of_the_parameters():
    model = sk.load_model("zoo:fashion-cnn")
    student = narrower(model, 0.45)
    assert [b.conv2.out_channels for b in student.blocks] == [14, 29, 58]
    assert count_params(student)[0] <= count_params(model)[0] / 4


def test_soft_targets_teach_the_student_the_teachers_predictions(teacher, digits):
    student = narrower(teacher, 0.5)
    cfg = Distill(epochs=10, lr=0.05, batch_size=64, alpha=1.0, temperature=2.0)  # no hard labels at all
    history = distill_into(student, [teacher], digits, cfg, digits.example_inputs(2))
    agree = (outputs(student, digits).argmax(1) == outputs(teacher, digits).argmax(1)).float().mean().item()
    assert history["loss"][-1] < history["loss"][0] / 3
    assert agree > 0.85 and evaluate(student, digits)["value"] > 0.85


def test_feature_distillation_trains_through_an_adapter(teacher, digits):
    student = narrower(teacher, 0.5)
    cfg = Distill(epochs=2, lr=0.05, batch_size=64, features={"blocks.1": "blocks.1"}, feature_weight=1.0)
    with_features = distill_into(student, [teacher], digits, cfg, digits.example_inputs(2))
    without = distill_into(narrower(teacher, 0.5), [teacher], digits, Distill(epochs=2, lr=0.05, batch_size=64),
                           digits.example_inputs(2))
    assert with_features["loss"][-1] > without["loss"][-1]  # the hint term is part of the objective
    assert with_features["loss"][-1] < with_features["loss"][0]
    with pytest.raises(sk.UserError, match="no module named 'blocks.9'"):
        distill_into(student, [teacher], digits, Distill(features={"blocks.9": "blocks.1"}), digits.example_inputs(2))


def test_incompatible_teacher_and_student_outputs_are_a_clear_error(teacher, digits):
    student = sk.models.zoo.ResNetSmall((4, 8), num_classes=5)
    with pytest.raises(sk.UserError, match=r"teacher output \(2, 10\) and student output \(2, 5\) are incompatible"):
        sk.apply(student, Distill(epochs=1), data=digits, teacher=teacher)


def test_distilling_a_pruned_model_keeps_its_zeros_and_recovers_accuracy(teacher, digits):
    pruned = sk.apply(copy.deepcopy(teacher), MagnitudePrune(sparsity=0.7, scope="layer"), data=digits)
    zeros = {n: p == 0 for n, p in pruned.state_dict().items() if n.endswith("weight") and p.dim() > 1}
    before = evaluate(pruned, digits)["value"]
    distilled = sk.apply(pruned, Distill(epochs=4, lr=0.05, batch_size=64), data=digits, teacher=teacher)
    after = evaluate(distilled, digits)["value"]
    state = distilled.state_dict()
    assert not any("original" in n or "mask" in n for n in state)  # masks gone: plain weights again
    assert all(torch.equal(state[n] == 0, z) for n, z in zeros.items())
    assert after > before + 0.1 and after > 0.85, (before, after)


def test_distilled_narrow_student_survives_a_checkpoint(teacher, digits, tmp_path):
    model = copy.deepcopy(teacher)
    cfg = Recipe.from_dict({"steps": [{"distill": {"student": "narrow", "width": 0.5, "max_batches": 3}}]}).steps[0]
    student = sk.apply(model, cfg, data=digits)
    assert count_params(student)[0] < count_params(teacher)[0] / 3
    sk.save_checkpoint(student, tmp_path / "ckpt")
    loaded = sk.load_model(str(tmp_path / "ckpt"))
    x = digits.test[0][:16]
    assert torch.equal(loaded(x), student.eval()(x))


def test_shallow_transformer_student_keeps_every_other_layer_and_learns_embeddings(tmp_path):
    teacher = sk.load_model("test_distill:tiny_bert")
    task = token_task()
    student = shallower(teacher)
    layers, teacher_layers = student.encoder.encoder.layer, teacher.encoder.encoder.layer
    assert len(layers) == 2 and student.encoder.config.num_hidden_layers == 2
    assert torch.equal(layers[1].output.dense.weight, teacher_layers[2].output.dense.weight)
    before = evaluate(student, task, teacher)["value"]
    distilled = sk.apply(teacher, Distill(student="shallow", epochs=3, lr=3e-3, optimizer="adamw", batch_size=32),
                         data=task)
    after = evaluate(distilled, task, teacher)["value"]
    assert before < 0.5 and after > 0.9, (before, after)
    sk.save_checkpoint(distilled, tmp_path / "ckpt")
    loaded = sk.load_model(str(tmp_path / "ckpt"), base="test_distill:tiny_bert")
    assert torch.equal(loaded(*task.example_inputs(4)), distilled(*task.example_inputs(4)))


def test_teacher_outputs_computed_once_train_exactly_as_a_live_teacher(teacher, digits, monkeypatch):
    from slimkit.distill import step

    cfg = Distill(epochs=2, lr=0.05, batch_size=64)
    calls = []
    monkeypatch.setattr(teacher, "forward", lambda x, f=teacher.forward: calls.append(len(x)) or f(x))
    cached = narrower(teacher, 0.5)
    live = copy.deepcopy(cached)
    history = distill_into(cached, [teacher], digits, cfg, digits.example_inputs(2))
    assert sum(calls) == 2 + len(digits.train[0])  # the probe, then one pass over the training split
    monkeypatch.setattr(step, "_passes", lambda task, cfg: 1.0)  # seen once on average: the teacher runs live
    calls.clear()
    live_history = distill_into(live, [teacher], digits, cfg, digits.example_inputs(2))
    assert sum(calls) == 2 + 2 * len(digits.train[0])
    assert history["loss"] == pytest.approx(live_history["loss"], rel=1e-4)
    for a, b in zip(cached.state_dict().values(), live.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4)
