"""dtrain.torch in parameter-server mode: run by tests/python_torch_test.sh (case psapi) under
`dtrainrun --mode ps --num-ps 2 --num-workers 2`, so TF_CONFIG names this task. The same script
runs on every task: on the ps tasks dt.init() serves and ends the process (status 0), so only the
workers get past it. Exits non-zero with the failing check's message."""
import json
import os

import torch

import dtrain.torch as dt
from torch_checks import expect_raises


task = json.loads(os.environ["TF_CONFIG"])["task"]
expect_raises(ValueError, "mode must be", dt.init, mode="parameter-server")
expect_raises(ValueError, "ps_async and max_staleness are for parameter-server mode",
              dt.init, mode="allreduce", ps_async=True)
dt.init(start_timeout=60, step_timeout=60)
# Only workers come back from init().
assert task["type"] in ("worker", "chief"), "init() returned on a %s task" % task["type"]
assert dt.is_initialized() and dt.mode() == "ps"
assert not dt.mpi_enabled()  # ps mode: ZeroMQ carries the collectives
r, n = dt.rank(), dt.size()
assert n == 2 and r == task["index"], (r, n, task)
assert dt.local_size() == 2 and dt.local_rank() == r  # both workers on 127.0.0.1

# Collectives need the servers, which a worker joins with its DistributedOptimizer.
expect_raises(ValueError, "create it first", dt.allreduce, torch.ones(2))

torch.manual_seed(100 + r)  # different initial weights on purpose: the chief's must win
model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))

# Optimizers the servers cannot run as PyTorch does are refused, naming what is missing.
expect_raises(ValueError, "AdamW is not one of them", dt.DistributedOptimizer,
              torch.optim.AdamW(model.parameters(), lr=0.01))
expect_raises(ValueError, "without weight_decay", dt.DistributedOptimizer,
              torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=0.1))
expect_raises(ValueError, "without nesterov", dt.DistributedOptimizer,
              torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True))
expect_raises(ValueError, "without amsgrad", dt.DistributedOptimizer,
              torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True))
expect_raises(ValueError, "groups differ in lr", dt.DistributedOptimizer,
              torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                               {"params": model[2].parameters(), "lr": 0.2}], lr=0.1))

# Momentum SGD: the chief's parameters become everyone's when the optimizer joins the servers.
expect_raises(ValueError, "create that first", dt.resume_point)
sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
opt = dt.DistributedOptimizer(sgd, named_parameters=model.named_parameters())
assert dt.resume_point() == {"epoch": 0, "step": 0, "step_in_epoch": 0}, dt.resume_point()
dt.broadcast_parameters(model.state_dict(), root_rank=0)  # nothing to do in ps mode
dt.broadcast_optimizer_state(opt, root_rank=0)
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
assert torch.equal(dt.allreduce(flat, average=False), flat * 2), "workers start from different parameters"
torch.manual_seed(100)
chief_init = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
assert torch.equal(flat, torch.cat([p.detach().reshape(-1) for p in chief_init.parameters()]))

