"""Which failures become a skipped line, and which stay errors.

Three things a machine may simply lack become skips, each with its reason: memory for the
shape (out of memory), a dtype the device cannot run at speed, and an optional dependency that
is not installed (triton, a C compiler, torch.distributed). An op that perfscope has no
faithful kernel for is skipped too (``Skip``), since timing a stand-in and calling it the op
would be wrong. Anything else, a wrong result included, is an error: the command fails.
"""

from __future__ import annotations

from perfscope.errors import MeasureError, PerfscopeError, UnsupportedDtypeError


class Skip(MeasureError):
    """This benchmark cannot run here, for the stated reason (not a failure)."""


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA or a failed host allocation)."""
    name = type(exc).__name__
    text = str(exc)
    return name == "OutOfMemoryError" or "out of memory" in text.lower() or \
        "DefaultCPUAllocator: can't allocate" in text


def missing_dependency(exc: BaseException) -> str | None:
    """The name of a third-party package that failed to import, else None.

    An ImportError from inside perfscope (a missing module of the package, a name that is not
    there) is a bug, not an optional dependency, and stays an error.
    """
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return None if top == "perfscope" else top


def skip_reason(exc: BaseException) -> str | None:
    """The reason to skip for ``exc``, or None when it must stay an error."""
    if isinstance(exc, Skip):
        return str(exc)
    if isinstance(exc, UnsupportedDtypeError):
        return str(exc)
    if is_oom(exc):
        return "out of memory at this shape"
    dep = missing_dependency(exc)
    if dep is not None:
        return f"needs the optional package {dep} (pip install {dep})"
    return None


def as_error(what: str, exc: BaseException) -> MeasureError:
    """One-line MeasureError for an unexpected failure of ``what``."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    return MeasureError(f"{what} failed: {type(exc).__name__}{': ' + msg if msg else ''} "
                        "(PERFSCOPE_DEBUG=1 shows the traceback)")


def reason_or_raise(what: str, exc: Exception) -> str:
    """The skip reason for ``exc``; raises it (a PerfscopeError as is, anything else as a
    one-line MeasureError with the cause chained) when it is not a skip."""
    reason = skip_reason(exc)
    if reason is not None:
        return reason
    if isinstance(exc, PerfscopeError):
        raise exc
    raise as_error(what, exc) from exc
