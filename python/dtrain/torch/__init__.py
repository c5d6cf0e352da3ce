"""dtrain's PyTorch API, with Horovod's names and semantics: a Horovod user changes the import.

    import dtrain.torch as dt
    dt.init()
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01 * dt.size())
    opt = dt.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    dt.broadcast_parameters(model.state_dict(), root_rank=0)
    dt.broadcast_optimizer_state(opt, root_rank=0)
    ... loss.backward(); opt.step() ...

Run it under dtrainrun or mpirun (`dtrainrun -np 2 -- python3 train.py`). With every rank on one
machine and SGD, Adam, AdamW or RMSprop, step() is sharded: gradients accumulate in shared
memory and each rank averages and steps its own piece of the parameters with the wrapped
optimizer (_ShardedDistributedOptimizer). Otherwise gradients are averaged as backward produces
them: parameters are cut into buckets of the fusion threshold (DTRAIN_FUSION_THRESHOLD, default
64 MB, as Horovod's HOROVOD_FUSION_THRESHOLD), and a bucket leaves on dtrain's background
allreduce thread as soon as all its gradients are there. Tensors are CPU tensors (float32;
float64 too for allreduce). Errors are Python exceptions carrying dtrain's messages; a mismatch
between ranks names the rank and the tensor.
"""
import atexit
import collections
import contextlib
import ctypes
import io
import json
import math
import os
import sys
import weakref

import torch

from dtrain import _core

__all__ = ["init", "shutdown", "is_initialized", "mode", "resume_point", "rank", "size", "local_rank", "local_size",
           "Average", "Sum",
           "allreduce", "allreduce_", "broadcast", "broadcast_", "allgather",
           "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
           "DistributedOptimizer"]


_ps = None  # parameter-server mode: what _core.ps_init said about this task
_ps_failed = False  # an uncaught exception ended the script (the servers are not told "done")
_ps_optimizer = None  # ps mode: the worker's DistributedOptimizer (it owns the model's copy)
# allreduce mode: per shared window of the sharded step, (its optimizer, its parameters) as weak
# references; shutdown() turns what still points into a window into private copies.
_sharded_windows = []
# id(parameter) -> its newest DistributedOptimizer (a weak reference): a parameter wrapped again
# counts its backward passes for the new wrapper only.
_grad_owner = {}
_bucketed = []  # allreduce mode: weak references to the bucketed DistributedOptimizers, in order
_ended = False  # shutdown() came: MPI (or the ps connection) cannot start again in this process

# Horovod's reduction ops for allreduce(op=...).
Average = "average"
Sum = "sum"
_resume = None  # ps mode: where this worker continues (set when its DistributedOptimizer joins)


def _wants_ps(mode):
    if mode == "ps":
        return True
    if mode == "allreduce":
        return False
    if mode is not None:
        raise ValueError("dtrain.torch.init: mode must be 'allreduce', 'ps' or None (from "
                         "TF_CONFIG), not %r" % (mode,))
    text = os.environ.get("TF_CONFIG")
    if not text:
        return False
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ValueError("dtrain.torch.init: TF_CONFIG is not JSON: %s" % e) from None
    return isinstance(cfg, dict) and bool((cfg.get("cluster") or {}).get("ps"))


def init(mode=None, ps_async=False, max_staleness=0, stall_warning=None, stall_timeout=None,
         start_timeout=None, step_timeout=None, verbose=False):
    """Joins the job.

    mode: None picks from the environment: parameter-server mode when TF_CONFIG names ps tasks
    (dtrainrun --mode ps sets it), else allreduce (MPI under mpirun/dtrainrun; alone otherwise,
    as a job of one). 'allreduce' or 'ps' forces one.

    In ps mode the same script runs on every task, TensorFlow-style: on a ps task init() serves
    the job and then ends the process (status 0; 1 with the error on a failure); on a worker it
    returns, and DistributedOptimizer sends the gradients to the servers, which run the
    optimizer. ps_async / max_staleness: as mnist_train's --ps-async / --max-staleness.
    start_timeout / step_timeout: seconds, as --start-timeout / --step-timeout (default
    DTRAIN_START_TIMEOUT, else 60, and 60).

    stall_warning / stall_timeout: seconds, as mnist_train's --stall-warning / --stall-timeout
    (default DTRAIN_STALL_WARNING / DTRAIN_STALL_TIMEOUT, else 60 and 600)."""
    global _ps
    if _core.is_initialized():
        return
    if _ended:
        raise ValueError("dtrain.torch.init() after dtrain.torch.shutdown(): a process joins the "
                         "job once (MPI cannot start again after it ended); call shutdown() at the "
                         "end of the script")
    warn = -1.0 if stall_warning is None else float(stall_warning)
    timeout = -1.0 if stall_timeout is None else float(stall_timeout)
    if not _wants_ps(mode):
        if ps_async or max_staleness:
            raise ValueError("dtrain.torch.init: ps_async and max_staleness are for "
                             "parameter-server mode (TF_CONFIG with ps tasks, or mode='ps')")
        _core.init(warn, timeout)
        return
    if not os.environ.get("TF_CONFIG"):
        raise ValueError("dtrain.torch.init(mode='ps') needs TF_CONFIG naming the ps and worker "
                         "tasks and this task (dtrainrun --mode ps sets it)")
    info = _core.ps_init(bool(ps_async), int(max_staleness),
                         -1.0 if start_timeout is None else float(start_timeout),
                         -1.0 if step_timeout is None else float(step_timeout),
                         warn, timeout, bool(verbose))
    if info["role"] == "ps":
        # A ps task serves until every worker is done, then the process ends: the rest of the
        # script is the workers'.
        code = 0
        try:
            _core.ps_serve()
        except Exception as e:  # noqa: BLE001 -- any failure ends the task, saying why
            sys.stderr.write("dtrain.torch: ps:%d: error: %s\n" % (info["rank"], e))
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _ps = info
    hook = sys.excepthook

    def excepthook(*args):
        global _ps_failed
        _ps_failed = True
        hook(*args)
    sys.excepthook = excepthook
    atexit.register(_ps_exit)


def _ps_exit():
    if _ps is not None:
        _core.ps_shutdown(not _ps_failed)


def shutdown():
    """Leaves the job. In ps mode a worker tells the servers it is done; they end when every
    worker is."""
    global _ps, _ps_optimizer, _ended
    if _core.is_initialized() or _ps is not None:
        _ended = True
    if _ps is not None:
        _ps = _ps_optimizer = None
        _core.ps_shutdown(True)
        return
    for opt_ref, param_refs in _sharded_windows:  # the windows end now: leave them
        opt = opt_ref()
        if opt is not None:
            opt._dt_detach()  # .grad and the optimizer state
            continue
        with torch.no_grad():  # the optimizer is gone, its parameters' .grad still there
            for ref in param_refs:
                p = ref()
                if p is not None and p.grad is not None:
                    p.grad = p.grad.clone()
    _sharded_windows.clear()
    _core.shutdown()


