"""One trained table run shared by the serving tests (training is the slow part)."""
from __future__ import annotations

import pytest

from serve._runs import train_shop


@pytest.fixture(scope="session")
def shop_run(tmp_path_factory):
    """(run directory, table, config) of a hard-sharing model whose binary task uses the F1 threshold."""
    return train_shop(tmp_path_factory.mktemp("shop"), threshold="f1", epochs=20)


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory):
    """(run directory, table, config) of a hard-sharing model with the default 0.5 decision threshold."""
    return train_shop(tmp_path_factory.mktemp("plain"), epochs=2)
