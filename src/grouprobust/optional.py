"""Optional dependencies (torchvision, timm, transformers, peft, MLflow, TensorBoard ...): import one, or
say in one line which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from grouprobust.errors import GroupRobustError


def import_optional(module: str, extra: str, needed_by: str, subject: str, otherwise: str = "") -> ModuleType:
    """The imported ``module``. When it is not installed, a one-line `GroupRobustError` about ``subject``:
    "``needed_by`` needs ``module``, which is not installed; pip install 'grouprobust[``extra``]'"
    followed by ``otherwise`` (another way out, e.g. " or leave track off"). When it is installed but its
    import fails (torchvision built for another torch, a broken MLflow), one line saying so."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GroupRobustError(f"{needed_by} needs {module}, which is not installed; pip install "
                               f"'grouprobust[{extra}]'{otherwise}", subject=subject) from None
    except Exception as err:  # installed but broken
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GroupRobustError(f"{module} is installed but cannot be imported ({first}); reinstall it (torchvision "
                               "and timm: the build that matches your torch version)", subject=subject) from None
