"""Grammar text in the three accepted syntaxes, as llguidance compiles it.

``bnf`` holds exactly one of ``gbnf`` (llama.cpp GBNF), ``lark`` (llguidance's Lark dialect) or
``regex`` (a Rust-syntax regular expression the whole output must match). Reading grammar files
named by command-line flags is the CLI's (``nb_completion/cli_formats.py``).
"""

from __future__ import annotations

from ..api.validation import GRAMMAR_KEYS

__all__ = ["GRAMMAR_KEYS", "grammar_text"]


def grammar_text(key: str, text: str) -> str:
    """The text llguidance compiles: GBNF is converted to Lark; Lark and regex pass through.

    Raises ``ValueError`` with the converter's message when GBNF does not parse.
    """
    if key == "gbnf":
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            return any_to_lark(text)
        except Exception as exc:  # the converter raises bare Exceptions for unknown rules
            raise ValueError(f"invalid GBNF grammar: {exc}") from None
    if key in ("lark", "regex"):
        return text
    raise ValueError(f"unknown grammar syntax {key!r}; accepted: {', '.join(GRAMMAR_KEYS)}")
