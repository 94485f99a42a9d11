"""Small call recorders shared by the property tests (imported as ``from _spies import ...``;
tests/ is on sys.path through conftest, like ``_tiny``)."""

from __future__ import annotations

from typing import Any


class Spy:
    """Records the arguments of each call, ``(args, kwargs)``, and forwards them to ``real``."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.real(*args, **kwargs)


def torch_call_recorder() -> Any:
    """A ``TorchFunctionMode`` recording every torch function call as ``(name, args, kwargs)``
    in its ``calls`` (built on demand: torch is optional for the core tests)."""
    from torch.overrides import TorchFunctionMode

    class Record(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, tuple, dict]] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            self.calls.append((getattr(func, "__name__", str(func)), args, kwargs))
            return func(*args, **kwargs)

    return Record
