"""The errors a collective raises. Horovod's users catch RuntimeError (HorovodInternalError is
one) when ranks disagree on a collective; dtrain.torch raised ValueError, which its users catch.
A mismatch is both: MismatchError derives from ValueError and from HorovodInternalError."""


class HorovodInternalError(RuntimeError):
    """Horovod's name for a collective that could not be carried out (a RuntimeError)."""


class MismatchError(ValueError, HorovodInternalError):
    """Ranks called a collective with different settings (shape, dtype, name, root, ...): raised
    on every rank, naming the rank and what differs; the job goes on."""
