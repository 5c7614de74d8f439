"""The live completion panel: ``CompletionWidget`` (anywidget). Front-end source in ``js/``."""

from ._widget import CompletionWidget

__all__ = ["CompletionWidget"]
