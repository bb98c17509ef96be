"""One registry class shared by losses and backbones.

Shape follows timm (``register_model`` / ``create_model`` / ``list_models``) but is strict
about duplicates like torchvision's and Lightning's registries: registering a taken name is an
error unless ``override=True``. Third-party packages add entries through an entry-point group,
loaded lazily on the first lookup; a plugin that fails to import is warned about and skipped.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from importlib import metadata
from typing import Any, Callable, Generic, TypeVar

from texsynth.errors import InvalidArgumentError, UnknownNameError

T = TypeVar("T")
Factory = Callable[..., T]


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) that build ``T``."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Factory] = {}
        self._plugins_loaded = entry_point_group is None

    def register(
        self, name: str | None = None, *, override: bool = False
    ) -> Callable[[Factory], Factory]:
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""

        def decorator(factory: Factory) -> Factory:
            self.add(name or factory.__name__, factory, override=override)
            return factory

        return decorator

    def add(self, name: str, factory: Factory, *, override: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise InvalidArgumentError(f"{self.kind} {name!r}: factory must be callable")
        existing = self._factories.get(name)
        if existing is not None and existing is not factory and not override:
            raise InvalidArgumentError(
                f"{self.kind} {name!r} is already registered (by {_describe(existing)}); "
                "pass override=True to replace it"
            )
        self._factories[name] = factory

    def remove(self, name: str) -> None:
        self._factories.pop(name, None)

    def get(self, name: str) -> Factory:
        self._load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self, pattern: str | None = None) -> list[str]:
        self._load_plugins()
        names = sorted(self._factories)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._factories

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            try:
                loaded = entry_point.load()
                # A module entry point registers itself with the decorator on import.
                if not inspect.ismodule(loaded) and entry_point.name not in self._factories:
                    self.add(entry_point.name, loaded)
            except Exception as error:  # a broken plugin must not break texsynth
                warnings.warn(
                    f"skipping {self.kind} plugin {entry_point.name!r} "
                    f"({entry_point.value}): {type(error).__name__}: {error}",
                    RuntimeWarning,
                    stacklevel=3,
                )


def _describe(factory: Factory) -> str:
    module = getattr(factory, "__module__", "?")
    return f"{module}.{getattr(factory, '__qualname__', factory)}"
