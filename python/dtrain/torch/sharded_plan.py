"""Whether DistributedOptimizer takes the sharded step (sharded_optimizer.py) and how: which
optimizers it can shard (the state tensors it knows), whether this rank's optimizer and
parameters allow it, and the collective by which every rank agrees on the same path (one
machine, hierarchical across machines, or the bucketed optimizer)."""
import json

import torch

from dtrain import _core

# The state tensors (shaped like the parameter) of the optimizers the sharded step runs, which
# update every element on its own: sharding them changes no value.
_SHARDED_STATE = {torch.optim.SGD: ["momentum_buffer"],
                  torch.optim.Adam: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  torch.optim.AdamW: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  torch.optim.RMSprop: ["square_avg", "momentum_buffer", "grad_avg"]}


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
