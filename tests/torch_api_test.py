"""Every call of dtrain.torch's API, run by tests/python_torch_test.sh under mpirun with 2 ranks
(and the errors a user can make). Exits non-zero with the failing check's message."""

import torch

import dtrain.torch as dt
from torch_checks import expect_raises


assert not dt.is_initialized()
expect_raises(ValueError, "call dtrain.torch.init() first", dt.rank)
expect_raises(ValueError, "call dtrain.torch.init() first", dt.mpi_threads_supported)
assert dt.mpi_built() and not dt.mpi_enabled()
expect_raises(ValueError, "needs TF_CONFIG", dt.init, mode="ps")  # ps mode: see torch_ps_api_test.py
dt.init()
assert dt.is_initialized()
assert dt.resume_point() == {"epoch": 0, "step": 0, "step_in_epoch": 0}, dt.resume_point()
r, n = dt.rank(), dt.size()
assert n == 2 and r in (0, 1), (r, n)
assert dt.local_size() == 2 and dt.local_rank() == r

# allreduce: average and sum, float32 and float64, non-contiguous input, in place.
x = torch.full((4, 3), float(r + 1))
assert torch.equal(dt.allreduce(x), torch.full((4, 3), 1.5))
assert torch.equal(x, torch.full((4, 3), float(r + 1))), "allreduce changed its input"
assert torch.equal(dt.allreduce(x, average=False, name="sum"), torch.full((4, 3), 3.0))
d = torch.full((5,), float(r), dtype=torch.float64)
assert dt.allreduce(d).dtype == torch.float64 and torch.equal(dt.allreduce(d), torch.full((5,), 0.5, dtype=torch.float64))
nc = torch.arange(12.0).reshape(3, 4).t() * (r + 1)  # not contiguous
assert torch.equal(dt.allreduce(nc, average=False), torch.arange(12.0).reshape(3, 4).t() * 3)
y = torch.full((2,), float(r))
assert dt.allreduce_(y, average=False) is y and torch.equal(y, torch.full((2,), 1.0))

# broadcast and broadcast_.
b = torch.tensor([float(r), 7.0])
assert torch.equal(dt.broadcast(b, root_rank=1), torch.tensor([1.0, 7.0]))
assert torch.equal(b, torch.tensor([float(r), 7.0]))
assert torch.equal(dt.broadcast_(b, root_rank=0), torch.tensor([0.0, 7.0]))

# allgather: first dimensions differ by rank.
g = dt.allgather(torch.full((r + 1, 2), float(r)))
assert torch.equal(g, torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])), g

# broadcast_object, broadcast_parameters, broadcast_optimizer_state.
assert dt.broadcast_object({"rank": r, "t": torch.ones(2) * r}, root_rank=1)["rank"] == 1
torch.manual_seed(100 + r)  # different initial weights on purpose
model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
dt.broadcast_parameters(model.state_dict(), root_rank=0)
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
assert torch.equal(dt.allreduce(flat, average=False), flat * 2), "parameters differ after broadcast"
adam = torch.optim.Adam(model.parameters(), lr=0.01)
if r == 0:  # only rank 0 has optimizer state
    model(torch.ones(1, 6)).sum().backward()
    adam.step()
    adam.zero_grad()
dt.broadcast_optimizer_state(adam, root_rank=0)
assert len(adam.state) == 4, "rank %d: optimizer state not broadcast" % r
dt.broadcast_parameters(dict(model.named_parameters()), root_rank=0)

# DistributedOptimizer: ranks see different data and end with identical parameters equal to
# one process stepping on the average gradient; backward_passes_per_step accumulates.
opt = dt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                              named_parameters=model.named_parameters())
ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
ref.load_state_dict(model.state_dict())
ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(5)
for step in range(3):
    data = torch.randn(2, 4, 6, generator=gen)  # both ranks draw both halves
    opt.zero_grad()
    model(data[r]).pow(2).mean().backward()
    opt.step()
    ref_opt.zero_grad()
    (ref(data[0]).pow(2).mean() + ref(data[1]).pow(2).mean()).div(2).backward()
    ref_opt.step()
for p, q in zip(model.parameters(), ref.parameters()):
    assert torch.allclose(p, q, atol=1e-6), "DistributedOptimizer differs from the reference"
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
assert torch.equal(dt.allreduce(flat, average=False), flat * 2), "ranks diverged"
acc = dt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                              named_parameters=model.named_parameters(), backward_passes_per_step=2)
acc.zero_grad()
model(torch.ones(1, 6)).sum().backward()
model(torch.ones(1, 6)).sum().backward()
acc.step()

