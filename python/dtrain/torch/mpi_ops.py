"""The collectives on tensors: allreduce(_), broadcast(_), allgather, Horovod's reduction ops
(Average, Sum, Min, Max, Product), and what they share: the checks that every rank calls the same operation on a
tensor of the same shape and type, and the flush of the bucketed optimizers' held-back buckets
before a collective of the main thread. In ps mode they go through ps:0 (_ps_sum)."""
import json
import math

import torch

from dtrain import _core

from . import _state
from .basics import rank, size
from .exceptions import MismatchError

# Horovod's reduction ops for allreduce(op=...).
Average = "average"
Sum = "sum"
Min = "min"
Max = "max"
Product = "product"
_OPS = (Average, Sum, Min, Max, Product)

# What allreduce reduces as it is (MPI's own types); float16 and bfloat16 are reduced in float32
# and rounded once at the end (Horovod's MPI sum rounds every partial sum to 16 bits).
_MPI_TYPES = {torch.uint8: "uint8", torch.int8: "int8", torch.int16: "int16",
              torch.int32: "int32", torch.int64: "int64", torch.float32: "float32",
              torch.float64: "float64"}
_WIDENED = (torch.float16, torch.bfloat16)


def _dtype_name(t):
    if t.dtype == torch.float32:
        return "float32"
    if t.dtype == torch.float64:
        return "float64"
    raise TypeError("dtrain.torch: %s tensors are not supported (float32 or float64)" % t.dtype)


def _check_cpu(t, what):
    if not isinstance(t, torch.Tensor):
        raise TypeError("dtrain.torch.%s: expected a torch.Tensor, got %s" % (what, type(t).__name__))
    if t.device.type != "cpu":
        raise ValueError("dtrain.torch.%s: tensors must be on the CPU in this version, not %s"
                         % (what, t.device))


def _agree(kind, name, t, **more):
    """Every rank must call the same operation on a tensor of the same shape and type (and the
    same `more`: a broadcast's root, which ranks that each name another would wait on forever)."""
    _check_agreement(dict({"operation": kind, "tensor": name, "shape": list(t.shape),
                           "dtype": str(t.dtype)}, **more), name)


def _check_agreement(desc, name):
    try:
        _core.check_agreement(json.dumps(desc))
    except _core.InputError as e:
        raise MismatchError("dtrain.torch: %s (tensor '%s')" % (e, name)) from None


def _ps_sum(values):
    """ps mode: sums a float64 tensor over the workers in place, through ps:0 (the path the
    workers' metrics take: fine for metrics and small tensors, not for gradients). Needs the
    worker's DistributedOptimizer (which joins the servers)."""
    v = values.contiguous()
    if _core.ps_sum(v.data_ptr(), v.numel()) and _state.ps_optimizer is not None:
        _state.ps_optimizer._dt_take_params()  # async: the answer to the last push came in first
    return v


def _reduction(average, op, what):
    """Horovod's average= (None: the default, an average) and op= (Average, Sum, Min, Max,
    Product): the reduction to make."""
    if op is not None:
        if average is not None:
            raise ValueError("dtrain.torch.%s: give average= or op=, not both" % what)
        if op not in _OPS:
            raise ValueError("dtrain.torch.%s: op must be dtrain.torch.Average, Sum, Min, Max or "
                             "Product, not %r" % (what, op))
        return op
    return Average if average is None or average else Sum


def _check_reducible(tensor, what, prescale_factor, postscale_factor):
    """A dtype the reductions take, and scale factors only where they stay exact. Returns
    whether the tensor holds integers."""
    if tensor.dtype not in _MPI_TYPES and tensor.dtype not in _WIDENED:
        raise TypeError("dtrain.torch: %s tensors are not supported (uint8, int8, int16, int32, "
                        "int64, float16, bfloat16, float32, float64)" % tensor.dtype)
    integer = not tensor.is_floating_point()
    if integer and (prescale_factor != 1 or postscale_factor != 1):
        raise ValueError("dtrain.torch.%s: prescale_factor and postscale_factor are for "
                         "floating-point tensors (%s would not stay exact)" % (what, tensor.dtype))
    return integer


