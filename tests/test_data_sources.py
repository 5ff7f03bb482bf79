"""Data a user has: image folders, Hugging Face ``datasets`` tables, streaming Tasks and callable metrics."""
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slimkit import FineTune, Task, UserError, load_data, load_model
from slimkit.measure.metric import evaluate
from slimkit.train import fit

Image = pytest.importorskip("PIL.Image")
datasets = pytest.importorskip("datasets")

COLORS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}


def write_images(folder, per_class=5, classes=COLORS):
    for name, color in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (20 + i, 16), color).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """Keep the Arrow files datasets writes for CSV/Parquet inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def materialised(task: Task) -> Task:
    """The same task with its splits read into tensors."""
    def read(batches):
        return tuple(torch.cat(columns) for columns in zip(*batches))

    return dataclasses.replace(task, train=read(task.train_batches(1000)), test=read(task.test_batches(1000)))


def tiny_classifier(in_features: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes))


# ---- imagefolder:DIR -------------------------------------------------------------------------------------------

def test_imagefolder_one_folder_is_split_deterministically_and_skips_other_files(tmp_path):
    root = write_images(tmp_path / "photos")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("not a class folder")
    task = load_data(f"imagefolder:{root}?size=12&holdout=0.2")
    assert task.classes == ("cat", "dog", "owl") and task.metric == "top1" and not task.in_memory
    assert (task.train_size, task.test_size) == (12, 3)
    x, = task.example_inputs(2)
    assert x.shape == (2, 3, 12, 12)
    again = load_data(f"imagefolder:{root}", size=12, holdout=0.2)
    assert torch.equal(task.test_targets()[0], again.test_targets()[0])
    # a flat red image, normalised with ImageNet's mean/std
    red = torch.tensor([200 / 255, 30 / 255, 30 / 255])
    expected = (red - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    cat = next(b for b in task.train_batches(1) if b[1].item() == 0)
    assert torch.allclose(cat[0][0], expected[:, None, None].expand(3, 12, 12), atol=1e-5)


def test_imagefolder_train_and_val_folders_and_model_input_shape(tmp_path):
    write_images(tmp_path / "train", per_class=3)
    write_images(tmp_path / "val", per_class=2, classes={"cat": (1, 2, 3), "owl": (3, 2, 1)})
    task = load_data(f"imagefolder:{tmp_path}", model=load_model("zoo:digits-cnn"))  # takes (1, 1, 8, 8)
    assert (task.train_size, task.test_size) == (9, 4)
    assert task.test_targets()[0].tolist() == [0, 0, 2, 2]
    assert task.example_inputs(1)[0].shape == (1, 1, 8, 8)
    big = load_data(f"imagefolder:{tmp_path}?mean=0.5,0.5,0.5&std=0.25,0.25,0.25")
    assert big.example_inputs(1)[0].shape == (1, 3, 224, 224)


def test_imagefolder_trains_like_the_same_images_in_memory(tmp_path):
    task = load_data(f"imagefolder:{write_images(tmp_path / 'photos', per_class=6)}", size=8)
    memory = materialised(task)
    cfg = FineTune(epochs=2, lr=0.05, batch_size=4, label_smoothing=0.0)
    models = [tiny_classifier(3 * 8 * 8, 3), tiny_classifier(3 * 8 * 8, 3)]
    histories = [fit(m, t, cfg, progress=False) for m, t in zip(models, (task, memory))]
    assert histories[0]["loss"] == histories[1]["loss"]
    assert evaluate(models[0], task) == evaluate(models[1], memory)


@pytest.mark.parametrize("layout, message", [
    ({}, "no images in class folders"),
    ({"cat": 3}, "one class folder"),
])
def test_imagefolder_without_images_or_classes_names_the_fix(tmp_path, layout, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    write_images(tmp_path, per_class=layout.get("cat", 0), classes={"cat": (1, 1, 1)} if layout else {})
    with pytest.raises(UserError, match=message):
        load_data(f"imagefolder:{tmp_path}")


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    root = write_images(tmp_path / "p", per_class=2)
    with pytest.raises(UserError, match="unknown option 'sise'"):
        load_data(f"imagefolder:{root}?sise=32")
    with pytest.raises(UserError, match="holdout=.*fraction"):
        load_data(f"imagefolder:{root}", holdout=2)
    with pytest.raises(UserError, match="mean has 1 values for 3-channel"):
        load_data(f"imagefolder:{root}?mean=0.5")
    with pytest.raises(UserError, match="apply to imagefolder: and datasets:"):
        load_data("digits", size=32)
    write_images(tmp_path / "t" / "train", per_class=1)
    write_images(tmp_path / "t" / "val", per_class=1, classes={"bat": (1, 1, 1)})
    with pytest.raises(UserError, match=r"class folders \['bat'\] that the training split lacks"):
        load_data(f"imagefolder:{tmp_path / 't'}")
    (root / "cat" / "9.png").write_text("not really a png")
    task = load_data(f"imagefolder:{root}", size=8)
    with pytest.raises(UserError, match="Cannot read the image .*9.png"):
        list(task.train_batches(100))


# ---- datasets:PATH ---------------------------------------------------------------------------------------------

class WordTokenizer:
    """A stand-in for a transformers tokenizer: one id per word, padded to the longest text of the batch."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = [[len(w) for w in t.split()][:max_length] for t in texts]
        width = max(len(i) for i in ids)
        return {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])}


