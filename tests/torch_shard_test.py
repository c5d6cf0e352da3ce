"""dtrain.torch's sharded step on one machine (DistributedOptimizer with DTRAIN_ALLREDUCE_SHM
unset) against the bucketed MPI path (DTRAIN_ALLREDUCE_SHM=0): tests/python_torch_test.sh runs
this under mpirun both ways and compares what rank 0 saves (usage: torch_shard_test.py OUT.npz).

Every optimizer the sharded step runs, with what users do around step(): set_to_none gradients,
a parameter unused in some steps, synchronize() then gradient clipping, state_dict() and
load_state_dict(), broadcast_optimizer_state(), parameter groups with their own learning rate,
and a learning rate changed between steps. Rank 0 saves the parameters, .grad and the whole
optimizer state (through state_dict()) after every case. In-process checks: which path ran,
`optimizer.state` holding every parameter's whole state, a state_dict() that refers to no shared
memory, add_param_group refused, an optimizer the sharded step does not know (Adagrad) taking
the bucketed path."""
import io
import os
import sys

import numpy as np
import torch

import dtrain.torch as dt
from torch_checks import expect_raises

torch.set_num_threads(1)
dt.init()
r, world = dt.rank(), dt.size()
sharded = os.environ.get("DTRAIN_ALLREDUCE_SHM") != "0"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(37, 29)
        self.b = torch.nn.Linear(29, 7)
        self.unused = torch.nn.Linear(3, 2)  # only in odd steps

    def forward(self, x, step):
        y = self.b(torch.relu(self.a(x)))
        if step % 2:
            y = y + self.unused(x[:, :3]).sum()
        return y


cases = {
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
    "momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=1e-3),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
    "amsgrad": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, amsgrad=True,
                                          weight_decay=0.01),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
    "rmsprop": lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-3, momentum=0.5,
                                             centered=True),
    "groups": lambda m: torch.optim.Adam([{"params": m.a.parameters(), "lr": 1e-2},
                                          {"params": list(m.b.parameters()) +
                                           list(m.unused.parameters())}], lr=1e-3),
    "adagrad": lambda m: torch.optim.Adagrad(m.parameters(), lr=1e-2),  # the bucketed path
}
saved = {}
for name, make in cases.items():
    torch.manual_seed(1)
    model = Net()
    opt = dt.DistributedOptimizer(make(model), named_parameters=model.named_parameters())
    dt.broadcast_optimizer_state(opt, root_rank=0)  # before the first step: nothing yet
    gen = torch.Generator().manual_seed(5)
    for step in range(7):
        x = torch.randn(world, 8, 37, generator=gen)
        opt.zero_grad(set_to_none=step == 2)
        model(x[r], step).pow(2).mean().backward()
        if step == 3:
            opt.synchronize()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        if step == 5:
            for g in opt.param_groups:
                g["lr"] *= 0.5
        if step == 3:
            with opt.skip_synchronize():  # Horovod's way after synchronize()
                opt.step()
        else:
            opt.step()
        if step == 4:
            sd = opt.state_dict()
            opt.load_state_dict(sd)
        if step == 5:
            dt.broadcast_optimizer_state(opt, root_rank=0)
    on_shards = hasattr(opt, "_dt_shard_groups")
    assert on_shards == (sharded and name != "adagrad"), (name, on_shards)
    params = list(model.parameters())
    sd = opt.state_dict()
    assert len(opt.state) == len(params), "%s: state of %d of %d parameters" % (
        name, len(opt.state), len(params))
    for p in params:
        for k, v in opt.state[p].items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                assert v.shape == p.shape, (name, k, v.shape, p.shape)
    buf = io.BytesIO()
    torch.save(sd, buf)
    state_bytes = sum(v.numel() * 4 for s in sd["state"].values() for v in s.values()
                      if isinstance(v, torch.Tensor))
    assert buf.tell() < state_bytes + 20000, "%s: a state_dict of %d bytes saves as %d" % (
        name, state_bytes, buf.tell())
    saved[name] = torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy()
    saved[name + ".grad"] = torch.cat([p.grad.reshape(-1) for p in params]).numpy().copy()
    tensors = [v.reshape(-1) for i in sorted(sd["state"]) for k, v in sorted(sd["state"][i].items())
               if isinstance(v, torch.Tensor)]
    saved[name + ".state"] = torch.cat(tensors).numpy().copy() if tensors else np.zeros(0)
    saved[name + ".keys"] = np.array([k + "=" + ("tensor" if isinstance(v, torch.Tensor) else repr(v))
                                      for i in sorted(sd["state"])
                                      for k, v in sorted(sd["state"][i].items())])
    if on_shards:
        expect_raises(ValueError, "cannot be added after wrapping", opt.add_param_group,
                      {"params": [torch.nn.Parameter(torch.zeros(2))]})
    if name == "adam":
        kept = (model, opt)
    flat = torch.from_numpy(saved[name])
    assert torch.equal(dt.allreduce(flat, average=False, name=name), flat * world), \
        "%s: ranks diverged" % name

if sharded:  # skip_synchronize() without synchronize(): no averaged gradient to step with
    torch.manual_seed(1)
    model = Net()
    opt = dt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(2, 37), 0).sum().backward()
    with opt.skip_synchronize():
        expect_raises(ValueError, "needs synchronize() first", opt.step)
if r == 0:
    np.savez(sys.argv[1], **saved)
dt.shutdown()
# After shutdown (the shared window is gone) the model, .grad and the optimizer state stay
# readable; stepping is refused.
model, opt = kept
assert np.array_equal(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy(),
                      saved["adam.grad"]), "adam: .grad changed at shutdown"
sd = opt.state_dict()
assert np.array_equal(torch.cat([v.reshape(-1) for i in sorted(sd["state"])
                                 for k, v in sorted(sd["state"][i].items())]).numpy(),
                      saved["adam.state"]), "adam: the state changed at shutdown"
if sharded:
    expect_raises(ValueError, "cannot step any more", opt.step)
print("rank %d: sharded=%s, hierarchical=%s, every case checked"
      % (r, hasattr(opt, "_dt_shard_groups"), getattr(opt, "_dt_hierarchical", None)), flush=True)