def _reduce_any(tensor, op, name, prescale_factor, postscale_factor):
    """allreduce_ for every dtype and op, and the scale factors (allreduce mode)."""
    integer = _check_reducible(tensor, "allreduce", prescale_factor, postscale_factor)
    _agree("allreduce", name, tensor, op=op, prescale_factor=float(prescale_factor),
           postscale_factor=float(postscale_factor))
    with torch.no_grad():
        work = tensor.float() if tensor.dtype in _WIDENED else tensor.contiguous()
        if work is tensor:
            work = tensor.clone()
        if prescale_factor != 1:
            work.mul_(prescale_factor)
        _core.allreduce_any(work.data_ptr(), work.numel(), _MPI_TYPES[work.dtype],
                            Sum if op == Average else op, name)
        if op == Average:
            if integer:  # as C's integer division: exact when the ranks' values are the same
                work = torch.div(work, size(), rounding_mode="trunc")
            else:
                work.div_(size())
        if postscale_factor != 1:
            work.mul_(postscale_factor)
        tensor.copy_(work)
    return tensor


def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0,
               postscale_factor=1.0):
    """In place: the tensor becomes the sum, average (the default), min, max or product over
    ranks, of any of Horovod's CPU dtypes. Returns it."""
    _check_cpu(tensor, "allreduce_")
    op = _reduction(average, op, "allreduce_")
    name = name or "allreduce"
    _flush_buckets()
    if _state.ps is not None:
        if op not in (Average, Sum):
            raise ValueError("dtrain.torch.allreduce (ps mode): op %s is not supported: ps:0 "
                             "sums (Sum and Average only)" % op)
        _dtype_name(tensor)
        with torch.no_grad():
            total = _ps_sum(tensor.detach().to(torch.float64).clone() * prescale_factor)
            total = total / size() if op == Average else total
            tensor.copy_(total * postscale_factor)
        return tensor
    if (tensor.dtype not in (torch.float32, torch.float64) or op not in (Average, Sum)
            or prescale_factor != 1 or postscale_factor != 1):
        return _reduce_any(tensor, op, name, prescale_factor, postscale_factor)
    average = op == Average
    _agree("allreduce", name, tensor, op=op)
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    with torch.no_grad():
        _core.allreduce(work.data_ptr(), work.numel(), _dtype_name(work), bool(average), name)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


class _AllreduceGrad(torch.autograd.Function):
    """allreduce with a gradient, as Horovod's: the gradient is allreduced the same way."""

    @staticmethod
    def forward(ctx, tensor, op, name, prescale_factor, postscale_factor):
        ctx.op, ctx.name, ctx.scales = op, name, (prescale_factor, postscale_factor)
        return allreduce_(tensor.detach().clone(), op=op, name=name,
                          prescale_factor=prescale_factor, postscale_factor=postscale_factor)

    @staticmethod
    def backward(ctx, grad):
        return allreduce_(grad.detach().clone(), op=ctx.op, name=ctx.name + " (gradient)",
                          prescale_factor=ctx.scales[0], postscale_factor=ctx.scales[1]), \
            None, None, None, None


def allreduce(tensor, average=None, name=None, op=None, prescale_factor=1.0,
              postscale_factor=1.0):
    """The sum, average (the default), min, max or product of `tensor` over ranks, as a new
    tensor; autograd passes through a sum or an average (the gradient is allreduced the same
    way)."""
    _check_cpu(tensor, "allreduce")
    op = _reduction(average, op, "allreduce")
    if tensor.requires_grad and torch.is_grad_enabled():
        if op not in (Average, Sum):
            raise ValueError("dtrain.torch.allreduce: op %s has no gradient here; detach the "
                             "tensor, or use Sum or Average" % op)
        return _AllreduceGrad.apply(tensor, op, name or "allreduce", prescale_factor,
                                    postscale_factor)
    return allreduce_(tensor.detach().clone(), op=op, name=name,
                      prescale_factor=prescale_factor, postscale_factor=postscale_factor)


