"""Live notebook output shared by ``%%complete`` and ``compare()``: one display updated in place,
and results that do not show themselves a second time.

A frontend that streams into a display and also returns its result would print that result
twice (once live, once as ``Out[n]``). ``ShownOnce`` results decline the displayhook's call for
the cell whose live display already shows them; displayed later, they render normally.
"""

from __future__ import annotations

from typing import Any

__all__ = ["notebook_shell", "LiveDisplay", "ShownOnce"]


def _shell() -> Any:
    try:
        from IPython import get_ipython

        return get_ipython()
    except Exception:  # noqa: BLE001 - no IPython at all
        return None


def notebook_shell() -> Any:
    """The IPython shell when its displays are rich (a kernel, or captured), else ``None``.
    A terminal IPython prints every display update, so live displays are not used there."""
    from IPython.core.displaypub import DisplayPublisher

    shell = _shell()
    if shell is None or type(shell.display_pub) is DisplayPublisher:
        return None
    return shell


class LiveDisplay:
    """``show(bundle)`` creates one display, then updates it in place."""

    def __init__(self) -> None:
        self.handle = None

    def show(self, bundle: dict[str, str]) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


class ShownOnce:
    """Mixin: ``mark_shown()`` after a live display shows the object; the displayhook's call in
    the same cell is then skipped once. Subclasses implement ``mimebundle()``."""

    _shown_in: int | None = None

    def mark_shown(self) -> None:
        shell = _shell()
        self._shown_in = getattr(shell, "execution_count", None)

    def mimebundle(self) -> dict[str, str]:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import display

        shell = _shell()
        if self._shown_in is not None and getattr(shell, "execution_count", None) == self._shown_in:
            self._shown_in = None
            return
        display(self.mimebundle(), raw=True)
