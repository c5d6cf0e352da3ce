"""The optimizer state of the sharded step (_ShardedDistributedOptimizer, sharded_optimizer.py):
it lives in the shared window, one region per state tensor, each rank updating its piece, while
`optimizer.state` and state_dict() hold every parameter's whole state as views of those regions.
These methods move the state between the two forms, check a loaded or replaced one, and save and
load it.

_ShardedState is no base class: _ShardedDistributedOptimizer takes its methods into its own
namespace, which is what DistributedOptimizer copies into the class it makes."""
import collections

import torch


class _ShardedState:
    """The state methods of _ShardedDistributedOptimizer (see the module's docstring)."""

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
