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
# The package only re-exports: each module holds one part (and opens with what and why).
#   _state               the module state that functions rebind (read it as _state.NAME)
#   basics               init, shutdown, is_initialized, mode, resume_point, rank, size, ...
#   mpi_ops              the collectives on tensors, Average and Sum
#   functions            broadcast_object, broadcast_parameters, broadcast_optimizer_state
#   optimizer            DistributedOptimizer, which wraps an optimizer in one of:
#   bucketed_optimizer     averaging in buckets as backward produces the gradients
#   sharded_optimizer      the sharded step (its state in sharded_state, its choice in
#                          sharded_plan)
#   ps_optimizer           parameter-server mode's (the servers run the optimizer)
#   _optim_common        what the optimizers share
#   exceptions           HorovodInternalError, MismatchError (a ValueError and a RuntimeError)
#   build_info           Horovod's build queries: mpi_built, nccl_built, ...
from .basics import (init, is_initialized, local_rank, local_size, mode, rank, resume_point,
                     shutdown, size)
from .build_info import (ccl_built, cuda_built, ddl_built, gloo_built, gloo_enabled, mpi_built,
                         mpi_enabled, mpi_threads_supported, nccl_built, rocm_built)
from .exceptions import HorovodInternalError, MismatchError
from .functions import (allgather_object, broadcast_object, broadcast_optimizer_state,
                        broadcast_parameters)
from .mpi_ops import (Average, Max, Min, Product, Sum, allgather, allreduce, allreduce_, alltoall,
                      barrier, broadcast, broadcast_, reducescatter)
from .optimizer import DistributedOptimizer

__all__ = ["init", "shutdown", "is_initialized", "mode", "resume_point", "rank", "size", "local_rank", "local_size",
           "Average", "Sum", "Min", "Max", "Product",
           "allreduce", "allreduce_", "broadcast", "broadcast_", "allgather", "barrier",
           "allgather_object", "alltoall", "reducescatter",
           "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
           "DistributedOptimizer",
           "HorovodInternalError", "MismatchError",
           "mpi_built", "mpi_enabled", "mpi_threads_supported", "gloo_built", "gloo_enabled",
           "nccl_built", "ccl_built", "ddl_built", "cuda_built", "rocm_built"]
