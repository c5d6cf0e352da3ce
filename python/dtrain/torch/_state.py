"""The module state of dtrain.torch that functions rebind: one place for it, so that every
module reads and writes the same bindings. Always go through the module (`_state.ps = info`,
`if _state.ps is not None`), never `from ._state import ps` (that copies the binding: a later
rebinding would not be seen)."""

ps = None  # parameter-server mode: what _core.ps_init said about this task
ps_failed = False  # an uncaught exception ended the script (the servers are not told "done")
ps_optimizer = None  # ps mode: the worker's DistributedOptimizer (it owns the model's copy)
# allreduce mode: per shared window of the sharded step, (its optimizer, its parameters) as weak
# references; shutdown() turns what still points into a window into private copies.
sharded_windows = []
# id(parameter) -> its newest DistributedOptimizer (a weak reference): a parameter wrapped again
# counts its backward passes for the new wrapper only.
grad_owner = {}
bucketed = []  # allreduce mode: weak references to the bucketed DistributedOptimizers, in order
ended = False  # shutdown() came: MPI (or the ps connection) cannot start again in this process
resume = None  # ps mode: where this worker continues (set when its DistributedOptimizer joins)
