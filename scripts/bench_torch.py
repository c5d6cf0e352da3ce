#!/usr/bin/env python3
"""PyTorch reference for dtrain_bench train: the same MLP (784-300-100-10, ReLU), Adam lr 1e-3,
batch 50, one thread, random data already in memory. Prints one JSON line."""
import json
import sys
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(0)
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 50
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
model = torch.nn.Sequential(
    torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100), torch.nn.ReLU(),
    torch.nn.Linear(100, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = torch.nn.CrossEntropyLoss()
x = torch.rand(steps, batch, 784)
y = torch.randint(0, 10, (steps, batch))


def step(i):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x[i]), y[i])
    loss.backward()
    opt.step()


for i in range(100):
    step(i % steps)
best = 0.0
for rep in range(3):
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    dt = time.perf_counter() - t0
    best = max(best, steps * batch / dt)
print(json.dumps({"bench": "train", "impl": "pytorch", "version": torch.__version__,
                  "batch_size": batch, "threads": 1, "samples_per_sec": best}))
