"""Helpers shared by the dtrain.torch API tests (torch_api_test.py, torch_ps_api_test.py)."""


def expect_raises(kind, text, f, *args, **kwargs):
    """f(*args, **kwargs) must raise `kind` with `text` in its message; returns the message."""
    try:
        f(*args, **kwargs)
    except kind as e:
        assert text in str(e), "%s: message %r lacks %r" % (f.__name__, str(e), text)
        return str(e)
    raise AssertionError("%s did not raise %s" % (f.__name__, kind.__name__))
