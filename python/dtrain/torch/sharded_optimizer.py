"""The sharded step (allreduce mode, when every rank takes it: all on one machine, or as many on
every machine): the DistributedOptimizer that averages the gradients through shared memory and
steps only this rank's piece of the parameters with the wrapped optimizer, as ZeRO's first
stage. Its optimizer-state methods are in sharded_state.py; whether it is taken, in
sharded_plan.py."""
import collections
import contextlib
import ctypes
import weakref

import torch

from dtrain import _core

from . import _state
from ._optim_common import _float_view, _sparse_refused, _too_many_passes
from .mpi_ops import _check_agreement
from .sharded_state import _ShardedState

_HEADER = 64  # bytes before each rank's slot in the sharded step's window: its fence tags
_PHASES = ("gradients", "averaged gradients", "parameters")


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
            _state.grad_owner[id(p)] = me
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(_ShardedDistributedOptimizer._dt_make_hook(me, id(p)))
            self._dt_hooks.append(acc)

    @staticmethod
    def _dt_make_hook(ref, key):
        def hook(*_):
            opt = ref()
            if opt is None or _state.grad_owner.get(key) is not ref:
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
        _state.sharded_windows.append((weakref.ref(self), [weakref.ref(p) for p in self._dt_params]))
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

    # -- state (sharded_state.py; in this class's own namespace, which DistributedOptimizer
    # copies) ----------------------------------------------------------------------------------
    _dt_adopt_shard_state = _ShardedState._dt_adopt_shard_state
    _dt_has_numbers = _ShardedState._dt_has_numbers
    _dt_state_now = _ShardedState._dt_state_now
    _dt_state_replaced = _ShardedState._dt_state_replaced
    _dt_build_full_state = _ShardedState._dt_build_full_state
    _dt_check_full_state = _ShardedState._dt_check_full_state
    _dt_adopt_full_state = _ShardedState._dt_adopt_full_state
    _dt_refuse_while_synced = _ShardedState._dt_refuse_while_synced
    state_dict = _ShardedState.state_dict
    load_state_dict = _ShardedState.load_state_dict

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
