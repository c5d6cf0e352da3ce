#!/usr/bin/env python3
"""PyTorch two-process references for scripts/bench-scaling.sh: the same MLP, Adam and batch per
process, one thread each, random data in memory.
  ddp-gloo:      DistributedDataParallel over gloo (run one process per rank with RANK/WORLD_SIZE)
  mpi4py-fused:  one fused MPI_Allreduce of all gradients per step through mpi4py (under mpirun)
  dtrain:        dtrain.torch's DistributedOptimizer (under mpirun or dtrainrun; alone: a job of 1)
  plain:         one process, no communication at all (the reference for `dtrain` alone)
Rank 0 prints one JSON line with the total samples/s."""
import json
import os
import sys
import time

import torch

torch.set_num_threads(1)
variant = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 600
batch = 50
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100), torch.nn.ReLU(),
    torch.nn.Linear(100, 10))
loss_fn = torch.nn.CrossEntropyLoss()
x = torch.rand(64, batch, 784)
y = torch.randint(0, 10, (64, batch))

if variant == "ddp-gloo":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x[i % 64]), y[i % 64]).backward()
        opt.step()

    def barrier():
        dist.barrier()
elif variant == "mpi4py-fused":
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    params = list(model.parameters())
    flat = torch.zeros(sum(p.numel() for p in params))
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(i):
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x[i % 64]), y[i % 64]).backward()
        off = 0
        for p in params:
            n = p.numel()
            flat[off:off + n].copy_(p.grad.view(-1))
            off += n
        comm.Allreduce(MPI.IN_PLACE, flat.numpy(), op=MPI.SUM)
        flat.div_(world)
        off = 0
        for p in params:
            n = p.numel()
            p.grad.view(-1).copy_(flat[off:off + n])
            off += n
        opt.step()

    def barrier():
        comm.Barrier()
elif variant == "dtrain":
    import dtrain.torch as dtt
    dtt.init()
    rank, world = dtt.rank(), dtt.size()
    opt = dtt.DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-3),
                                   named_parameters=model.named_parameters())
    dtt.broadcast_parameters(model.state_dict(), root_rank=0)

    def step(i):
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x[i % 64]), y[i % 64]).backward()
        opt.step()

    def barrier():
        dtt.allreduce(torch.zeros(1), name="barrier")
elif variant == "plain":
    rank, world = 0, 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(i):
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x[i % 64]), y[i % 64]).backward()
        opt.step()

    def barrier():
        pass
else:
    raise SystemExit("unknown variant " + variant)

for i in range(50):
    step(i)
barrier()
t0 = time.perf_counter()
for i in range(steps):
    step(i)
barrier()
dt = time.perf_counter() - t0
if rank == 0:
    print(json.dumps({"bench": "scaling", "impl": "pytorch-" + variant, "ranks": world,
                      "batch_size_per_rank": batch,
                      "samples_per_sec": steps * batch * world / dt}))
