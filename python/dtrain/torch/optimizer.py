"""DistributedOptimizer, Horovod's factory: it wraps the user's optimizer in a subclass of its
class, with the methods of the ps-mode optimizer (ps_optimizer.py), the sharded step
(sharded_optimizer.py, when sharded_plan.py says every rank takes it) or the bucketed optimizer
(bucketed_optimizer.py)."""
from dtrain import _core

from . import _state
from .basics import is_initialized
from .bucketed_optimizer import _DistributedOptimizer
from .ps_optimizer import _PsDistributedOptimizer, _server_optimizer
from .sharded_optimizer import _ShardedDistributedOptimizer
from .sharded_plan import _sharded_plan


def _wrapper_class(optimizer, impl):
    """The wrapped optimizer's class with `impl`'s methods: isinstance() and the class name stay
    the optimizer's; the module is the package's, as when the wrappers lived in __init__.py."""
    body = dict(impl.__dict__)
    body["__module__"] = "dtrain.torch"
    return type(optimizer.__class__.__name__, (optimizer.__class__,), body)


def DistributedOptimizer(optimizer, named_parameters=None, backward_passes_per_step=1):
    """Wraps `optimizer` so that step() applies the gradient averaged over all ranks (Horovod's
    hvd.DistributedOptimizer). zero_grad() and step() behave as the wrapped optimizer's.

    In ps mode the servers run the optimizer (its hyperparameters read from `optimizer`: SGD,
    momentum SGD, Adam or RMSprop), and step() exchanges the gradient for the updated
    parameters; the optimizer state lives on the servers."""
    if not is_initialized():
        raise ValueError("dtrain.torch.DistributedOptimizer: call dtrain.torch.init() first")
    if _state.ps is not None:
        spec = _server_optimizer(optimizer)
        cls = _wrapper_class(optimizer, _PsDistributedOptimizer)
        return cls(optimizer.param_groups, named_parameters, backward_passes_per_step, spec,
                   optimizer.state)
    plan = _sharded_plan(optimizer)
    if plan is not None:
        cls = _wrapper_class(optimizer, _ShardedDistributedOptimizer)
        wrapped = cls(optimizer.param_groups, named_parameters, backward_passes_per_step, *plan)
    else:
        cls = _wrapper_class(optimizer, _DistributedOptimizer)
        wrapped = cls(optimizer.param_groups, named_parameters, backward_passes_per_step,
                      _core.fusion_threshold())
    # The state the optimizer already has (loaded from a checkpoint, or steps taken before
    # wrapping) goes on with it (Horovod's wrapper starts from an empty state).
    wrapped.state.update(optimizer.state)
    return wrapped
