import pytest

import evl_kd_trainer
from evl_kd_trainer.losses import get_loss, list_losses, register_loss


def test_version_is_pep440():
    from packaging.version import Version

    assert Version(evl_kd_trainer.__version__) >= Version("0.1.0.dev0")


def test_registry_roundtrip_and_unknown_name_lists_known():
    @register_loss("_test_dummy_loss")
    def dummy(x):
        return x * 2

    assert get_loss("_TEST_dummy_loss") is dummy
    assert "_test_dummy_loss" in list_losses()
    with pytest.raises(ValueError, match="_test_dummy_loss"):
        get_loss("no_such_loss")


def test_registry_refuses_silent_replacement():
    @register_loss("_test_unique")
    def first(x):
        return x

    with pytest.raises(ValueError, match="already registered"):

        @register_loss("_test_unique")
        def second(x):
            return x
