"""Package attributes imported on first use (PEP 562), so that importing a package stays cheap: the
command line lists and checks names without importing torch, pandas or matplotlib."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, namespace: dict[str, Any], modules: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: attribute `name` is taken from module `modules[name]` (a full
    module path), any other name is imported as the submodule `package.name`; each is cached in `namespace`
    (the package's globals), so it is imported once."""
    def __getattr__(name: str) -> Any:
        path = modules.get(name, f"{package}.{name}")
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as err:
            if err.name != path:
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(module, name) if name in modules else module
        namespace[name] = value
        return value

    return __getattr__