# Every dtype Horovod takes on the CPU; integer sums exact (int64 beyond 2^53 too), float16
# and bfloat16 reduced in float32 and rounded once; Min, Max, Product; the scale factors.
for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
              torch.bfloat16, torch.float32, torch.float64):
    x = torch.tensor([1, 2, 3], dtype=dtype) * (r + 1)  # rank 0: 1 2 3, rank 1: 2 4 6
    assert torch.equal(dt.allreduce(x, op=dt.Sum), torch.tensor([3, 6, 9], dtype=dtype)), dtype
    assert torch.equal(dt.allreduce(x, op=dt.Min), torch.tensor([1, 2, 3], dtype=dtype)), dtype
    assert torch.equal(dt.allreduce(x, op=dt.Max), torch.tensor([2, 4, 6], dtype=dtype)), dtype
    assert torch.equal(dt.allreduce(x, op=dt.Product), torch.tensor([2, 8, 18], dtype=dtype)), dtype
    same = torch.tensor([4, 8], dtype=dtype)
    assert torch.equal(dt.allreduce(same), same), dtype  # the average of equal values
    assert dt.allreduce_(x, op=dt.Sum) is x and x.dtype == dtype
big = torch.tensor([2 ** 53 + 1], dtype=torch.int64)
assert dt.allreduce(big, op=dt.Sum).item() == 2 ** 54 + 2
# 60000 + 60000 overflows float16 (65504): summed in float32, averaged, rounded once.
h = torch.tensor([60000.0], dtype=torch.float16)
assert dt.allreduce(h).item() == 60000.0, dt.allreduce(h)
f = torch.tensor([1.0, 2.0])
assert torch.equal(dt.allreduce(f, op=dt.Sum, prescale_factor=2.0, postscale_factor=0.5),
                   torch.tensor([2.0, 4.0]))
expect_raises(ValueError, "prescale_factor and postscale_factor are for floating-point",
              dt.allreduce, torch.ones(2, dtype=torch.int32), prescale_factor=2.0)
expect_raises(RuntimeError, "rank 1 disagrees with rank 0 on op", dt.allreduce, torch.ones(2),
              op=dt.Min if r == 0 else dt.Max)
expect_raises(RuntimeError, "rank 1 disagrees with rank 0 on dtype", dt.allreduce,
              torch.ones(2, dtype=torch.int32 if r == 0 else torch.int64), op=dt.Sum)
expect_raises(ValueError, "op min has no gradient", dt.allreduce,
              torch.ones(2, requires_grad=True), op=dt.Min)

# alltoall: rows to each rank in order (equal parts, or splits, with the counts received);
# reducescatter: rank r keeps block r of the reduction (the first rows % size ranks a row more).
x = torch.arange(4, dtype=torch.float32).reshape(4, 1) + 10 * r
assert torch.equal(dt.alltoall(x), torch.tensor([[0.0], [1.0], [10.0], [11.0]]) if r == 0 else
                   torch.tensor([[2.0], [3.0], [12.0], [13.0]]))
out, got = dt.alltoall(torch.arange(4, dtype=torch.int64) + 10 * r,
                       splits=[1, 3] if r == 0 else [2, 2])
assert torch.equal(out, torch.tensor([0, 10, 11]) if r == 0 else torch.tensor([1, 2, 3, 12, 13]))
assert got.tolist() == ([1, 2] if r == 0 else [3, 2]), got
out, got = dt.alltoall(torch.ones(2, 3, dtype=torch.bfloat16) * r, splits=torch.tensor([0, 2]))
assert out.shape == ((0, 3) if r == 0 else (4, 3)) and got.tolist() == ([0, 0] if r == 0 else [2, 2])
expect_raises(ValueError, "3 rows do not split equally over 2 ranks", dt.alltoall, torch.zeros(3))
expect_raises(RuntimeError, "rank 1 disagrees with rank 0 on trailing_shape", dt.alltoall,
              torch.zeros(2, 1 + r))
y = torch.arange(5, dtype=torch.float32) * (r + 1)  # sum 0 3 6 9 12
assert torch.equal(dt.reducescatter(y, op=dt.Sum),
                   torch.tensor([0.0, 3.0, 6.0]) if r == 0 else torch.tensor([9.0, 12.0]))
