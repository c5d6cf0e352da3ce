"""Horovod's build queries, answered for dtrain.torch: which engines carry its collectives. It
moves CPU tensors over MPI (Open MPI), started with MPI_THREAD_SERIALIZED; it has no Gloo, oneCCL
or DDL path, and no GPU tensors (the C++ runtime's NCCL path serves mnist_train and dtrain::Job,
not dtrain.torch)."""
from .basics import is_initialized, mode


def mpi_built(verbose=False):
    return True


def mpi_enabled():
    """MPI carries this job's collectives: an allreduce-mode job (ps mode goes over ZeroMQ)."""
    return is_initialized() and mode() == "allreduce"


def mpi_threads_supported():
    """Whether MPI runs with MPI_THREAD_MULTIPLE: never here (dtrain asks for
    MPI_THREAD_SERIALIZED; its background allreduce thread is the only one in MPI at a time)."""
    if not is_initialized():
        raise ValueError("dtrain.torch.mpi_threads_supported: call dtrain.torch.init() first")
    return False


def gloo_built(verbose=False):
    return False


def gloo_enabled():
    return False


def nccl_built(verbose=False):
    return False


def ccl_built(verbose=False):
    return False


def ddl_built(verbose=False):
    return False


def cuda_built(verbose=False):
    return False


def rocm_built(verbose=False):
    return False
