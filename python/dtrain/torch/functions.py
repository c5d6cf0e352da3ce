"""Helpers over the collectives, as Horovod's functions.py: broadcast_object and
allgather_object (any picklable object), broadcast_parameters (a model's parameters and buffers)
and broadcast_optimizer_state (an optimizer's state and hyperparameters), each also in ps mode."""
import io

import torch

from dtrain import _core

from . import _state
from .basics import rank
from .mpi_ops import _check_agreement, _check_root, _flush_buckets, allgather, broadcast_


def _pickled(obj):
    """obj pickled behind a 0 byte, or what stopped it behind a 1 byte (told to every rank)."""
    buf = io.BytesIO()
    try:
        torch.save(obj, buf)
        return b"\0" + buf.getvalue()
    except Exception as e:  # noqa: BLE001 -- told to every rank by the caller
        return b"\1" + ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace")


def _unpickled(data, who, what):
    if data[:1] != b"\0":
        raise ValueError("dtrain.torch.%s: rank %d could not pickle the object: %s"
                         % (what, who, data[1:].decode("utf-8", "replace")))
    try:
        return torch.load(io.BytesIO(data[1:]), weights_only=False)
    except TypeError:  # a torch without weights_only (it loaded everything then)
        return torch.load(io.BytesIO(data[1:]))


def broadcast_object(obj, root_rank=0, name=None):
    """Any picklable object (tensors included) from root_rank to every rank. An object the root
    cannot pickle is a ValueError on every rank (not the others left waiting)."""
    _check_root(root_rank)
    _flush_buckets()
    data = _pickled(obj) if rank() == root_rank else b""
    if _state.ps is not None:  # the length, then the bytes (as float64: exact)
        _check_root(root_rank)
        n = torch.tensor([float(len(data))], dtype=torch.float64)
        n = int(broadcast_(n, root_rank).item())
        b = torch.zeros(n, dtype=torch.float64)
        if rank() == root_rank:
            b = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.float64)
        out = bytes(broadcast_(b, root_rank).to(torch.uint8).tolist())
    else:
        name = name or "broadcast_object"
        _check_agreement({"operation": "broadcast_object", "tensor": name,
                          "root_rank": int(root_rank)}, name)
        out = _core.broadcast_bytes(data, int(root_rank), name)
    return _unpickled(out, int(root_rank), "broadcast_object")


def allgather_object(obj, name=None):
    """Every rank's picklable object, in a list in rank order (Horovod's allgather_object). An
    object some rank cannot pickle is a ValueError on every rank, naming that rank."""
    name = name or "allgather_object"
    _flush_buckets()
    data = _pickled(obj)
    if _state.ps is not None:  # the lengths, then every rank's bytes (as float64: exact)
        sizes = allgather(torch.tensor([float(len(data))], dtype=torch.float64), name=name)
        mine = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.float64)
        flat = allgather(mine, name=name).to(torch.uint8)
        parts, start = [], 0
        for n in sizes.long().tolist():
            parts.append(bytes(flat[start:start + n].tolist()))
            start += n
    else:
        _check_agreement({"operation": "allgather_object", "tensor": name}, name)
        parts = _core.allgather_bytes(data, name)
    return [_unpickled(bytes(p), who, "allgather_object") for who, p in enumerate(parts)]


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
    if _state.ps is not None:
        if _state.ps_optimizer is None:
            return  # the chief's parameters become everyone's when the optimizers join
        trained = _state.ps_optimizer._dt_server_copies()
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
    if _state.ps is not None:
        return
    state = broadcast_object(optimizer.state_dict(), root_rank, name="optimizer state")
    optimizer.load_state_dict(state)