def test_datasets_csv_numeric_columns_and_class_names(tmp_path):
    path = tmp_path / "table.csv"
    rows = ["a,b,kind"] + [f"{i},{i * 0.5},{'big' if i > 9 else 'small'}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    task = load_data(f"datasets:{path}?input=a,b&label=kind&holdout=0.25")
    assert task.classes == ("big", "small") and task.n_inputs == 2 and task.metric == "top1"
    assert (task.train_size, task.test_size) == (15, 5)
    a, b, kind = next(task.train_batches(20))
    assert a.dtype == torch.int64 and b.dtype == torch.float32 and torch.equal(kind, (a <= 9).long())
    with pytest.raises(UserError, match="no column 'c'; the columns are a, b, kind"):
        load_data(f"datasets:{path}", input="c")
    with pytest.raises(UserError, match="name the model's input column"):
        load_data(f"datasets:{path}")


def test_datasets_parquet_and_load_from_disk_with_text_and_images(tmp_path):
    table = datasets.Dataset.from_dict({"features": [[float(i), float(-i)] for i in range(10)], "y": list(range(10))})
    table.to_parquet(str(tmp_path / "t.parquet"))
    task = load_data(f"datasets:{tmp_path / 't.parquet'}?input=features&label=y")
    assert next(task.train_batches(3))[0].shape == (3, 2) and task.classes == ()

    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a short one", "two words", "three more words"],
                                             "label": [0, 1, 1]}),
        "validation": datasets.Dataset.from_dict({"text": ["hello there", "x"], "label": [1, 0]}),
    }).cast_column("label", datasets.ClassLabel(names=["neg", "pos"]))
    splits.save_to_disk(str(tmp_path / "reviews"))
    model = nn.Module()
    model.tokenizer = WordTokenizer()
    task = load_data(f"datasets:{tmp_path / 'reviews'}?input=text&label=label", model=model)
    assert task.classes == ("neg", "pos") and task.n_inputs == 2 and task.test_size == 2
    ids, mask, label = next(task.test_batches(2))
    assert ids.tolist() == [[5, 5], [1, 0]] and mask.tolist() == [[1, 1], [1, 0]] and label.tolist() == [1, 0]
    with pytest.raises(UserError, match="needs a model with a tokenizer"):
        load_data(f"datasets:{tmp_path / 'reviews'}?input=text")
    with pytest.raises(UserError, match="no split 'dev'"):
        load_data(f"datasets:{tmp_path / 'reviews'}?input=text&test=dev", model=model)

    pictures = datasets.Dataset.from_dict({
        "image": [Image.new("RGB", (10, 12), (i * 20, 0, 0)) for i in range(6)],
    }).cast_column("image", datasets.Image())
    pictures.save_to_disk(str(tmp_path / "pictures"))
    task = load_data(f"datasets:{tmp_path / 'pictures'}?input=image&size=8&holdout=0.5")
    assert task.metric == "cosine" and task.example_inputs(2)[0].shape == (2, 3, 8, 8)


def test_datasets_bad_paths(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_data(f"datasets:{tmp_path / 'nope.csv'}?input=a")
    (tmp_path / "x.txt").write_text("a\n1\n")
    with pytest.raises(UserError, match="cannot read .txt"):
        load_data(f"datasets:{tmp_path / 'x.txt'}?input=a")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="not a folder written by Dataset.save_to_disk"):
        load_data(f"datasets:{tmp_path / 'folder'}?input=a")
    with pytest.raises(UserError, match="names no path"):
        load_data("datasets:?input=a")


# ---- streaming Tasks -------------------------------------------------------------------------------------------

