"""dtrain's PyTorch API, with Horovod's names and semantics: a Horovod user changes the import.

    import dtrain.torch as dt
    dt.init()
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01 * dt.size())
    opt = dt.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    dt.broadcast_parameters(model.state_dict(), root_rank=0)
    dt.broadcast_optimizer_state(opt, root_rank=0)
    ... loss.backward(); opt.step() ...

Run it under dtrainrun or mpirun (`dtrainrun -np 2 -- python3 train.py`). Gradients are averaged
across ranks as backward produces them: parameters are cut into buckets of the fusion threshold
(DTRAIN_FUSION_THRESHOLD, default 64 MB, as Horovod's HOROVOD_FUSION_THRESHOLD), and a bucket
leaves on dtrain's background allreduce thread as soon as all its gradients are there. Tensors
are CPU tensors (float32; float64 too for allreduce). Errors are Python exceptions carrying
dtrain's messages; a mismatch between ranks names the rank and the tensor.
"""
import io
import json
import os

import torch

from dtrain import _core

__all__ = ["init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
           "allreduce", "allreduce_", "broadcast", "broadcast_", "allgather",
           "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
           "DistributedOptimizer"]


def init(mode="allreduce", stall_warning=None, stall_timeout=None):
    """Joins the job (MPI under mpirun/dtrainrun; alone otherwise, as a job of one).

    stall_warning / stall_timeout: seconds, as mnist_train's --stall-warning / --stall-timeout
    (default DTRAIN_STALL_WARNING / DTRAIN_STALL_TIMEOUT, else 60 and 600)."""
    if mode != "allreduce":
        raise NotImplementedError(
            "dtrain.torch: mode=%r is not available in this version (parameter-server mode for "
            "PyTorch is not built yet); use mode='allreduce'" % (mode,))
    if os.environ.get("TF_CONFIG") and '"ps"' in os.environ["TF_CONFIG"]:
        raise NotImplementedError(
            "dtrain.torch: TF_CONFIG names ps tasks, but parameter-server mode for PyTorch is not "
            "built yet in this version")
    _core.init(-1.0 if stall_warning is None else float(stall_warning),
               -1.0 if stall_timeout is None else float(stall_timeout))


def shutdown():
    _core.shutdown()


def is_initialized():
    return _core.is_initialized()


def rank():
    return _core.rank()


def size():
    return _core.size()


def local_rank():
    return _core.local_rank()


def local_size():
    return _core.local_size()


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


def _agree(kind, name, t):
    """Every rank must call the same operation on a tensor of the same shape and type."""
    _check_agreement({"operation": kind, "tensor": name, "shape": list(t.shape),
                      "dtype": str(t.dtype)}, name)


def _check_agreement(desc, name):
    try:
        _core.check_agreement(json.dumps(desc))
    except _core.InputError as e:
        raise ValueError("dtrain.torch: %s (tensor '%s')" % (e, name)) from None


def allreduce_(tensor, average=True, name=None):
    """In place: the tensor becomes the sum (or average) over ranks. Returns it."""
    _check_cpu(tensor, "allreduce_")
    name = name or "allreduce"
    _agree("allreduce", name, tensor)
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    with torch.no_grad():
        _core.allreduce(work.data_ptr(), work.numel(), _dtype_name(work), bool(average), name)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def allreduce(tensor, average=True, name=None):
    """The sum (or average) of `tensor` over ranks, as a new tensor."""
    _check_cpu(tensor, "allreduce")
    return allreduce_(tensor.detach().clone(), average=average, name=name)


def broadcast_(tensor, root_rank, name=None):
    """In place: every rank's tensor becomes root_rank's. Returns it."""
    _check_cpu(tensor, "broadcast_")
    name = name or "broadcast"
    _agree("broadcast", name, tensor)
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
    t = tensor.detach().contiguous()
    _check_agreement({"operation": "allgather", "tensor": name,
                      "trailing_shape": list(t.shape[1:]), "dtype": str(t.dtype)}, name)
    parts = _core.allgather_bytes(t.numpy().tobytes(), name)
    rows = [torch.frombuffer(bytearray(p), dtype=t.dtype).reshape(-1, *t.shape[1:]) if p else
            torch.empty((0, *t.shape[1:]), dtype=t.dtype) for p in parts]
    return torch.cat(rows, dim=0)


def broadcast_object(obj, root_rank=0, name=None):
    """Any picklable object (tensors included) from root_rank to every rank."""
    data = b""
    if rank() == root_rank:
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
    out = _core.broadcast_bytes(data, int(root_rank), name or "broadcast_object")
    return torch.load(io.BytesIO(out))


def broadcast_parameters(params, root_rank):
    """root_rank's parameters (a state_dict, or named_parameters()) into every rank's, in place."""
    if isinstance(params, dict):
        items = sorted(params.items())
    else:
        items = sorted(params)
    for name, p in items:
        if not isinstance(p, torch.Tensor):
            raise TypeError("dtrain.torch.broadcast_parameters: %s is not a tensor" % name)
        broadcast_(p.data if p.requires_grad else p, root_rank, name="parameter " + name)


def broadcast_optimizer_state(optimizer, root_rank):
    """root_rank's optimizer state and hyperparameters into every rank's optimizer."""
    state = broadcast_object(optimizer.state_dict(), root_rank, name="optimizer state")
    optimizer.load_state_dict(state)


