"""Synthetic advertising platforms on loopback with known ground truth (issue 3). All data is synthetic.

Public API: ``Sandbox`` (context manager serving the four platforms), ``Faults``, ``truth(...)``, and the
``app`` Typer CLI in ``sandbox.cli`` (``pointcount sandbox serve|truth``). See docs/sandbox.md.
"""

from sandbox.population import CARD_PLATFORMS, CATEGORIES, DEFAULT_HORIZON, DEFAULT_N, PLATFORMS, generate
from sandbox.server import DEFAULT_BIND, Faults, Sandbox

__all__ = [
    "CARD_PLATFORMS",
    "CATEGORIES",
    "DEFAULT_BIND",
    "DEFAULT_HORIZON",
    "DEFAULT_N",
    "PLATFORMS",
    "Faults",
    "Sandbox",
    "generate",
    "truth",
]


def __getattr__(name: str) -> object:
    # ``truth`` pulls in pandas; importing it lazily keeps `sandbox serve` start-up short.
    if name == "truth":
        from sandbox.ground_truth import truth

        return truth
    raise AttributeError(name)
