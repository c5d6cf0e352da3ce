"""Joining and leaving the job, and what a rank knows about it: init, shutdown, is_initialized,
mode, resume_point, rank, size, local_rank, local_size. In allreduce mode they are dtrain's MPI
world's; in parameter-server mode (TF_CONFIG with ps tasks) init() serves on a ps task and joins
the servers on a worker. The state they set lives in _state."""
import atexit
import json
import os
import sys

import torch

from dtrain import _core

from . import _state


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
    if _core.is_initialized():
        return
    if _state.ended:
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
    _state.ps = info
    hook = sys.excepthook

    def excepthook(*args):
        _state.ps_failed = True
        hook(*args)
    sys.excepthook = excepthook
    atexit.register(_ps_exit)


def _ps_exit():
    if _state.ps is not None:
        _core.ps_shutdown(not _state.ps_failed)


def shutdown():
    """Leaves the job. In ps mode a worker tells the servers it is done; they end when every
    worker is."""
    if _core.is_initialized() or _state.ps is not None:
        _state.ended = True
    if _state.ps is not None:
        _state.ps = _state.ps_optimizer = None
        _core.ps_shutdown(True)
        return
    for opt_ref, param_refs in _state.sharded_windows:  # the windows end now: leave them
        opt = opt_ref()
        if opt is not None:
            opt._dt_detach()  # .grad and the optimizer state
            continue
        with torch.no_grad():  # the optimizer is gone, its parameters' .grad still there
            for ref in param_refs:
                p = ref()
                if p is not None and p.grad is not None:
                    p.grad = p.grad.clone()
    _state.sharded_windows.clear()
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
    if _state.ps is not None and _state.resume is None:
        raise ValueError("dtrain.torch.resume_point: in ps mode the worker learns it when its "
                         "DistributedOptimizer joins the servers: create that first")
    return dict(_state.resume or {"epoch": 0, "step": 0, "step_in_epoch": 0})


def mode():
    """'allreduce' or 'ps' (after init)."""
    if not is_initialized():
        raise ValueError("dtrain.torch is not initialized: call dtrain.torch.init() first")
    return "ps" if _state.ps is not None else "allreduce"


def rank():
    return _state.ps["rank"] if _state.ps is not None else _core.rank()


def size():
    return _state.ps["size"] if _state.ps is not None else _core.size()


def local_rank():
    return _state.ps["local_rank"] if _state.ps is not None else _core.local_rank()


def local_size():
    return _state.ps["local_size"] if _state.ps is not None else _core.local_size()