assert torch.equal(dt.reducescatter(y),
                   torch.tensor([0.0, 1.5, 3.0]) if r == 0 else torch.tensor([4.5, 6.0]))
z = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32) * (r + 1)
assert torch.equal(dt.reducescatter(z, op=dt.Max),
                   torch.tensor([[2, 4]] if r == 0 else [[6, 8]], dtype=torch.int32))
h = torch.full((2,), 60000.0, dtype=torch.float16)
assert dt.reducescatter(h).tolist() == [60000.0]
expect_raises(RuntimeError, "rank 1 disagrees with rank 0 on shape", dt.reducescatter,
              torch.zeros(4 + r))

# barrier and allgather_object (Horovod's): every rank's object in rank order; one a rank cannot
# pickle is an error on every rank naming that rank; one rank in barrier() while the other is in
# allgather_object() is a mismatch on both, not a hang.
dt.barrier()
objs = dt.allgather_object({"rank": r, "t": torch.ones(2) * r})
assert [o["rank"] for o in objs] == [0, 1] and torch.equal(objs[1]["t"], torch.ones(2)), objs
assert dt.allgather_object("x" * (1 + 1000 * r)) == ["x", "x" * 1001]
expect_raises(ValueError, "allgather_object: rank 1 could not pickle the object",
              dt.allgather_object, (lambda: 0) if r == 1 else 1)
expect_raises(RuntimeError, "rank 1 disagrees with rank 0 on operation",
              dt.barrier if r == 0 else (lambda: dt.allgather_object(1)))
dt.barrier()

# Errors: a shape mismatch names the rank and the tensor; bad types and roots are refused.
msg = expect_raises(ValueError, "rank 1 disagrees with rank 0 on shape", dt.allreduce,
                    torch.zeros(3 + r), name="weights.7")
assert "weights.7" in msg, msg
# The same mismatch is what Horovod's users catch: a RuntimeError (HorovodInternalError).
msg = expect_raises(RuntimeError, "rank 1 disagrees with rank 0 on shape", dt.allreduce,
                    torch.zeros(3 + r), name="horovod")
try:
    dt.allreduce(torch.zeros(3 + r), name="classes")
except dt.HorovodInternalError as e:
    assert isinstance(e, ValueError) and isinstance(e, dt.MismatchError), type(e)
else:
    raise AssertionError("no error for a shape mismatch")
# Horovod's build queries: MPI only, CPU tensors only.
assert dt.mpi_built() and dt.mpi_enabled() and not dt.mpi_threads_supported()
assert not any(f() for f in (dt.gloo_built, dt.gloo_enabled, dt.nccl_built, dt.ccl_built,
                             dt.ddl_built, dt.cuda_built, dt.rocm_built))
expect_raises(TypeError, "torch.bool tensors are not supported", dt.allreduce,
              torch.zeros(3, dtype=torch.bool))
expect_raises(TypeError, "expected a torch.Tensor", dt.allreduce, [1.0, 2.0])
expect_raises(ValueError, "root_rank 5 but the job has 2 ranks", dt.broadcast, torch.zeros(2), 5)
# Each rank naming itself the root (Horovod's test_horovod_broadcast_rank_error): an error on
# every rank, naming the rank and the roots, never a hang in MPI_Bcast; the job goes on.
msg = expect_raises(ValueError, "rank 1 disagrees with rank 0 on root_rank", dt.broadcast,
                    torch.zeros(2), r, name="roots")
assert "rank 0 has 0, rank 1 has 1" in msg and "roots" in msg, msg
expect_raises(ValueError, "rank 1 disagrees with rank 0 on root_rank", dt.broadcast_object,
              {"a": 1}, r)
assert torch.equal(dt.broadcast(torch.tensor([float(r)]), root_rank=1), torch.tensor([1.0]))
other = torch.nn.Linear(3 + r, 2)
bad = dt.DistributedOptimizer(torch.optim.SGD(other.parameters(), lr=0.1),
                              named_parameters=other.named_parameters())
def backward_and_step():  # the layouts are compared when the first bucket is ready
    other(torch.ones(1, 3 + r)).sum().backward()
    bad.step()


expect_raises(ValueError, "rank 1 disagrees with rank 0 on shape of weight", backward_and_step)
dt.shutdown()
print("rank %d: every dtrain.torch call checked" % r, flush=True)
