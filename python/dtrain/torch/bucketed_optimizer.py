"""The bucketed DistributedOptimizer (allreduce mode, when the sharded step is not taken):
gradients are averaged as backward produces them, in buckets of the fusion threshold that leave
on dtrain's background allreduce thread as soon as all their gradients are there."""
import contextlib
import weakref

import torch

from dtrain import _core

from . import _state
from ._optim_common import _sparse_refused, _too_many_passes
from .mpi_ops import _check_agreement


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
        _state.bucketed.append(weakref.ref(self))
        for p in ps:
            _state.grad_owner[id(p)] = weakref.ref(self)
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise TypeError("dtrain.torch.DistributedOptimizer: parameter %s is %s on %s; "
                                "this version averages float32 CPU gradients"
                                % (names[id(p)], p.dtype, p.device))
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(self._dt_make_hook(p))
            self._dt_hooks.append(acc)

    def _dt_make_hook(self, p):
        def hook(*_):
            if _state.grad_owner.get(id(p), lambda: None)() is not self:
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
