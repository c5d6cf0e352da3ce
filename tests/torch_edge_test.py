"""dtrain.torch in what a Horovod script may do around the optimizer (tests/python_torch_test.sh
runs it under mpirun with 2 ranks, on the sharded path and with DTRAIN_ALLREDUCE_SHM=0; Adagrad
always takes the bucketed path):
- a rank whose step had no backward (the others' did): every rank still averages (zeros for it,
  as Horovod), no rank is left waiting (with a collective between the others' backward and
  step() that would still be a hang, which the stall watchdog ends: buckets are matched by
  order, not negotiated by name as Horovod's);
- a parameter used on one rank only, and a collective (dt.allreduce of the loss) between
  backward and step(): the bucket the other rank held back leaves first, no mismatch;
- broadcast_object of an object the root cannot pickle: a ValueError on every rank;
- allreduce: average=None averages (Horovod's default), op=dt.Sum / dt.Average, both given is
  refused, autograd passes through it;
- broadcast_parameters with a plain list of tensors;
- a sparse gradient: a TypeError naming the parameter;
- init() after shutdown(): a ValueError, not an MPI abort."""
import torch

import dtrain.torch as dt
from torch_checks import expect_raises

torch.set_num_threads(1)
dt.init()
r, world = dt.rank(), dt.size()


def same_everywhere(model, what):
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(dt.allreduce(flat, op=dt.Sum, name=what), flat * world), \
        "%s: ranks diverged" % what


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 4)
        self.side = torch.nn.Linear(5, 4)  # used by rank 0 only

    def forward(self, x, use_side):
        y = self.a(x)
        return y + self.side(x) if use_side else y


for make in (lambda m: torch.optim.SGD(m.parameters(), lr=0.1),  # sharded unless SHM=0
             lambda m: torch.optim.Adagrad(m.parameters(), lr=0.1)):  # bucketed
    torch.manual_seed(3)
    model = Net()
    opt = dt.DistributedOptimizer(make(model), named_parameters=model.named_parameters())
    for step in range(4):
        opt.zero_grad()
        if not (r == 1 and step == 1):  # rank 1 has nothing to learn from in step 1
            loss = model(torch.full((2, 5), float(r + step)), r == 0).pow(2).mean()
            loss.backward()
            if step != 1:  # a collective between backward and step (the loss, averaged)
                dt.allreduce(loss.detach(), name="loss")
        opt.step()
    same_everywhere(model, type(opt).__name__)

# broadcast_object: an object the root cannot pickle.
expect_raises(ValueError, "rank 0 could not pickle the object", dt.broadcast_object,
              (lambda: 1) if r == 0 else None, 0)
assert dt.broadcast_object({"r": r}, root_rank=1) == {"r": 1}

# allreduce: Horovod's average=None / op=, and its gradient.
x = torch.full((3,), float(r + 1))
assert torch.equal(dt.allreduce(x, average=None), torch.full((3,), 1.5))
assert torch.equal(dt.allreduce(x, op=dt.Sum), torch.full((3,), 3.0))
assert torch.equal(dt.allreduce(x, op=dt.Average), torch.full((3,), 1.5))
expect_raises(ValueError, "not both", dt.allreduce, x, True, None, dt.Sum)
w = torch.ones(3, requires_grad=True)
dt.allreduce(w * (r + 1)).sum().backward()
assert torch.equal(w.grad, torch.full((3,), float(r + 1))), w.grad  # d/dw of mean_r w*(r+1)

# broadcast_parameters with a plain list of tensors.
torch.manual_seed(r)
m = torch.nn.Linear(3, 2)
dt.broadcast_parameters(list(m.parameters()), root_rank=0)
same_everywhere(m, "list broadcast")

# A sparse gradient: said, with the parameter's name.
for make in (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1)):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = dt.DistributedOptimizer(make(emb.parameters()), named_parameters=emb.named_parameters())

    def backward_and_step():
        emb(torch.tensor([1, 2])).sum().backward()
        opt.step()
    expect_raises(TypeError, "parameter weight has a sparse gradient", backward_and_step)

dt.shutdown()
expect_raises(ValueError, "after dtrain.torch.shutdown()", dt.init)
print("rank %d: every edge case checked" % r, flush=True)
