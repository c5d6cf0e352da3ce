#!/usr/bin/env python3
"""PyTorch's memory for mnist_train's job: the MLP (784-300-100-10, Adam lr 1e-3, batch 50, one
thread) trained one epoch on MNIST from the IDX files (as float tensors, the usual way), then the
test set evaluated. Prints one JSON line with the process's peak resident memory (VmHWM) and its
anonymous memory (RssAnon) at the end, as scripts/bench-memory.sh reports dtrain's.
  bench_torch_memory.py DATA_FOLDER"""
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
folder = sys.argv[1] if len(sys.argv) > 1 else "data/mnist"


def idx(name, header):
    return np.fromfile(os.path.join(folder, name), dtype=np.uint8)[header:]


x = torch.from_numpy(idx("train-images-idx3-ubyte", 16).astype(np.float32) / 255).view(-1, 784)
y = torch.from_numpy(idx("train-labels-idx1-ubyte", 8).astype(np.int64))
tx = torch.from_numpy(idx("t10k-images-idx3-ubyte", 16).astype(np.float32) / 255).view(-1, 784)
ty = torch.from_numpy(idx("t10k-labels-idx1-ubyte", 8).astype(np.int64))
nn = torch.nn
model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                      nn.Linear(100, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
perm = torch.randperm(x.shape[0])
for i in range(0, x.shape[0], 50):
    b = perm[i:i + 50]
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x[b]), y[b]).backward()
    opt.step()
with torch.no_grad():
    acc = (model(tx).argmax(1) == ty).float().mean().item()
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
kb = lambda k: int(status[k].split()[0])
print(json.dumps({"bench": "memory", "job": "pytorch_mlp_1rank", "test_accuracy": round(acc, 4),
                  "peak_rss_mb": kb("VmHWM") // 1024, "anon_mb": kb("RssAnon") // 1024}))