def linear_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def test_streaming_task_from_a_dataloader_scores_and_trains_like_tensors():
    (x, y), (xt, yt) = linear_data(64), linear_data(40, seed=1)
    memory = Task("lin", (x, y), (xt, yt))
    stream = Task.from_loaders("lin", DataLoader(TensorDataset(x, y), batch_size=10),
                               DataLoader(TensorDataset(xt, yt), batch_size=7))
    assert not stream.in_memory and (stream.train_size, stream.test_size) == (64, 40)
    assert torch.equal(stream.example_inputs(3)[0], xt[:3])
    assert [b[0].shape[0] for b in stream.input_batches(3, 25)] == [25, 25, 14]
    model = tiny_classifier(4, 2)
    assert evaluate(model, stream) == evaluate(model, memory)
    # one batch per epoch: the order inside it does not change the mean loss beyond float rounding
    cfg = FineTune(epochs=3, lr=0.1, batch_size=64, label_smoothing=0.0, schedule="constant")
    a, b = tiny_classifier(4, 2), tiny_classifier(4, 2)
    la, lb = fit(a, stream, cfg, progress=False)["loss"], fit(b, memory, cfg, progress=False)["loss"]
    assert la == pytest.approx(lb, rel=1e-5)
    assert evaluate(a, stream)["value"] == evaluate(b, memory)["value"]


def test_streaming_task_from_a_map_style_dataset_shuffles_like_tensors():
    (x, y), (xt, yt) = linear_data(50), linear_data(20, seed=1)
    memory = Task("lin", (x, y), (xt, yt))
    stream = Task.from_loaders("lin", TensorDataset(x, y), TensorDataset(xt, yt))
    cfg = FineTune(epochs=2, lr=0.1, batch_size=8)
    a, b = tiny_classifier(4, 2), tiny_classifier(4, 2)
    assert fit(a, stream, cfg, progress=False)["loss"] == fit(b, memory, cfg, progress=False)["loss"]
    assert evaluate(a, stream) == evaluate(b, memory)
    tail = stream.train_rows(-2)  # random access: any slice
    assert torch.equal(next(tail.batches(5))[0], x[-2:])


def test_streaming_splits_read_front_to_back():
    (x, y), (xt, yt) = linear_data(30), linear_data(10, seed=1)
    chunks = [(x[i : i + 7], y[i : i + 7]) for i in range(0, 30, 7)]
    stream = Task.from_loaders("lin", lambda: iter(chunks), [(xt, yt)])
    assert stream.train_size == 30  # counted by one pass
    shards = [torch.cat([b[0] for b in stream.train_batches(4, rank=r, world_size=3)]) for r in range(3)]
    assert all(torch.equal(s, x[r::3]) for r, s in enumerate(shards))
    head = stream.subset(train=9, test=4)
    assert head.train_size == 9 and [len(b[0]) for b in head.train_batches(4)] == [4, 4, 1]
    assert torch.equal(next(head.test_batches(10))[0], xt[:4])
    with pytest.raises(UserError, match="read front to back"):
        stream.train_rows(-5)
    with pytest.raises(UserError, match="no tensors to index"):
        stream.train[0]
    with pytest.raises(UserError, match="lambda: my_batches.*not generator"):
        Task.from_loaders("gen", (b for b in chunks), [(xt, yt)])
    bad = Task.from_loaders("bad", [{"x": x}], [(xt, yt)])
    with pytest.raises(UserError, match="each batch must be a tensor or a tuple/list of tensors"):
        next(bad.train_batches(4))


# ---- callable metrics ------------------------------------------------------------------------------------------

def test_callable_metric_is_scored_and_named():
    (x, y), (xt, yt) = linear_data(16), linear_data(12, seed=1)

    def error_rate(outputs, targets):
        return (outputs.argmax(1) != targets).float().mean()

    model = tiny_classifier(4, 2)
    top1 = evaluate(model, Task("lin", (x, y), (xt, yt)))["value"]
    result = evaluate(model, Task("lin", (x, y), (xt, yt), metric=error_rate))
    assert result == {"name": "error_rate", "value": pytest.approx(1 - top1)}

    class Named:
        name = "mean-output"

        def __call__(self, outputs, targets):
            assert targets is None
            return outputs.mean()

    stream = Task.from_loaders("emb", [(x,)], [(xt,)], metric=Named())
    assert evaluate(model, stream)["name"] == "mean-output"
    with pytest.raises(ValueError, match="'top1', 'cosine' or a callable"):
        Task("lin", (x, y), (xt, yt), metric="top5")