def broadcast_(tensor, root_rank, name=None):
    """In place: every rank's tensor becomes root_rank's. Returns it."""
    _check_cpu(tensor, "broadcast_")
    name = name or "broadcast"
    _flush_buckets()
    if _state.ps is not None:  # root's values plus zeros: exact in float64
        _check_root(root_rank)
        if tensor.is_floating_point() or tensor.is_complex():
            _dtype_name(tensor)  # integers (BatchNorm's num_batches_tracked) are exact too
        with torch.no_grad():
            mine = tensor.detach().to(torch.float64)
            tensor.copy_(_ps_sum(mine.clone() if rank() == root_rank else torch.zeros_like(mine)))
        return tensor
    _agree("broadcast", name, tensor, root_rank=int(root_rank))
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    with torch.no_grad():
        _core.broadcast(work.data_ptr(), work.numel() * work.element_size(), int(root_rank), name)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def broadcast(tensor, root_rank, name=None):
    """root_rank's tensor, as a new tensor on every rank."""
    _check_cpu(tensor, "broadcast")
    return broadcast_(tensor.detach().clone(), root_rank, name=name)


def allgather(tensor, name=None):
    """Every rank's tensor concatenated along the first dimension, in rank order (the first
    dimension may differ between ranks; the others must agree)."""
    _check_cpu(tensor, "allgather")
    name = name or "allgather"
    _flush_buckets()
    t = tensor.detach().contiguous()
    if _state.ps is not None:  # the first dimensions, then every rank's rows in its own place
        _dtype_name(t)
        rows = torch.zeros(size(), dtype=torch.float64)
        rows[rank()] = t.shape[0]
        rows = _ps_sum(rows).long().tolist()
        per_row = math.prod(t.shape[1:])
        out = torch.zeros(sum(rows) * per_row, dtype=torch.float64)
        start = sum(rows[:rank()]) * per_row
        out[start:start + t.numel()] = t.reshape(-1).to(torch.float64)
        return _ps_sum(out).to(t.dtype).reshape(-1, *t.shape[1:])
    _check_agreement({"operation": "allgather", "tensor": name,
                      "trailing_shape": list(t.shape[1:]), "dtype": str(t.dtype)}, name)
    parts = _core.allgather_bytes(t.numpy().tobytes(), name)
    rows = [torch.frombuffer(bytearray(p), dtype=t.dtype).reshape(-1, *t.shape[1:]) if p else
            torch.empty((0, *t.shape[1:]), dtype=t.dtype) for p in parts]
    return torch.cat(rows, dim=0)


def _refused_in_ps(what):
    if _state.ps is not None:
        raise ValueError("dtrain.torch.%s is not available in ps mode (workers talk to the "
                         "servers, not to each other)" % what)


