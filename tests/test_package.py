import pytest

import evl_kd_trainer
from evl_kd_trainer.registry import Registry


def test_version_is_pep440():
    from packaging.version import Version

    assert Version(evl_kd_trainer.__version__) >= Version("0.1.0.dev0")


def test_registry_roundtrip_and_unknown_name_lists_known():
    registry = Registry("thing")

    @registry.register("_test_dummy")
    def dummy(x):
        return x * 2

    assert registry.get("_TEST_dummy") is dummy
    assert "_test_dummy" in registry.names()
    with pytest.raises(ValueError, match="_test_dummy"):
        registry.get("no_such_thing")


def test_registry_refuses_silent_replacement():
    registry = Registry("thing")

    @registry.register("_test_unique")
    def first(x):
        return x

    with pytest.raises(ValueError, match="already registered"):

        @registry.register("_test_unique")
        def second(x):
            return x
