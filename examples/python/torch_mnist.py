#!/usr/bin/env python3
"""MNIST with PyTorch and dtrain.torch: a Horovod script with the import changed.

    dtrainrun -np 2 -- python3 examples/python/torch_mnist.py --data-folder data/mnist
    dtrainrun --mode ps --num-ps 1 --num-workers 2 -- python3 examples/python/torch_mnist.py
    python3 examples/python/torch_mnist.py            # one process: a job of one

Under a TF_CONFIG with ps tasks (dtrainrun --mode ps) it is a parameter-server job: the same
script runs on every task, the ps tasks serve (dt.init() ends them when the job is done) and
run Adam; --ps-async and --max-staleness as mnist_train's.

The same MLP and flags as mnist_train (784-300-100-10, Adam, --batch-size per rank). Each step the
ranks take consecutive slices of one global batch, so N ranks at batch b see the samples that one
process at batch N*b sees. Rank 0 prints epoch lines and a JSON summary, and writes
OUTPUT_DIR/model.pt (the state_dict) and OUTPUT_DIR/params.bin (the parameters, float32, in
named_parameters() order).
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch

import dtrain.torch as dt


def read_idx(folder, name):
    for path, opener in ((os.path.join(folder, name), open),
                         (os.path.join(folder, name + ".gz"), gzip.open)):
        if os.path.exists(path):
            with opener(path, "rb") as f:
                data = f.read()
            dims = data[3]
            shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError("no %s (or .gz) in %s" % (name, folder))


def load(args):
    if args.synthetic_data:
        g = torch.Generator().manual_seed(1234)
        w = torch.randn(784, 10, generator=g)
        def make(n):
            x = torch.rand(n, 784, generator=g)
            return x, (x @ w).argmax(1)
        n = args.synthetic_data
        return make(n) + make(max(n // 6, 10))
    f = args.data_folder
    xs = [torch.from_numpy(read_idx(f, n).astype(np.float32) / 255.0).reshape(-1, 784)
          for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")]
    ys = [torch.from_numpy(read_idx(f, n).astype(np.int64))
          for n in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")]
    return xs[0], ys[0], xs[1], ys[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-folder", default="data/mnist")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--first-layer-neurons", type=int, default=300)
    p.add_argument("--second-layer-neurons", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--synthetic-data", type=int, default=0)
    p.add_argument("--max-steps-per-epoch", type=int, default=0)
    p.add_argument("--output-dir", default="outputs")
    p.add_argument("--ps-async", action="store_true", help="ps mode: asynchronous updates")
    p.add_argument("--max-staleness", type=int, default=0,
                   help="ps mode: with --ps-async, steps a worker may run ahead of the slowest")
    args = p.parse_args()

    torch.set_num_threads(1)  # one core per rank, as mnist_train
    dt.init(ps_async=args.ps_async, max_staleness=args.max_staleness)
    rank, size = dt.rank(), dt.size()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load(args)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, args.first_layer_neurons), torch.nn.ReLU(),
        torch.nn.Linear(args.first_layer_neurons, args.second_layer_neurons), torch.nn.ReLU(),
        torch.nn.Linear(args.second_layer_neurons, 10))
    opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    opt = dt.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    dt.broadcast_parameters(model.state_dict(), root_rank=0)
    dt.broadcast_optimizer_state(opt, root_rank=0)
    loss_fn = torch.nn.CrossEntropyLoss()

    b, gb = args.batch_size, args.batch_size * size
    steps = len(x_train) // gb
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)
    # A ps worker started again after it died (dtrainrun --rejoin-workers) continues where the
    # servers saw it last; everyone else starts at the beginning.
    start = dt.resume_point()
    if start["step"]:
        print("worker %d continues at epoch %d, after %d of its steps"
              % (rank, start["epoch"] + 1, start["step_in_epoch"]), flush=True)
    samples, seconds, acc = 0, 0.0, 0.0
    for epoch in range(start["epoch"], args.epochs):
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed + epoch))
        t0 = time.perf_counter()
        total = 0.0
        first = start["step_in_epoch"] if epoch == start["epoch"] else 0
        for s in range(first, steps):
            idx = order[s * gb + rank * b:s * gb + (rank + 1) * b]
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        secs = time.perf_counter() - t0
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        mean_loss = dt.allreduce(torch.tensor([total / max(1, steps - first)]),
                                 name="epoch loss").item()
        samples += (steps - first) * gb
        seconds += secs
        if rank == 0:
            print("epoch %d/%d  loss %.4f  test_acc %.4f  %.0f samples/s  (%.2f s)"
                  % (epoch + 1, args.epochs, mean_loss, acc, (steps - first) * gb / secs, secs),
                  flush=True)
    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.output_dir, "model.pt"))
        flat = torch.cat([q.detach().reshape(-1) for _, q in model.named_parameters()])
        flat.numpy().astype(np.float32).tofile(os.path.join(args.output_dir, "params.bin"))
        print(json.dumps({"event": "summary", "framework": "pytorch", "mode": dt.mode(),
                          "world_size": size, "test_accuracy": acc,
                          "samples_per_sec": samples / seconds, "seconds": seconds}), flush=True)
    dt.shutdown()


if __name__ == "__main__":
    main()