def is_initialized():
    return _core.is_initialized()


def resume_point():
    """Where this process's training continues: {"epoch": epochs done, "step": optimizer steps
    done, "step_in_epoch": steps of the current epoch done}. All zeros, except for a ps-mode
    worker that the launcher started again after it died (`dtrainrun --ps-async ...
    --rejoin-workers N`): once its DistributedOptimizer has joined the servers, it gets the place
    where they saw it last, so the script can skip what it had trained (the parameters are
    already the servers' current ones) and meet the other workers at the next metrics sum."""
    if not is_initialized():
        raise ValueError("dtrain.torch.resume_point: call dtrain.torch.init() first")
    if _ps is not None and _resume is None:
        raise ValueError("dtrain.torch.resume_point: in ps mode the worker learns it when its "
                         "DistributedOptimizer joins the servers: create that first")
    return dict(_resume or {"epoch": 0, "step": 0, "step_in_epoch": 0})


def mode():
    """'allreduce' or 'ps' (after init)."""
    if not is_initialized():
        raise ValueError("dtrain.torch is not initialized: call dtrain.torch.init() first")
    return "ps" if _ps is not None else "allreduce"


def rank():
    return _ps["rank"] if _ps is not None else _core.rank()


def size():
    return _ps["size"] if _ps is not None else _core.size()


def local_rank():
    return _ps["local_rank"] if _ps is not None else _core.local_rank()


def local_size():
    return _ps["local_size"] if _ps is not None else _core.local_size()


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


def _ps_sum(values):
    """ps mode: sums a float64 tensor over the workers in place, through ps:0 (the path the
    workers' metrics take: fine for metrics and small tensors, not for gradients). Needs the
    worker's DistributedOptimizer (which joins the servers)."""
    v = values.contiguous()
    if _core.ps_sum(v.data_ptr(), v.numel()) and _ps_optimizer is not None:
        _ps_optimizer._dt_take_params()  # async: the answer to the last push came in first
    return v


def _averages(average, op, what):
    """Horovod's average= (None: the default, an average) and op= (dtrain.torch.Average or Sum)."""
    if op is not None:
        if average is not None:
            raise ValueError("dtrain.torch.%s: give average= or op=, not both" % what)
        if op not in (Average, Sum):
            raise ValueError("dtrain.torch.%s: op must be dtrain.torch.Average or dtrain.torch.Sum, "
                             "not %r" % (what, op))
        return op == Average
    return True if average is None else bool(average)


def allreduce_(tensor, average=None, name=None, op=None):
    """In place: the tensor becomes the sum (or average) over ranks. Returns it."""
    _check_cpu(tensor, "allreduce_")
    average = _averages(average, op, "allreduce_")
    name = name or "allreduce"
    _flush_buckets()
    if _ps is not None:
        _dtype_name(tensor)
        with torch.no_grad():
            total = _ps_sum(tensor.detach().to(torch.float64).clone())
            tensor.copy_(total / size() if average else total)
        return tensor
    _agree("allreduce", name, tensor)
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    with torch.no_grad():
        _core.allreduce(work.data_ptr(), work.numel(), _dtype_name(work), bool(average), name)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


class _AllreduceGrad(torch.autograd.Function):
    """allreduce with a gradient, as Horovod's: the gradient is allreduced the same way."""

    @staticmethod
    def forward(ctx, tensor, average, name):
        ctx.average, ctx.name = average, name
        return allreduce_(tensor.detach().clone(), average=average, name=name)

    @staticmethod
    def backward(ctx, grad):
        return allreduce_(grad.detach().clone(), average=ctx.average,
                          name=ctx.name + " (gradient)"), None, None


def allreduce(tensor, average=None, name=None, op=None):
    """The sum (or average: the default) of `tensor` over ranks, as a new tensor; autograd
    passes through it (the gradient is allreduced the same way)."""
    _check_cpu(tensor, "allreduce")
    average = _averages(average, op, "allreduce")
    if tensor.requires_grad and torch.is_grad_enabled():
        return _AllreduceGrad.apply(tensor, average, name or "allreduce")
    return allreduce_(tensor.detach().clone(), average=average, name=name)


def broadcast_(tensor, root_rank, name=None):
    """In place: every rank's tensor becomes root_rank's. Returns it."""
    _check_cpu(tensor, "broadcast_")
    name = name or "broadcast"
    _flush_buckets()
    if _ps is not None:  # root's values plus zeros: exact in float64
        _check_root(root_rank)
        if tensor.is_floating_point() or tensor.is_complex():
            _dtype_name(tensor)  # integers (BatchNorm's num_batches_tracked) are exact too
        with torch.no_grad():
            mine = tensor.detach().to(torch.float64)
            tensor.copy_(_ps_sum(mine.clone() if rank() == root_rank else torch.zeros_like(mine)))
        return tensor
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
    _flush_buckets()
    t = tensor.detach().contiguous()
    if _ps is not None:  # the first dimensions, then every rank's rows in its own place
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


def _check_root(root_rank):
    if not 0 <= int(root_rank) < size():
        raise ValueError("dtrain.torch: root_rank %d but the job has %d ranks" % (root_rank, size()))


def broadcast_object(obj, root_rank=0, name=None):
    """Any picklable object (tensors included) from root_rank to every rank. An object the root
    cannot pickle is a ValueError on every rank (not the others left waiting)."""
    _check_root(root_rank)
    _flush_buckets()
    data = b""
    if rank() == root_rank:
        buf = io.BytesIO()
        try:
            torch.save(obj, buf)
            data = b"\0" + buf.getvalue()
        except Exception as e:  # noqa: BLE001 -- told to every rank below
            data = b"\1" + ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace")
    if _ps is not None:  # the length, then the bytes (as float64: exact)
        _check_root(root_rank)
        n = torch.tensor([float(len(data))], dtype=torch.float64)
        n = int(broadcast_(n, root_rank).item())
        b = torch.zeros(n, dtype=torch.float64)
        if rank() == root_rank:
            b = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.float64)
        out = bytes(broadcast_(b, root_rank).to(torch.uint8).tolist())
    else:
        out = _core.broadcast_bytes(data, int(root_rank), name or "broadcast_object")
    if out[:1] != b"\0":
        raise ValueError("dtrain.torch.broadcast_object: rank %d could not pickle the object: %s"
                         % (root_rank, out[1:].decode("utf-8", "replace")))
    try:
        return torch.load(io.BytesIO(out[1:]), weights_only=False)
    except TypeError:  # a torch without weights_only (it loaded everything then)
        return torch.load(io.BytesIO(out[1:]))