# Collectives through ps:0 (float32 and float64, values exact).
x = torch.full((4, 3), float(r + 1))
assert torch.equal(dt.allreduce(x), torch.full((4, 3), 1.5))
assert torch.equal(x, torch.full((4, 3), float(r + 1))), "allreduce changed its input"
assert torch.equal(dt.allreduce(x, average=False), torch.full((4, 3), 3.0))
d = torch.full((5,), float(r), dtype=torch.float64)
assert dt.allreduce(d).dtype == torch.float64 and torch.equal(dt.allreduce(d), torch.full((5,), 0.5, dtype=torch.float64))
y = torch.full((2,), float(r))
assert dt.allreduce_(y, average=False) is y and torch.equal(y, torch.full((2,), 1.0))
b = torch.tensor([float(r), 7.125])
assert torch.equal(dt.broadcast(b, root_rank=1), torch.tensor([1.0, 7.125]))
expect_raises(ValueError, "root_rank 2 but the job has 2 ranks", dt.broadcast, b, 2)
g = dt.allgather(torch.full((r + 1, 2), float(r)))
assert torch.equal(g, torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])), g
assert dt.broadcast_object({"rank": r, "t": torch.ones(2) * r}, root_rank=1)["rank"] == 1
dt.barrier()
assert [o["rank"] for o in dt.allgather_object({"rank": r, "pad": "x" * r})] == [0, 1]
expect_raises(TypeError, "not supported", dt.allreduce, torch.ones(2, dtype=torch.int32))
expect_raises(ValueError, "alltoall is not available in ps mode", dt.alltoall, torch.zeros(2))
expect_raises(ValueError, "reducescatter is not available in ps mode", dt.reducescatter,
              torch.zeros(2))
expect_raises(ValueError, "op min is not supported: ps:0 sums", dt.allreduce, torch.ones(2),
              op=dt.Min)
assert torch.equal(dt.allreduce(torch.ones(2), op=dt.Sum, postscale_factor=0.5), torch.ones(2))

# Training steps: the servers run momentum SGD on the average of the workers' gradients, as
# PyTorch's SGD would on one process (checked against it, same data).
ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
ref.load_state_dict(chief_init.state_dict())
ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
gen = torch.Generator().manual_seed(7)
for step in range(5):
    xb = torch.randn(8, 6, generator=gen)
    yb = torch.randint(0, 3, (8,), generator=gen)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(xb[4 * r:4 * r + 4]), yb[4 * r:4 * r + 4]).backward()
    opt.step()
    ref_opt.zero_grad()
    half = [torch.nn.functional.cross_entropy(ref(xb[4 * k:4 * k + 4]), yb[4 * k:4 * k + 4])
            for k in range(2)]
    ((half[0] + half[1]) / 2).backward()
    ref_opt.step()
diff = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), ref.parameters()))
assert diff < 1e-6, "ps-mode momentum SGD differs from PyTorch's by %g" % diff

# What a worker cannot do in ps mode (the servers run the optimizer and hold its state): said.
expect_raises(ValueError, "no averaged gradient to clip", opt.synchronize)


def in_skip_synchronize():
    with opt.skip_synchronize():
        pass


expect_raises(ValueError, "no averaged gradient to step with", in_skip_synchronize)
expect_raises(ValueError, "the optimizer state stays with the servers", opt.state_dict)
expect_raises(ValueError, "load the state into the optimizer before", opt.load_state_dict, {})
# A checkpoint loaded into the chief's model after wrapping would not reach the servers.
if r == 0:
    kept = model[0].bias.detach().clone()
    with torch.no_grad():
        model[0].bias.add_(1.0)
    expect_raises(ValueError, "0.bias changed since the DistributedOptimizer gave it to the servers",
                  dt.broadcast_parameters, model.state_dict(), 0)
    with torch.no_grad():
        model[0].bias.copy_(kept)
# Buffers (BatchNorm's running statistics, its integer batch count) are broadcast.
bn = torch.nn.BatchNorm1d(3)
with torch.no_grad():
    bn.running_mean.fill_(r + 5.0)
bn.num_batches_tracked.fill_(r + 7)
dt.broadcast_parameters(bn.state_dict(), root_rank=0)
assert torch.equal(bn.running_mean, torch.full((3,), 5.0)) and int(bn.num_batches_tracked) == 7

# A learning-rate schedule cannot reach the servers: said, not ignored.
opt.param_groups[0]["lr"] = 0.01
model(torch.ones(1, 6)).sum().backward()
expect_raises(ValueError, "hyperparameters changed", opt.step)
opt.param_groups[0]["lr"] = 0.1

print("rank %d: every dtrain.torch ps-mode call checked" % r, flush=True)
dt.shutdown()
assert not dt.is_initialized()
