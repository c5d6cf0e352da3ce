"""Parameter-server mode's DistributedOptimizer: the servers run the optimizer, so step() sends
the gradient to them and takes the updated parameters back. Also what the servers are told to
run for a wrapped PyTorch optimizer (dtrain's spec), and where its state goes."""
import contextlib
import json

import torch

from dtrain import _core

from . import _state
from ._optim_common import _float_view


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
        _state.resume = dict(_core.ps_start(steps))
        self._dt_take_params()
        _state.ps_optimizer = self

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