def broadcast_parameters(params, root_rank):
    """root_rank's parameters (a state_dict, named_parameters(), or a list of tensors) into
    every rank's, in place.

    In ps mode the parameters the DistributedOptimizer trains are the servers' (the chief's when
    it joined them): they are not sent again, and the chief's must still be those (a checkpoint
    loaded into the model after wrapping would be lost: that is a ValueError; load it before).
    The other tensors (buffers such as BatchNorm's running statistics) are broadcast."""
    _check_root(root_rank)
    if isinstance(params, dict):
        items = sorted(params.items(), key=lambda kv: kv[0])
    else:
        items = [p if isinstance(p, tuple) else ("tensor %d" % i, p) for i, p in enumerate(params)]
        items = sorted(items, key=lambda kv: kv[0])
    trained = {}
    if _ps is not None:
        if _ps_optimizer is None:
            return  # the chief's parameters become everyone's when the optimizers join
        trained = _ps_optimizer._dt_server_copies()
    for name, p in items:
        if not isinstance(p, torch.Tensor):
            raise TypeError("dtrain.torch.broadcast_parameters: %s is not a tensor" % name)
        t = p.data if p.requires_grad else p
        if t.data_ptr() in trained:
            if rank() == root_rank and not torch.equal(t, trained[t.data_ptr()]):
                raise ValueError("dtrain.torch.broadcast_parameters (ps mode): %s changed since "
                                 "the DistributedOptimizer gave it to the servers; load a "
                                 "checkpoint into the model before dtrain.torch."
                                 "DistributedOptimizer (the chief's parameters and optimizer "
                                 "state when it wraps become the servers')" % name)
            continue
        broadcast_(t, root_rank, name="parameter " + name)


def broadcast_optimizer_state(optimizer, root_rank):
    """root_rank's optimizer state and hyperparameters into every rank's optimizer (ps mode:
    nothing to do, the servers hold the optimizer state, the chief's)."""
    if _ps is not None:
        return
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
        self._dt_synced = False  # synchronize() was called since the last step()
        self._dt_hooks = []
        _bucketed.append(weakref.ref(self))
        for p in ps:
            _grad_owner[id(p)] = weakref.ref(self)
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise TypeError("dtrain.torch.DistributedOptimizer: parameter %s is %s on %s; "
                                "this version averages float32 CPU gradients"
                                % (names[id(p)], p.dtype, p.device))
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(self._dt_make_hook(p))
            self._dt_hooks.append(acc)

    def _dt_make_hook(self, p):
        def hook(*_):
            if _grad_owner.get(id(p), lambda: None)() is not self:
                return  # wrapped again since: the newest wrapper averages it
            c = self._dt_counts.get(id(p), 0) + 1
            self._dt_counts[id(p)] = c
            if c > self._dt_passes:  # its bucket has left: this gradient would be lost
                raise ValueError(_too_many_passes(self._dt_names[id(p)], c, self._dt_passes))
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
        for p, g in zip(params, grads):
            if g.is_sparse:
                raise TypeError(_sparse_refused(self._dt_names[id(p)]))
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

    def _dt_flush(self):
        """Before a collective of the main thread: the buckets this rank holds back because a
        parameter got no gradient this step (the others, which used it, have sent theirs) leave
        now, so every rank queues the same collectives in the same order. Only once backward is
        over on this rank (every parameter that got a gradient got all its passes)."""
        counts = self._dt_counts
        if not counts or any(c != self._dt_passes for c in counts.values()):
            return
        if self._dt_next == 0:
            self._dt_check_layout()
        while self._dt_next < len(self._dt_buckets):
            self._dt_launch(self._dt_next)
            self._dt_next += 1

    def synchronize(self):
        """Waits for every bucket's average and puts it into the parameters' .grad. Every
        rank's step averages, also one with no backward since the last (zeros, as Horovod)."""
        if self._dt_synced and not self._dt_counts:
            return  # averaged already, no backward since
        self._dt_reduce()
        self._dt_synced = True

    def _dt_reduce(self):
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

    @contextlib.contextmanager
    def skip_synchronize(self):
        """Horovod's: step() inside applies .grad as it is (after your own synchronize())."""
        self._dt_skip = True
        try:
            yield
        finally:
            self._dt_skip = False

    def step(self, closure=None):
        if not getattr(self, "_dt_skip", False) and not self._dt_synced:
            self._dt_reduce()
        self._dt_synced = False
        return super(self.__class__, self).step(closure)


# The state tensors (shaped like the parameter) of the optimizers the sharded step runs, which
# update every element on its own: sharding them changes no value.
_SHARDED_STATE = {torch.optim.SGD: ["momentum_buffer"],
                  torch.optim.Adam: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  torch.optim.AdamW: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  torch.optim.RMSprop: ["square_avg", "momentum_buffer", "grad_avg"]}


_HEADER = 64  # bytes before each rank's slot in the sharded step's window: its fence tags
_PHASES = ("gradients", "averaged gradients", "parameters")




def _flush_buckets():
    """See _DistributedOptimizer._dt_flush (the bucketed optimizers, in the order made)."""
    for ref in list(_bucketed):
        opt = ref()
        if opt is None:
            _bucketed.remove(ref)
        else:
            opt._dt_flush()


def _sparse_refused(name):
    return ("dtrain.torch.DistributedOptimizer: parameter %s has a sparse gradient "
            "(nn.Embedding(sparse=True)?); dtrain.torch averages dense gradients: make it dense "
            "(sparse=False)" % name)


def _too_many_passes(name, count, passes):
    return ("dtrain.torch.DistributedOptimizer: parameter %s got its gradient %d times before "
            "step(), more than backward_passes_per_step=%d; raise backward_passes_per_step to "
            "accumulate gradients locally" % (name, count, passes))


