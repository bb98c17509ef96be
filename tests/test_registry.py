from __future__ import annotations

import types
import warnings
from importlib import metadata

import pytest

from texsynth._registry import Registry
from texsynth.backbones import list_backbones
from texsynth.errors import InvalidArgumentError, UnknownNameError
from texsynth.losses import TextureLoss, create_loss, list_losses, register_loss


def test_register_create_list():
    registry: Registry = Registry("thing")

    @registry.register("double")
    def double(x: int = 1) -> int:
        return 2 * x

    assert registry.create("double", x=4) == 8
    assert registry.names() == ["double"]
    assert registry.names("dou*") == ["double"]
    assert registry.names("tri*") == []


def test_duplicate_name_is_an_error_unless_overriding():
    registry: Registry = Registry("thing")
    registry.add("a", lambda: 1)
    with pytest.raises(InvalidArgumentError, match="'a' is already registered"):
        registry.add("a", lambda: 2)
    registry.add("a", lambda: 3, override=True)
    assert registry.create("a") == 3


def test_unknown_name_lists_known_ones():
    registry: Registry = Registry("widget")
    registry.add("alpha", lambda: 1)
    registry.add("beta", lambda: 2)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'gamma'; known: alpha, beta"):
        registry.get("gamma")
    with pytest.raises(KeyError):  # also a KeyError for dict-like callers
        registry.get("gamma")


def test_builtins_are_registered():
    assert {"gram", "spectrum"} <= set(list_losses())
    assert {"vgg19", "random_multiscale", "random_pyramid"} <= set(list_backbones())


def test_user_loss_with_decorator_is_created_by_name():
    @register_loss("test_user_loss")
    class UserLoss(TextureLoss):
        pass

    try:
        assert isinstance(create_loss("test_user_loss", weight=2.0), UserLoss)
        assert "test_user_loss" in list_losses()
    finally:
        from texsynth.losses import LOSSES

        LOSSES.remove("test_user_loss")


class _FakeEntryPoint:
    def __init__(self, name: str, target: object, error: Exception | None = None) -> None:
        self.name, self.value, self._target, self._error = name, f"fake:{name}", target, error

    def load(self) -> object:
        if self._error is not None:
            raise self._error
        return self._target


def test_entry_point_plugins_load_lazily_and_broken_ones_are_skipped(monkeypatch):
    calls = []

    def good_factory() -> str:
        return "plugin-made"

    def fake_entry_points(group: str):
        calls.append(group)
        return [
            _FakeEntryPoint("good", good_factory),
            _FakeEntryPoint("broken", None, ImportError("no module named nowhere")),
            _FakeEntryPoint("selfregistering", types.ModuleType("plugin_module")),
        ]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    registry: Registry = Registry("loss", entry_point_group="texsynth.losses")
    assert calls == []  # nothing is imported before the first lookup
    with pytest.warns(RuntimeWarning, match="skipping loss plugin 'broken'"):
        assert registry.names() == ["good"]
    assert calls == ["texsynth.losses"]
    assert registry.create("good") == "plugin-made"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.names()  # loaded once: no second warning
    assert calls == ["texsynth.losses"]