def alltoall(tensor, splits=None, name=None):
    """Horovod's alltoall: rows splits[k] of the first dimension (in order) go to rank k; returns
    the rows every rank sent this one, concatenated in rank order, and with `splits` given also
    how many came from each rank. Without splits the first dimension is cut into equal parts."""
    _check_cpu(tensor, "alltoall")
    _refused_in_ps("alltoall")
    name = name or "alltoall"
    _flush_buckets()
    t = tensor.detach().contiguous()
    if t.dim() == 0:
        raise ValueError("dtrain.torch.alltoall: a tensor of at least one dimension")
    rows = t.shape[0]
    n = size()
    if splits is None:
        if rows % n:
            raise ValueError("dtrain.torch.alltoall: %d rows do not split equally over %d ranks: "
                             "give splits" % (rows, n))
        counts = [rows // n] * n
    else:
        counts = [int(s) for s in (splits.tolist() if isinstance(splits, torch.Tensor) else splits)]
        if len(counts) != n or any(c < 0 for c in counts) or sum(counts) != rows:
            raise ValueError("dtrain.torch.alltoall: splits %s must be %d counts >= 0 adding up to "
                             "the first dimension (%d)" % (counts, n, rows))
    trailing = list(t.shape[1:])
    _check_agreement({"operation": "alltoall", "tensor": name, "trailing_shape": trailing,
                      "dtype": str(t.dtype), "splits_given": splits is not None}, name)
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    per_row = math.prod(trailing) * t.element_size()
    parts, start = [], 0
    for c in counts:
        parts.append(data[start:start + c * per_row])
        start += c * per_row
    got = _core.alltoall_bytes(parts, name)
    out = [torch.frombuffer(bytearray(g), dtype=t.dtype) if g else
           torch.empty(0, dtype=t.dtype) for g in got]
    output = torch.cat(out).reshape(-1, *trailing)
    if splits is None:
        return output
    return output, torch.tensor([o.numel() // max(1, math.prod(trailing)) for o in out],
                                dtype=torch.int32)


def reducescatter(tensor, name=None, op=Average, prescale_factor=1.0, postscale_factor=1.0):
    """Horovod's reducescatter: the reduction (Average by default, Sum, Min, Max, Product) of
    every rank's tensor, of which rank r keeps block r of the first dimension (the first
    rows % size ranks one row more)."""
    _check_cpu(tensor, "reducescatter")
    _refused_in_ps("reducescatter")
    op = _reduction(None, op, "reducescatter")
    name = name or "reducescatter"
    _flush_buckets()
    integer = _check_reducible(tensor, "reducescatter", prescale_factor, postscale_factor)
    if tensor.dim() == 0:
        raise ValueError("dtrain.torch.reducescatter: a tensor of at least one dimension")
    _agree("reducescatter", name, tensor, op=op, prescale_factor=float(prescale_factor),
           postscale_factor=float(postscale_factor))
    n, rows = size(), tensor.shape[0]
    row_counts = [rows // n + (1 if k < rows % n else 0) for k in range(n)]
    per_row = tensor[0].numel() if rows else 0
    with torch.no_grad():
        work = tensor.detach().float() if tensor.dtype in _WIDENED else \
            tensor.detach().contiguous().clone()
        if prescale_factor != 1:
            work.mul_(prescale_factor)
        mine = torch.empty((row_counts[rank()], *tensor.shape[1:]), dtype=work.dtype)
        _core.reduce_scatter_any(work.data_ptr(), mine.data_ptr(),
                                 [c * per_row for c in row_counts], _MPI_TYPES[work.dtype],
                                 Sum if op == Average else op, name)
        if op == Average:
            mine = torch.div(mine, n, rounding_mode="trunc") if integer else mine / n
        if postscale_factor != 1:
            mine = mine * postscale_factor
        return mine.to(tensor.dtype)


def barrier():
    """Returns once every rank has called it (Horovod's barrier). A rank that calls another
    collective meanwhile gets an error on every rank, naming it, as a mismatch does."""
    _flush_buckets()
    if _state.ps is not None:  # a sum through ps:0 waits for every worker
        _ps_sum(torch.zeros(1, dtype=torch.float64))
        return
    _check_agreement({"operation": "barrier", "tensor": "barrier"}, "barrier")


def _check_root(root_rank):
    if not 0 <= int(root_rank) < size():
        raise ValueError("dtrain.torch: root_rank %d but the job has %d ranks" % (root_rank, size()))


def _flush_buckets():
    """See _DistributedOptimizer._dt_flush in bucketed_optimizer.py (the bucketed optimizers, in
    the order made)."""
    for ref in list(_state.bucketed):
        opt = ref()
        if opt is None:
            _state.bucketed.remove(ref)
        else:
            opt._dt_flush()