class _ShardedDistributedOptimizer(torch.optim.Optimizer):
    """The one-machine path (SharedMemoryAllreduce's, for PyTorch): ranks that share a machine
    average through shared memory and shard the optimizer's work, as ZeRO's first stage.

    At the first step the parameters move into one flat buffer per rank (each parameter a view
    of it) and their gradients into this rank's slot of a shared window, where backward then
    accumulates them. step(): after a fence each rank sums every slot over its own contiguous
    piece of the parameters (rank order, then times 1/size, as the MPI path averages), runs the
    wrapped optimizer's own step() on that piece only (one flat view per parameter group, the
    group's hyperparameters read at every step), and publishes the updated piece; after a second
    fence it copies the other pieces of the parameters and of the averaged gradient (.grad).
    synchronize() (to clip the average before step()) needs the whole average before the update:
    a rank in it says so at the first fence, and then every rank makes a middle fence, so ranks
    may call it or not. Each fence checks that every rank is at the same one (a tag per rank in
    the window's header), so ranks that call step() different numbers of times, or step two
    optimizers in different orders, get a ValueError instead of mixed-up numbers. The optimizer
    state lives in the shared window, one region per state tensor, each rank updating its piece:
    `optimizer.state` and state_dict() hold every parameter's whole state, read without any
    collective. Each rank does 1/size of the optimizer's work; after step() the parameters,
    `.grad` (the average) and the state are what the unsharded path gives.

    Across machines (hierarchical, as HierarchicalAllreduce): the pieces are cut among the ranks
    of each machine, and between the local sum and the optimizer the machines' sums of each piece
    are added up by an allreduce among the ranks holding that piece (one per machine); every
    machine then runs the same update on the same numbers."""

    def __init__(self, params, named_parameters, backward_passes_per_step, state_keys,
                 hierarchical):
        super(self.__class__, self).__init__(params)  # the state follows (DistributedOptimizer)
        self._dt_hierarchical = hierarchical
        self._dt_params = [p for g in self.param_groups for p in g["params"]]
        if named_parameters is not None:
            names = {id(p): n for n, p in named_parameters}
            missing = [p for p in self._dt_params if id(p) not in names]
            if missing:
                raise ValueError("dtrain.torch.DistributedOptimizer: named_parameters lacks %d of "
                                 "the optimizer's parameters" % len(missing))
        else:
            names = {id(p): "param.%d" % i for i, p in enumerate(self._dt_params)}
        if backward_passes_per_step < 1:
            raise ValueError("backward_passes_per_step must be at least 1")
        self._dt_names = names
        self._dt_keys = state_keys
        self._dt_window = None  # set up at the first step (a collective every rank makes)
        self._dt_closed = False  # dtrain.torch.shutdown() came
        self._dt_skip = False  # inside skip_synchronize()
        self._dt_synced = False
        self._dt_step = 0
        self._dt_fences = 0
        self._dt_passes = backward_passes_per_step
        self._dt_counts = {}  # backward passes per parameter since the last synchronize()
        self._dt_hooks = []
        me = weakref.ref(self)  # the hooks must not keep the optimizer alive
        for p in self._dt_params:
            _grad_owner[id(p)] = me
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(_ShardedDistributedOptimizer._dt_make_hook(me, id(p)))
            self._dt_hooks.append(acc)

    @staticmethod
    def _dt_make_hook(ref, key):
        def hook(*_):
            opt = ref()
            if opt is None or _grad_owner.get(key) is not ref:
                return  # gone, or the parameter was wrapped again since
            c = opt._dt_counts.get(key, 0) + 1
            opt._dt_counts[key] = c
            if c > opt._dt_passes:
                raise ValueError(_too_many_passes(opt._dt_names[key], c, opt._dt_passes))
        return hook

    # -- set-up ---------------------------------------------------------------------------------
    def _dt_setup(self):
        layout = {self._dt_names[id(p)]: list(p.shape) for p in self._dt_params}
        desc = {"operation": "DistributedOptimizer", "parameters": len(layout)}
        desc.update({"shape of " + n: s for n, s in layout.items()})
        _check_agreement(desc, "DistributedOptimizer's parameters")
        world, me = _core.local_size(), _core.local_rank()  # pieces among this machine's ranks
        self._dt_offset = {}
        n = 0
        for p in self._dt_params:
            self._dt_offset[id(p)] = n
            n += p.numel()
        self._dt_n = n
        # Rank k's piece: [bounds[k], bounds[k + 1]), cut at 16 floats (64 bytes).
        self._dt_bounds = [min(n, (k * n // world) // 16 * 16) for k in range(world)] + [n]
        regions = 2 + len(self._dt_keys)  # the averaged gradient, the parameters, the state
        win = _core.local_shared(_HEADER + 4 * n + (4 * n * regions if me == 0 else 0),
                                "DistributedOptimizer's shared window")
        self._dt_window = win
        _sharded_windows.append((weakref.ref(self), [weakref.ref(p) for p in self._dt_params]))
        self._dt_headers = [(ctypes.c_int64 * 2).from_address(win.slot(k)) for k in range(world)]
        self._dt_headers[me][0] = self._dt_headers[me][1] = -2
        self._dt_slots = [_float_view(win.slot(k) + _HEADER, n) for k in range(world)]
        common = _float_view(win.slot(0) + _HEADER + 4 * n, n * regions)
        self._dt_avg = common[0:n]
        self._dt_published = common[n:2 * n]
        self._dt_region = {k: common[(2 + j) * n:(3 + j) * n] for j, k in enumerate(self._dt_keys)}
        self._dt_flat = torch.empty(n)
        self._dt_attach(force=True)
        lo, hi = self._dt_bounds[me], self._dt_bounds[me + 1]
        self._dt_lo, self._dt_hi = lo, hi
        # One flat view of this rank's piece per parameter group (empty where the group lies
        # elsewhere: every rank steps every group, so each knows every group's state keys).
        self._dt_shard_groups = []
        self._dt_shard_ranges = []
        for g in self.param_groups:
            g0 = self._dt_offset[id(g["params"][0])] if g["params"] else 0
            g1 = g0 + sum(p.numel() for p in g["params"])
            a, b = max(lo, g0), min(hi, g1)
            b = max(a, b)
            sp = torch.nn.Parameter(self._dt_flat[a:b])
            self._dt_shard_ranges.append((a, b))
            self._dt_shard_groups.append(dict(g, params=[sp]))
        self._dt_shard_state = collections.defaultdict(dict)
        self._dt_views = {}  # (group, state key): the view of this rank's piece in the region
        self._dt_built = False  # self.state holds the whole state
        self._dt_seen = None  # what self.state held after the last step (to see it replaced)
        if any(self.state.values()):
            self._dt_adopt_full_state()  # load_state_dict before the first step
        else:
            self.state.clear()

    def _dt_attach(self, force=False):
        """Makes every parameter a view of the flat buffer and its .grad a view of this rank's
        slot (again, where something replaced either since the last step)."""
        mine = self._dt_slots[_core.local_rank()]
        flat_at, slot_at = self._dt_flat.data_ptr(), mine.data_ptr()
        with torch.no_grad():
            for p in self._dt_params:
                off, k = self._dt_offset[id(p)], p.numel()
                if force or p.data_ptr() != flat_at + 4 * off:
                    self._dt_flat[off:off + k].copy_(p.detach().reshape(-1))
                    p.data = self._dt_flat[off:off + k].view_as(p)
                g = p.grad
                if g is not None and g.is_sparse:
                    raise TypeError(_sparse_refused(self._dt_names[id(p)]))
                if g is None or g.data_ptr() != slot_at + 4 * off:
                    if g is None:
                        mine[off:off + k].zero_()  # unused this step: a zero gradient, as Horovod
                    else:
                        mine[off:off + k].copy_(g.detach().reshape(-1))
                    p.grad = mine[off:off + k].view_as(p)

    def _dt_detach(self):
        """At dtrain.torch.shutdown(): .grad and the state become private copies (the window is
        freed); the optimizer can still be saved and read, but not stepped."""
        with torch.no_grad():
            for p in self._dt_params:
                if p.grad is not None:
                    p.grad = p.grad.clone()
            for st in self.state.values():
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        st[k] = v.clone()
        self._dt_window = None
        self._dt_closed = True

    # -- state ----------------------------------------------------------------------------------
    def _dt_adopt_shard_state(self):
        """The optimizer creates its state on the first step (or replaces a tensor): it moves
        into the shared regions. Then `self.state` is rebuilt: every parameter's whole state as
        views of those regions."""
        changed = False
        for gi, (g, (a, b)) in enumerate(zip(self._dt_shard_groups, self._dt_shard_ranges)):
            sp = g["params"][0]
            st = self._dt_shard_state.get(sp, {})
            for key, v in list(st.items()):
                if not isinstance(v, torch.Tensor) or key == "step":
                    continue
                view = self._dt_views.get((gi, key))
                if v is view:
                    continue
                if key not in self._dt_region or v.shape != sp.shape:
                    raise RuntimeError("dtrain.torch.DistributedOptimizer: %s keeps state '%s' "
                                       "that the sharded step does not know; set "
                                       "DTRAIN_ALLREDUCE_SHM=0" % (type(self).__name__, key))
                view = self._dt_views[(gi, key)] = self._dt_region[key][a:b]
                with torch.no_grad():
                    view.copy_(v)
                st[key] = view
                changed = True
        if changed or not self._dt_built or self._dt_has_numbers():
            self._dt_build_full_state()
        self._dt_seen = self._dt_state_now()

    def _dt_has_numbers(self):
        """Some state is a number (RMSprop's step): the whole state's copies need refreshing."""
        return any(isinstance(v, (int, float))
                   for st in self._dt_shard_state.values() for v in st.values())

    def _dt_state_now(self):
        """What `self.state` holds, by identity: the dict, each parameter's dict, each value."""
        return (self.state, len(self.state),
                [(p, st, len(st), list(st.items())) for p, st in self.state.items()])

    def _dt_state_replaced(self):
        """The user replaced some of `self.state` since the last step (cleared it, assigned a
        new dict, put a new tensor in), rather than changing its tensors in place."""
        state, count, dicts = self._dt_seen
        if self.state is not state or len(self.state) != count:
            return True
        for p, st, n, items in dicts:
            if self.state.get(p) is not st or len(st) != n:
                return True
            for k, v in items:
                now = st.get(k)
                if now is not v and not (isinstance(v, (int, float)) and
                                         isinstance(now, (int, float)) and now == v):
                    return True
        return False

    def _dt_build_full_state(self):
        full = {}
        for g, sg in zip(self.param_groups, self._dt_shard_groups):
            st = self._dt_shard_state.get(sg["params"][0])
            if not st:
                continue
            for p in g["params"]:
                off, k = self._dt_offset[id(p)], p.numel()
                ps = {}
                for key, v in st.items():
                    if key in self._dt_region and isinstance(v, torch.Tensor) and key != "step":
                        ps[key] = self._dt_region[key][off:off + k].view_as(p)
                    else:
                        ps[key] = v  # the step count: the piece's own (the same tensor), or a number
                full[p] = ps
        self.state.clear()
        self.state.update(full)
        self._dt_built = True

    def _dt_check_full_state(self):
        """The sharded step keeps one state per parameter group's piece: every parameter of a
        group has state or none has, with the same keys and the same step count."""
        for gi, g in enumerate(self.param_groups):
            have = [p for p in g["params"] if self.state.get(p)]
            if not have:
                continue
            lack = [p for p in g["params"] if not self.state.get(p)]
            first = self.state[have[0]]
            if lack:
                raise ValueError(
                    "dtrain.torch.DistributedOptimizer: in parameter group %d, parameter %s has "
                    "optimizer state and %s has none (a state saved where %s never had a "
                    "gradient?); the sharded step keeps state for every parameter of a group: "
                    "give it one, or set DTRAIN_ALLREDUCE_SHM=0"
                    % (gi, self._dt_names[id(have[0])], self._dt_names[id(lack[0])],
                       self._dt_names[id(lack[0])]))
            for p in have[1:]:
                st = self.state[p]
                if sorted(st) != sorted(first):
                    raise ValueError(
                        "dtrain.torch.DistributedOptimizer: in parameter group %d, parameter %s "
                        "has optimizer state %s and %s has %s; the sharded step needs the same "
                        "keys for every parameter of a group (or DTRAIN_ALLREDUCE_SHM=0)"
                        % (gi, self._dt_names[id(have[0])], sorted(first), self._dt_names[id(p)],
                           sorted(st)))
                a, b = first.get("step"), st.get("step")
                a = a.item() if isinstance(a, torch.Tensor) else a
                b = b.item() if isinstance(b, torch.Tensor) else b
                if a != b:
                    raise ValueError(
                        "dtrain.torch.DistributedOptimizer: in parameter group %d, parameter %s "
                        "is at step %s and %s at step %s; the sharded step keeps one step count "
                        "per parameter group (or set DTRAIN_ALLREDUCE_SHM=0)"
                        % (gi, self._dt_names[id(have[0])], a, self._dt_names[id(p)], b))

    def _dt_adopt_full_state(self, own_piece=False):
        """A whole state (loaded, broadcast, or replaced by the user) into the shared regions and
        the pieces' state. A loaded state: this rank writes every region (ranks load the same
        state, broadcast_optimizer_state does, or rank 0 loads it before broadcasting it, and
        none is inside a step meanwhile). A state the user replaced (own_piece): this rank writes
        its own piece only, as its step does; each rank replaces its own, and one computed from
        the shared state (state[p][k] * 0.5) must not be read back after another rank wrote."""
        self._dt_check_full_state()
        self._dt_shard_state = collections.defaultdict(dict)
        for gi, (g, sg, (a, b)) in enumerate(
                zip(self.param_groups, self._dt_shard_groups, self._dt_shard_ranges)):
            have = [p for p in g["params"] if self.state.get(p)]
            if not have:
                continue
            st = {}
            with torch.no_grad():
                for p in have:
                    off, k = self._dt_offset[id(p)], p.numel()
                    lo, hi = (max(off, a), min(off + k, b)) if own_piece else (off, off + k)
                    if hi <= lo:
                        continue
                    for key, v in self.state[p].items():
                        if key in self._dt_region and isinstance(v, torch.Tensor) and key != "step":
                            self._dt_region[key][lo:hi].copy_(v.reshape(-1)[lo - off:hi - off])
            for key, v in self.state[have[0]].items():
                if key in self._dt_region and isinstance(v, torch.Tensor) and key != "step":
                    st[key] = self._dt_views[(gi, key)] = self._dt_region[key][a:b]
                elif isinstance(v, torch.Tensor):
                    st[key] = v.clone()
                else:
                    st[key] = v
            self._dt_shard_state[sg["params"][0]] = st
        self._dt_build_full_state()
        self._dt_seen = self._dt_state_now()

    def _dt_refuse_while_synced(self, what):
        if self._dt_synced:
            raise ValueError("dtrain.torch.DistributedOptimizer: %s between synchronize() and "
                             "step(): the other ranks may be updating their pieces of the "
                             "optimizer state; call it after step()" % what)

    def state_dict(self):
        """Every parameter's whole state (copies: nothing in it refers to the shared window)."""
        self._dt_refuse_while_synced("state_dict()")
        state = self.state
        self.state = collections.defaultdict(dict, {
            p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
            for p, st in state.items()})
        try:
            return super(self.__class__, self).state_dict()
        finally:
            self.state = state

    def load_state_dict(self, state_dict):
        self._dt_refuse_while_synced("load_state_dict()")
        before = dict(self.__dict__)
        super(self.__class__, self).load_state_dict(state_dict)
        try:
            self._dt_check_full_state()
            if self._dt_window is not None and not self._dt_closed:
                # load_state_dict made new group dicts: the pieces follow their hyperparameters.
                self._dt_adopt_full_state()
        except ValueError:
            self.__dict__.update(before)  # the optimizer as it was
            raise

    def add_param_group(self, param_group):
        if getattr(self, "_dt_window", None) is not None or getattr(self, "_dt_params", None):
            raise ValueError("dtrain.torch.DistributedOptimizer: parameter groups cannot be added "
                             "after wrapping (the sharded step has laid out the parameters); add "
                             "them to the optimizer before dtrain.torch.DistributedOptimizer")
        super(self.__class__, self).add_param_group(param_group)

    # -- the step -------------------------------------------------------------------------------
    def _dt_fence(self, phase, syncing=False):
        """A fence of the window, checking that every rank of this machine is at the same one:
        each writes (step, phase) and whether it is in synchronize() into its header first (two
        places, alternating: a rank that has passed this fence cannot overwrite what the others
        still read). Returns whether some rank is in synchronize()."""
        me = _core.local_rank()
        tag = self._dt_step * len(_PHASES) + phase
        at = self._dt_fences % 2
        self._dt_headers[me][at] = 2 * tag + int(syncing)
        self._dt_window.fence("%s of step %d" % (_PHASES[phase], self._dt_step))
        self._dt_fences += 1
        some = False
        for k, h in enumerate(self._dt_headers):
            other = h[at]
            some = some or bool(other & 1)
            if k != me and other >> 1 != tag:
                other >>= 1
                where = ("no fence of this optimizer yet" if other < 0 else "%s of step %d" % (
                    _PHASES[other % len(_PHASES)], other // len(_PHASES)))
                raise ValueError(
                    "dtrain.torch.DistributedOptimizer: local rank %d of this machine is not at "
                    "this optimizer's fence for %s of step %d (its last fence here: %s): every "
                    "rank must call step() the same number of times, and step its optimizers in "
                    "the same order" % (k, _PHASES[phase], self._dt_step, where))
        return some

    def _dt_reduce(self, syncing):
        """The first fence, then this rank's piece of the averaged gradient. Returns whether some
        rank is in synchronize() (then every rank makes the second fence)."""
        if self._dt_closed:
            raise ValueError("dtrain.torch.DistributedOptimizer: dtrain.torch.shutdown() has ended "
                             "the job; this optimizer cannot step any more")
        if self._dt_window is None:
            self._dt_setup()
        else:
            self._dt_attach()
            if self._dt_built and self._dt_state_replaced():
                self._dt_adopt_full_state(own_piece=True)
        some_sync = self._dt_fence(0, syncing)
        lo, hi = self._dt_lo, self._dt_hi
        out = self._dt_avg[lo:hi]
        slots = self._dt_slots
        if len(slots) == 1:
            out.copy_(slots[0][lo:hi])
        elif hi > lo:
            torch.add(slots[0][lo:hi], slots[1][lo:hi], out=out)
            for s in slots[2:]:
                out.add_(s[lo:hi])
        if self._dt_hierarchical:  # the machines' sums of this piece, added up among them
            _core.cross_allreduce(out.data_ptr(), hi - lo, "gradients of step %d" % self._dt_step)
        if hi > lo:
            out.mul_(1.0 / _core.size())
        self._dt_counts = {}
        return some_sync

    def _dt_copy_others(self, dst, src):
        me = _core.local_rank()
        b = self._dt_bounds
        for k in range(len(b) - 1):
            if k != me and b[k + 1] > b[k]:
                dst[b[k]:b[k + 1]].copy_(src[b[k]:b[k + 1]])

    @contextlib.contextmanager
    def skip_synchronize(self):
        """Horovod's: step() inside applies the gradient synchronize() averaged (perhaps
        clipped since); step() after synchronize() does the same without it."""
        self._dt_skip = True
        try:
            yield
        finally:
            self._dt_skip = False

    def synchronize(self):
        """Puts the gradient averaged over all ranks into every parameter's .grad (to clip it,
        say, before step()). Some ranks may call it and others not: step() on those makes the
        same fences."""
        if self._dt_synced:
            return
        self._dt_reduce(True)
        self._dt_fence(1)
        with torch.no_grad():
            self._dt_slots[_core.local_rank()].copy_(self._dt_avg)
        self._dt_synced = True

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._dt_skip and not (self._dt_synced and not self._dt_closed):
            raise ValueError("dtrain.torch.DistributedOptimizer: step() inside skip_synchronize() "
                             "needs synchronize() first (each rank steps its piece of the "
                             "parameters with the averaged gradient)")
        synced = self._dt_synced and not self._dt_closed
        if synced:
            self._dt_attach()  # .grad replaced since synchronize() (clipped into a new tensor)
        elif self._dt_reduce(False):
            self._dt_fence(1)  # another rank is in synchronize()
        lo, hi = self._dt_lo, self._dt_hi
        mine = self._dt_slots[_core.local_rank()]
        grad = mine if synced else self._dt_avg  # after synchronize() .grad, perhaps clipped
        for g, sg, (a, b) in zip(self.param_groups, self._dt_shard_groups, self._dt_shard_ranges):
            for key, v in g.items():
                if key != "params":
                    sg[key] = v
            # PyTorch 1.13's foreach updates add weight decay (and Nesterov momentum) into the
            # gradient in place: they get a copy, so .grad stays the average on every piece.
            sg["params"][0].grad = grad[a:b].clone() if g.get("foreach") else grad[a:b]
        groups, state = self.param_groups, self.state
        self.param_groups, self.state = self._dt_shard_groups, self._dt_shard_state
        try:
            super(self.__class__, self).step()
        finally:
            self.param_groups, self.state = groups, state
        self._dt_adopt_shard_state()
        with torch.no_grad():
            self._dt_published[lo:hi].copy_(self._dt_flat[lo:hi])
            self._dt_fence(2)
            self._dt_copy_others(self._dt_flat, self._dt_published)
            if not synced:
                mine.copy_(self._dt_avg)
        self._dt_synced = False
        self._dt_step += 1
        return loss


def _sharded_state_keys(optimizer):
    """The state keys of the sharded step when this rank can take it (several ranks, an optimizer
    it knows, float32 CPU parameters that all train, DTRAIN_ALLREDUCE_SHM not 0), else None."""
    keys = _SHARDED_STATE.get(type(optimizer))
    if keys is None or _core.size() < 2 or not _core.allreduce_shm():
        return None
    for g in optimizer.param_groups:
        if not g["params"]:
            return None
        for p in g["params"]:
            if (p.numel() == 0 or p.dtype != torch.float32 or p.device.type != "cpu" or
                    not p.requires_grad or p.is_sparse):
                return None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if len({id(p) for p in params}) != len(params) or not params:
        return None
    return keys


def _sharded_plan(optimizer):
    """(state keys, hierarchical) when every rank takes the sharded step, else None: on one
    machine, or across machines that hold the same number of ranks, more than one each
    (DTRAIN_HIERARCHICAL=1: any number; 0: never across machines), as mnist_train chooses its
    allreduce. A collective (every rank's DistributedOptimizer makes it), so every rank takes the
    same path whatever its own optimizer."""
    if _core.size() < 2:
        return None
    keys = _sharded_state_keys(optimizer)
    hierarchical = _core.hierarchical()
    mine = json.dumps({"sharded": keys is not None, "local_size": _core.local_size(),
                       "optimizer": type(optimizer).__name__, "keys": keys,
                       "DTRAIN_HIERARCHICAL": hierarchical})
    every = [json.loads(b) for b in _core.allgather_bytes(mine, "DistributedOptimizer's path")]
    even = len({e["local_size"] for e in every}) == 1
    # What every rank must agree on, decided from what all sent (so all raise, or none): the
    # setting that picks the path, and on the sharded step the optimizer (one window's layout).
    agree = ("DTRAIN_HIERARCHICAL",) + (
        ("optimizer", "keys") if all(e["sharded"] for e in every) else ())
    for r, e in enumerate(every):
        for what in agree:
            if e[what] != every[0][what]:
                raise ValueError("dtrain.torch.DistributedOptimizer: rank %d has %s %s where rank "
                                 "0 has %s; every rank must wrap the same kind of optimizer, with "
                                 "the same environment" % (r, what, e[what], every[0][what]))
    one_machine = _core.local_size() == _core.size()
    if hierarchical and not even:
        raise ValueError("dtrain.torch.DistributedOptimizer: DTRAIN_HIERARCHICAL=1 needs the same "
                         "number of ranks on every machine (this rank's machine has %d of the "
                         "job's %d)" % (_core.local_size(), _core.size()))
    if not all(e["sharded"] for e in every):
        return None
    if one_machine:
        return keys, False
    if hierarchical or (hierarchical is None and even and _core.local_size() > 1):
        return keys, True
    return None


def _server_optimizer(optimizer):
    """The optimizer the ps tasks are to run (dtrain's spec) for a wrapped PyTorch optimizer:
    SGD (with or without momentum), Adam or RMSprop, with PyTorch's update rules; anything the
    servers cannot reproduce is a ValueError naming it."""
    groups = optimizer.param_groups
    name = type(optimizer).__name__
    keys = [k for k in groups[0] if k != "params"]
    for g in groups[1:]:
        for k in keys:
            if g.get(k) != groups[0].get(k):
                raise ValueError("dtrain.torch.DistributedOptimizer (ps mode): the servers run one "
                                 "optimizer for all parameters, but parameter groups differ in %s"
                                 % k)
    h = groups[0]

    def refuse(what):
        raise ValueError("dtrain.torch.DistributedOptimizer (ps mode): the servers run SGD, "
                         "momentum SGD, Adam and RMSprop as PyTorch does, without %s (%s has it)"
                         % (what, name))

    known = (torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop)
    if not isinstance(optimizer, known) or isinstance(optimizer, torch.optim.AdamW):
        raise ValueError("dtrain.torch.DistributedOptimizer (ps mode): the servers run SGD, "
                         "momentum SGD, Adam or RMSprop; %s is not one of them (use allreduce "
                         "mode for it)" % name)
    if h.get("weight_decay", 0):
        refuse("weight_decay")
    if h.get("maximize", False):
        refuse("maximize")
    if isinstance(optimizer, torch.optim.SGD):
        if h.get("nesterov", False):
            refuse("nesterov")
        if h.get("dampening", 0):
            refuse("dampening")
        if h.get("momentum", 0):
            return {"name": "momentum", "learning_rate": h["lr"], "momentum": h["momentum"]}
        return {"name": "sgd", "learning_rate": h["lr"]}
    if isinstance(optimizer, torch.optim.Adam):
        if h.get("amsgrad", False):
            refuse("amsgrad")
        return {"name": "adam", "learning_rate": h["lr"], "beta1": h["betas"][0],
                "beta2": h["betas"][1], "epsilon": h["eps"]}
    if h.get("momentum", 0):  # RMSprop
        refuse("momentum")
    if h.get("centered", False):
        refuse("centered")
    return {"name": "rmsprop", "learning_rate": h["lr"], "rho": h["alpha"], "epsilon": h["eps"]}


# The PyTorch state each server optimizer slot comes from (slot k of every parameter).
_STATE_SLOTS = {"sgd": [], "momentum": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"],
                "rmsprop": ["square_avg"]}


def _float_view(address, count):
    """A float32 tensor over `count` floats at `address` (a buffer the C++ side owns)."""
    if count == 0:
        return torch.zeros(0)
    return torch.frombuffer((ctypes.c_float * count).from_address(address), dtype=torch.float32)


class _PsDistributedOptimizer(torch.optim.Optimizer):
    """ps mode: step() sends the gradient to the servers, which run the optimizer, and takes the
    updated parameters back; the wrapped optimizer's own update never runs on a worker."""

    def __init__(self, params, named_parameters, backward_passes_per_step, spec, state):
        super(self.__class__, self).__init__(params)
        self.state.update(state)
        if backward_passes_per_step < 1:
            raise ValueError("backward_passes_per_step must be at least 1")
        ps = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        names = {id(p): "param.%d" % i for i, p in enumerate(ps)}
        if named_parameters is not None:
            names.update({id(p): n for n, p in named_parameters})
        for p in ps:
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise TypeError("dtrain.torch.DistributedOptimizer: parameter %s is %s on %s; "
                                "this version trains float32 CPU parameters"
                                % (names[id(p)], p.dtype, p.device))
        self._dt_params = ps
        self._dt_spec = spec
        self._dt_hyper = self._dt_hyperparameters()
        count = sum(p.numel() for p in ps)
        tensors = [{"name": names[id(p)], "shape": list(p.shape)} for p in ps]
        info = _core.ps_connect(count, json.dumps(tensors), json.dumps(spec))
        self._dt_flat = _float_view(info["params"], count)
        self._dt_grads = _float_view(info["grads"], count)
        steps = 0
        with torch.no_grad():
            # What the chief holds (seeded, or loaded from the user's checkpoint, optimizer state
            # included) becomes the servers'; the other workers then start from it.
            torch.cat([p.detach().reshape(-1) for p in ps], out=self._dt_flat)
            state = _float_view(info["state"], info["state_size"])
            for k, key in enumerate(_STATE_SLOTS[spec["name"]]):
                off = k * count
                for p in ps:
                    st = self.state.get(p, {})
                    if key in st:
                        state[off:off + p.numel()].copy_(st[key].reshape(-1))
                        steps = int(st.get("step", steps))
                    off += p.numel()
        global _ps_optimizer, _resume
        _resume = dict(_core.ps_start(steps))
        self._dt_take_params()
        _ps_optimizer = self

    def _dt_hyperparameters(self):
        return [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]

    def _dt_take_params(self):
        with torch.no_grad():
            off = 0
            for p in self._dt_params:
                n = p.numel()
                p.copy_(self._dt_flat[off:off + n].view_as(p))
                off += n

    def _dt_server_copies(self):
        """data_ptr of each trained parameter -> the servers' values this worker last took."""
        out, off = {}, 0
        for p in self._dt_params:
            out[p.data_ptr()] = self._dt_flat[off:off + p.numel()].view_as(p)
            off += p.numel()
        return out

    def _dt_not_here(self, what):
        return ValueError(
            "dtrain.torch.DistributedOptimizer (ps mode): %s: the servers run the optimizer when "
            "step() pushes each worker's gradient, and hold its state; %s" % (what, {
                "synchronize()": "there is no averaged gradient to clip before step() (clip a "
                                 "worker's own gradient before step(), or run in allreduce mode)",
                "skip_synchronize()": "there is no averaged gradient to step with (clip a "
                                      "worker's own gradient before step(), or run in allreduce "
                                      "mode)",
                "state_dict()": "a worker's copy would be the state when it joined, not the "
                                "servers' (save the model's state_dict; the optimizer state "
                                "stays with the servers)",
                "load_state_dict()": "load the state into the optimizer before dtrain.torch."
                                     "DistributedOptimizer (the chief's becomes the servers')",
            }[what]))

    def synchronize(self):
        raise self._dt_not_here("synchronize()")

    @contextlib.contextmanager
    def skip_synchronize(self):
        raise self._dt_not_here("skip_synchronize()")
        yield  # noqa: unreachable -- a context manager

    def state_dict(self):
        raise self._dt_not_here("state_dict()")

    def load_state_dict(self, state_dict):
        raise self._dt_not_here("load_state_dict()")

    def _dt_exchange(self):
        if self._dt_hyperparameters() != self._dt_hyper:
            raise ValueError("dtrain.torch.DistributedOptimizer (ps mode): the optimizer's "
                             "hyperparameters changed after it joined the servers, which run it "
                             "as %s; a learning-rate schedule is not available in ps mode"
                             % json.dumps(self._dt_spec))
        with torch.no_grad():
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                       for p in self._dt_params], out=self._dt_grads)
        _core.ps_step()
        self._dt_take_params()

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._dt_exchange()
        return loss


def DistributedOptimizer(optimizer, named_parameters=None, backward_passes_per_step=1):
    """Wraps `optimizer` so that step() applies the gradient averaged over all ranks (Horovod's
    hvd.DistributedOptimizer). zero_grad() and step() behave as the wrapped optimizer's.

    In ps mode the servers run the optimizer (its hyperparameters read from `optimizer`: SGD,
    momentum SGD, Adam or RMSprop), and step() exchanges the gradient for the updated
    parameters; the optimizer state lives on the servers."""
    if not is_initialized():
        raise ValueError("dtrain.torch.DistributedOptimizer: call dtrain.torch.init() first")
    if _ps is not None:
        spec = _server_optimizer(optimizer)
        cls = type(optimizer.__class__.__name__, (optimizer.__class__,),
                   dict(_PsDistributedOptimizer.__dict__))
        return cls(optimizer.param_groups, named_parameters, backward_passes_per_step, spec,
                   optimizer.state)
    plan = _sharded_plan(optimizer)
    if plan is not None:
        cls = type(optimizer.__class__.__name__, (optimizer.__class__,),
                   dict(_ShardedDistributedOptimizer.__dict__))
        wrapped = cls(optimizer.param_groups, named_parameters, backward_passes_per_step, *plan)
    else:
        cls = type(optimizer.__class__.__name__, (optimizer.__class__,),
                   dict(_DistributedOptimizer.__dict__))
        wrapped = cls(optimizer.param_groups, named_parameters, backward_passes_per_step,
                      _core.fusion_threshold())
    # The state the optimizer already has (loaded from a checkpoint, or steps taken before
    # wrapping) goes on with it (Horovod's wrapper starts from an empty state).
    wrapped.state.update(optimizer.state)
    return wrapped
