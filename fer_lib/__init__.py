"""fer_lib: lightweight multi-task face analysis (papers A and B) behind a series of notebooks."""

from . import config, labels, reporting
from .config import get_paths, get_profile

__version__ = "0.1.0"
__all__ = ["config", "labels", "reporting", "get_profile", "get_paths", "__version__"]
