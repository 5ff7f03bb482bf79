"""Run by test_train.py under torchrun: trains with the shared loop and writes per-rank results."""
import json
import sys

import torch

import slimkit as sk
from slimkit.measure.metric import evaluate

out = sys.argv[1]
task = sk.load_data("digits")
model = sk.load_model("zoo:digits-cnn")
sk.fit(model, task, sk.FineTune(epochs=6, lr=0.1, batch_size=32), progress=False)
rank = torch.distributed.get_rank()
checksum = sum(float(p.double().sum()) for p in model.parameters())
result = {"rank": rank, "world": torch.distributed.get_world_size(), "checksum": checksum,
          "top1": evaluate(model, task)["value"]}
with open(f"{out}.{rank}.json", "w") as fh:
    json.dump(result, fh)
torch.distributed.destroy_process_group()
