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


def test_an_installed_plugin_distribution_provides_a_loss_and_a_backbone(tmp_path, monkeypatch):
    """A real (if minimal) installed distribution, discovered through importlib.metadata."""
    from texsynth.backbones import BACKBONES, create_backbone
    from texsynth.losses import LOSSES

    (tmp_path / "texsynth_fake_plugin.py").write_text(
        "import torch\n"
        "from texsynth.losses import TextureLoss\n"
        "from texsynth.backbones import Backbone\n"
        "class FakeLoss(TextureLoss):\n"
        "    def set_target(self, exemplar, features, output_size):\n"
        "        self.register_buffer('target', exemplar.mean(), persistent=False)\n"
        "    def forward(self, image, features):\n"
        "        return (image.mean() - self.target) ** 2\n"
        "class FakeNet(Backbone):\n"
        "    texture_layers = ('conv',)\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)\n"
        "        self.freeze()\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)\n"
    )
    dist_info = tmp_path / "texsynth_fake_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: texsynth-fake-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[texsynth.losses]\n"
        "fake_plugin_loss = texsynth_fake_plugin:FakeLoss\n"
        "broken_plugin_loss = texsynth_module_that_does_not_exist:Nope\n"
        "[texsynth.backbones]\n"
        "fake_plugin_net = texsynth_fake_plugin:FakeNet\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(LOSSES, "_plugins_loaded", False)
    monkeypatch.setattr(BACKBONES, "_plugins_loaded", False)
    try:
        with pytest.warns(RuntimeWarning, match="skipping loss plugin 'broken_plugin_loss'"):
            assert "fake_plugin_loss" in list_losses()
        assert type(create_loss("fake_plugin_loss")).__name__ == "FakeLoss"
        assert "fake_plugin_net" in list_backbones()
        assert list(create_backbone("fake_plugin_net").parameters()) == []
    finally:
        LOSSES.remove("fake_plugin_loss")
        BACKBONES.remove("fake_plugin_net")