class _DistributedOptimizer(torch.optim.Optimizer):
    def __init__(self, params, named_parameters, backward_passes_per_step, fusion_threshold):
        super(self.__class__, self).__init__(params)
        all_params = [p for g in self.param_groups for p in g["params"]]
        if named_parameters is not None:
            named = list(named_parameters)
            names = {id(p): n for n, p in named}
            missing = [p for p in all_params if id(p) not in names]
            if missing:
                raise ValueError("dtrain.torch.DistributedOptimizer: named_parameters lacks %d of "
                                 "the optimizer's parameters" % len(missing))
        else:
            names = {id(p): "param.%d" % i for i, p in enumerate(all_params)}
        if backward_passes_per_step < 1:
            raise ValueError("backward_passes_per_step must be at least 1")
        self._dt_names = names
        self._dt_passes = backward_passes_per_step
        # Buckets: the parameters in reverse order (backward reaches the last layers first), cut
        # at the fusion threshold; a bucket leaves when all its gradients are in, and buckets
        # leave in order, so every rank queues the same collectives in the same order.
        ps = [p for p in all_params if p.requires_grad]
        self._dt_buckets = []
        cur, cur_bytes = [], 0
        for p in reversed(ps):
            nbytes = p.numel() * 4
            if cur and cur_bytes + nbytes > fusion_threshold:
                self._dt_buckets.append(cur)
                cur, cur_bytes = [], 0
            cur.append(p)
            cur_bytes += nbytes
        if cur:
            self._dt_buckets.append(cur)
        self._dt_bucket_of = {id(p): b for b, ps_ in enumerate(self._dt_buckets) for p in ps_}
        self._dt_counts = {}
        self._dt_ready = [0] * len(self._dt_buckets)
        self._dt_next = 0
        self._dt_inflight = []
        self._dt_checked = False
        self._dt_step = 0
        self._dt_hooks = []
        for p in ps:
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise TypeError("dtrain.torch.DistributedOptimizer: parameter %s is %s on %s; "
                                "this version averages float32 CPU gradients"
                                % (names[id(p)], p.dtype, p.device))
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(self._dt_make_hook(p))
            self._dt_hooks.append(acc)

    def _dt_make_hook(self, p):
        def hook(*_):
            c = self._dt_counts.get(id(p), 0) + 1
            self._dt_counts[id(p)] = c
            if c == self._dt_passes:
                b = self._dt_bucket_of[id(p)]
                self._dt_ready[b] += 1
                self._dt_launch_ready()
        return hook

    def _dt_check_layout(self):
        if self._dt_checked:
            return
        layout = {self._dt_names[id(p)]: list(p.shape) for b in self._dt_buckets for p in b}
        desc = {"operation": "DistributedOptimizer", "parameters": len(layout)}
        desc.update({"shape of " + n: s for n, s in layout.items()})
        _check_agreement(desc, "DistributedOptimizer's parameters")
        self._dt_checked = True

    def _dt_launch(self, b):
        params = self._dt_buckets[b]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.detach().reshape(-1) for g in grads])
        h = _core.iallreduce(flat.data_ptr(), flat.numel(), True,
                             "gradient bucket %d of step %d" % (b, self._dt_step))
        self._dt_inflight.append((h, flat, params))

    def _dt_launch_ready(self):
        while (self._dt_next < len(self._dt_buckets) and
               self._dt_ready[self._dt_next] == len(self._dt_buckets[self._dt_next])):
            if self._dt_next == 0:
                self._dt_check_layout()
            self._dt_launch(self._dt_next)
            self._dt_next += 1

    def synchronize(self):
        """Waits for every bucket's average and puts it into the parameters' .grad."""
        if self._dt_next == 0 and not self._dt_inflight and not any(self._dt_counts.values()):
            return  # no backward since the last step: nothing to average
        self._dt_check_layout()
        while self._dt_next < len(self._dt_buckets):  # unused parameters: their buckets too
            self._dt_launch(self._dt_next)
            self._dt_next += 1
        with torch.no_grad():
            for h, flat, params in self._dt_inflight:
                h.wait()
                off = 0
                for p in params:
                    n = p.numel()
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.copy_(flat[off:off + n].view_as(p))
                    off += n
        self._dt_inflight = []
        self._dt_counts = {}
        self._dt_ready = [0] * len(self._dt_buckets)
        self._dt_next = 0
        self._dt_step += 1

    def step(self, closure=None):
        self.synchronize()
        return super(self.__class__, self).step(closure)


def DistributedOptimizer(optimizer, named_parameters=None, backward_passes_per_step=1):
    """Wraps `optimizer` so that step() applies the gradient averaged over all ranks (Horovod's
    hvd.DistributedOptimizer). zero_grad() and step() behave as the wrapped optimizer's."""
    if not is_initialized():
        raise ValueError("dtrain.torch.DistributedOptimizer: call dtrain.torch.init() first")
    cls = type(optimizer.__class__.__name__, (optimizer.__class__,),
               dict(_DistributedOptimizer.__dict__))
    return cls(optimizer.param_groups, named_parameters, backward_passes_per_step,
               _core.fusion_threshold())
