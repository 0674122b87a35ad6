"""swe_toolkit: training-free multilingual safety alignment by sparse, closed-form weight editing."""

from __future__ import annotations

__version__ = "0.1.0"
