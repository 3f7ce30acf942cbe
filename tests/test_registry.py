from __future__ import annotations

import pytest

from visprompt.errors import UnknownNameError, VispromptError
from visprompt.registry import Registry


def test_register_get_and_suggest() -> None:
    reg: Registry[int] = Registry("loss")
    reg.register("gce")(1)
    reg.register("mae")(2)
    assert reg.get("gce") == 1 and "mae" in reg and reg.names() == ["gce", "mae"] and len(reg) == 2
    with pytest.raises(UnknownNameError, match=r"unknown loss 'gcee'; did you mean 'gce'\? \(known: gce, mae\)"):
        reg.get("gcee")
    with pytest.raises(VispromptError, match=r"unknown loss 'xyz' \(known"):
        reg.get("xyz")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("gce")(3)
