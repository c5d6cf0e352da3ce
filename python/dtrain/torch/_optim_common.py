"""What the DistributedOptimizer variants share: the messages for a sparse gradient and for a
gradient past backward_passes_per_step (bucketed and sharded step), and float32 views of buffers
the C++ side owns (sharded step's shared window, ps mode's exchange buffers)."""
import ctypes

import torch


def _sparse_refused(name):
    return ("dtrain.torch.DistributedOptimizer: parameter %s has a sparse gradient "
            "(nn.Embedding(sparse=True)?); dtrain.torch averages dense gradients: make it dense "
            "(sparse=False)" % name)


def _too_many_passes(name, count, passes):
    return ("dtrain.torch.DistributedOptimizer: parameter %s got its gradient %d times before "
            "step(), more than backward_passes_per_step=%d; raise backward_passes_per_step to "
            "accumulate gradients locally" % (name, count, passes))


def _float_view(address, count):
    """A float32 tensor over `count` floats at `address` (a buffer the C++ side owns)."""
    if count == 0:
        return torch.zeros(0)
    return torch.frombuffer((ctypes.c_float * count).from_address(address), dtype=torch.float32)
