"""dtrain.torch's sharded step on one machine (DistributedOptimizer with DTRAIN_ALLREDUCE_SHM
unset) against the bucketed MPI path (DTRAIN_ALLREDUCE_SHM=0): tests/python_torch_test.sh runs
this under mpirun both ways and compares what rank 0 saves (usage: torch_shard_test.py OUT.npz).

Every optimizer the sharded step runs, with what users do around step(): set_to_none gradients,
a parameter unused in some steps, synchronize() then gradient clipping, state_dict() and
load_state_dict(), broadcast_optimizer_state(), parameter groups with their own learning rate,
and a learning rate changed between steps; rank 0 alone calling synchronize() before some
steps; the state replaced by the user (a new tensor, state.clear(), a new dict); foreach=True
updates that add weight decay into the gradient in place; backward_passes_per_step=2; an
optimizer stepped before wrapping (its state goes on). Rank 0 saves the parameters, .grad and the
whole optimizer state (through state_dict()) after every case. In-process checks: which path ran, `optimizer.state` holding every parameter's whole state,
a state_dict() that refers to no shared memory, add_param_group refused, an optimizer the sharded
step does not know (Adagrad) taking the bucketed path, .grad identical on every rank, a backward
pass beyond backward_passes_per_step refused (both paths), .grad of an optimizer collected before
shutdown() still readable after it; on the sharded path the errors: ranks stepping two optimizers
in different orders, ranks wrapping different optimizers, a state to load that lacks a
parameter's state or has two step counts in a group (the optimizer left as it was), state_dict()
between synchronize() and step()."""
import collections
import gc
import io
import os
import sys

import numpy as np
import weakref

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
    "sync0": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
    "reset": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
    "foreach": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=0.01,
                                          foreach=True),
    "passes2": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
    "prestate": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),  # stepped before wrapping
}
saved = {}
for name, make in cases.items():
    torch.manual_seed(1)
    model = Net()
    opt = make(model)
    if name == "prestate":  # two steps of its own (the same on every rank), then wrapped
        for _ in range(2):
            model(torch.ones(4, 37), 1).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        assert opt.state[model.a.weight]["step"].item() == 2
    opt = dt.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                  backward_passes_per_step=2 if name == "passes2" else 1)
    dt.broadcast_optimizer_state(opt, root_rank=0)  # before the first step: nothing yet
    gen = torch.Generator().manual_seed(5)
    for step in range(7):
        x = torch.randn(world, 8, 37, generator=gen)
        opt.zero_grad(set_to_none=step == 2)
        model(x[r], step).pow(2).mean().backward()
        if name == "passes2":
            model(x[(r + 1) % world] * 0.5, step).pow(2).mean().backward()
        if name == "sync0" and r == 0 and step in (1, 6):
            opt.synchronize()  # the other ranks' step() averages with it
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
        if name == "reset" and step == 1:
            first = next(model.parameters())
            opt.state[first]["exp_avg"] = opt.state[first]["exp_avg"] * 0.5
        if name == "reset" and step == 2:
            opt.state.clear()
        if name == "reset" and step == 3:
            opt.state = collections.defaultdict(dict)
    if name == "prestate":
        assert opt.state[model.a.weight]["step"].item() == 2 + 7, "the state before wrapping was lost"
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
    grad = torch.cat([p.grad.reshape(-1) for p in params])
    assert torch.equal(dt.allreduce(grad, average=False, name=name + ".grad"), grad * world), \
        "%s: .grad differs between ranks" % name
    if name != "foreach":  # the bucketed path's .grad holds the weight decay foreach added
        saved[name + ".grad"] = grad.numpy().copy()
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

# A backward pass beyond backward_passes_per_step is refused (its gradient would be lost on the
# bucketed path: its bucket has left); step() then goes on as usual.
torch.manual_seed(1)
model = Net()
opt = dt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
model(torch.ones(2, 37), 0).sum().backward()
expect_raises(ValueError, "more than backward_passes_per_step=1",
              lambda: model(torch.ones(2, 37), 0).sum().backward())
opt.step()

# An optimizer collected before shutdown(): its parameters' .grad still point into its shared
# window until then, and are copies after it.
torch.manual_seed(1)
dropped = Net()
opt = dt.DistributedOptimizer(torch.optim.Adam(dropped.parameters(), lr=1e-3))
for _ in range(2):
    opt.zero_grad()
    dropped(torch.ones(2, 37), 1).sum().backward()
    opt.step()
dropped_grad = [p.grad.clone() for p in dropped.parameters()]
gone = weakref.ref(opt)
del opt
gc.collect()
assert gone() is None, "the optimizer was not collected"

if sharded:
    torch.manual_seed(1)
    model = Net()
    opt = dt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(2, 37), 0).sum().backward()
    with opt.skip_synchronize():  # without synchronize(): no averaged gradient to step with
        expect_raises(ValueError, "needs synchronize() first", opt.step)
    opt.synchronize()
    expect_raises(ValueError, "state_dict() between synchronize() and step()", opt.state_dict)
    opt.step()

    # A state to load that the sharded step cannot hold: refused, the optimizer as it was.
    torch.manual_seed(1)
    model = Net()
    opt = dt.DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-3),
                                  named_parameters=model.named_parameters())
    model(torch.ones(2, 37), 1).sum().backward()
    opt.step()
    good = opt.state_dict()
    bad = opt.state_dict()
    del bad["state"][1]
    expect_raises(ValueError, "a.weight has optimizer state and a.bias has none",
                  opt.load_state_dict, bad)
    bad = opt.state_dict()
    bad["state"][2]["step"] = torch.tensor(99.0)
    expect_raises(ValueError, "a.weight is at step 1.0 and b.weight at step 99.0",
                  opt.load_state_dict, bad)
    now = opt.state_dict()
    assert all(torch.equal(now["state"][i][k], good["state"][i][k])
               for i in good["state"] for k in good["state"][i]), "a refused load changed the state"
    model(torch.ones(2, 37), 1).sum().backward()
    opt.step()  # and it still steps

    # Two optimizers stepped in different orders: the fences see it (on each machine: across
    # machines the ranks of one machine are out of step with the other's in a hang, which the
    # stall watchdog names, not here).
    torch.manual_seed(1)
    model = Net()
    first = dt.DistributedOptimizer(torch.optim.SGD(model.a.parameters(), lr=0.1))
    second = dt.DistributedOptimizer(torch.optim.SGD(model.b.parameters(), lr=0.1))
    model(torch.ones(2, 37), 0).sum().backward()
    first.step()
    second.step()
    model(torch.ones(2, 37), 0).sum().backward()
    msg = expect_raises(ValueError, "is not at this optimizer's fence",
                        (first if dt.local_rank() == 0 else second).step)
    assert "step its optimizers in the same order" in msg, msg

    # Ranks wrapping different optimizers cannot share one window.
    torch.manual_seed(1)
    model = Net()
    kind = torch.optim.Adam if r == 0 else torch.optim.SGD
    expect_raises(ValueError, "has optimizer %s where rank 0 has Adam" % (
        "SGD" if world > 1 else "Adam"), dt.DistributedOptimizer, kind(model.parameters(), lr=0.1))
if r == 0:
    np.savez(sys.argv[1], **saved)
dt.shutdown()
assert all(torch.equal(p.grad, g) for p, g in zip(dropped.parameters(), dropped_grad)), \
    ".grad of a collected optimizer changed at shutdown"
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
