#!/usr/bin/env python3
"""PyTorch reference for dtrain_bench train: the same models, Adam lr 1e-3, one thread, random
data already in memory. Prints one JSON line.
  bench_torch.py [BATCH] [STEPS] [--model mlp|cnn] [--flush-denormal]
mlp: 784-300-100-10 with ReLU. cnn: mnist_train's convnet (conv 5x5x32 same, ReLU, max-pool 2,
conv 5x5x64 same, ReLU, max-pool 2, dense 1024, ReLU, dense 10). --flush-denormal turns on
torch.set_flush_denormal(True) (off by default in PyTorch, as dtrain_bench's is on)."""
import argparse
import json
import os
import time

# One thread really: torch.set_num_threads(1) leaves Debian's OpenBLAS (which PyTorch's Linear
# layers call) on its own thread pool, measured at 1.8 cores busy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("batch", nargs="?", type=int, default=50)
ap.add_argument("steps", nargs="?", type=int, default=1500)
ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
ap.add_argument("--flush-denormal", action="store_true")
a = ap.parse_args()

torch.set_num_threads(1)
torch.manual_seed(0)
if a.flush_denormal:
    torch.set_flush_denormal(True)
nn = torch.nn
if a.model == "mlp":
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    shape = (784,)
else:
    model = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(),
                          nn.Linear(1024, 10))
    shape = (1, 28, 28)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
pool = min(a.steps, 64)  # distinct batches, cycled (as dtrain_bench does)
x = torch.rand(pool, a.batch, *shape)
y = torch.randint(0, 10, (pool, a.batch))


def step(i):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x[i % pool]), y[i % pool])
    loss.backward()
    opt.step()


for i in range(min(100, a.steps)):
    step(i)
best = 0.0
for rep in range(3):
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(i)
    dt = time.perf_counter() - t0
    best = max(best, a.steps * a.batch / dt)
print(json.dumps({"bench": "train", "impl": "pytorch", "version": torch.__version__,
                  "model": a.model, "batch_size": a.batch, "threads": 1,
                  "flush_denormal": a.flush_denormal, "samples_per_sec": best}))
