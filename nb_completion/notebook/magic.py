"""``%%complete``: write a prompt in a cell, watch the completion stream in under it.

    %load_ext nb_completion
    %%complete -n 40 -t 0.8 --seed 1 --heatmap
    Once upon a time, {hero} found

The cell body (``{name}`` filled from the notebook, ``{{``/``}}`` for literal braces) becomes one
``CompletionRequest`` built by ``service.build_request``; ``service.open_events`` is drained on a
worker thread (``runner.py``) while the main thread updates one display in batches. A kernel
interrupt cancels the generation, keeps the partial text, and ends the cell as interrupted.

**Why the text is not printed twice.** The magic displays the completion itself (that display is
what streams), and returns a ``CompletionText`` — a ``str`` holding the text, plus ``.response``,
``.tokens`` and ``.heatmap()`` — so ``_`` (and ``Out[n]``) hold it. When IPython's displayhook
shows that result for the same cell, ``CompletionText`` declines once (its live display already
shows it); shown later (``_`` in another cell, ``display(x)``) it renders normally.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from IPython.core.displaypub import DisplayPublisher
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import HTML, display

from ..api.errors import BadRequest, CompletionError
from ..api.types import CompletionResponse
from ..runner import Drained, drain
from ..engine.fold import INCOMPLETE_NOTE, incomplete, summary
from ..engine.records import Finished, TokenRecord
from .live import LiveDisplay, ShownOnce
from .magic_options import PARSER, HelpRequested, MagicOptions, build_magic_request, interpolate, parse_line
from .render import ended_on_end_token, error_html, heatmap_html, text_block_html
from .render_svg import heatmap_svg

__all__ = ["CompletionMagics", "CompletionText", "MagicError", "GenerationInterrupted", "load_ipython_extension"]


class MagicError(CompletionError):
    """A ``CompletionError`` shown as its spec ``Error`` title and detail, without a traceback."""

    @classmethod
    def wrap(cls, exc: CompletionError) -> "MagicError":
        return cls(exc.status, exc.detail, exc.title)

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return [f"\x1b[1;31m{self.status} {self.title}\x1b[0m: {self.detail}"]


class GenerationInterrupted(KeyboardInterrupt):
    """Raised after an interrupted generation was drained cleanly (so Run All stops here too)."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;33mInterrupted\x1b[0m: {self}"]


class CompletionText(ShownOnce, str):
    """The completion text, as the cell's result. ``.response`` is the ``CompletionResponse``,
    ``.tokens`` the per-token records, ``.heatmap()`` their coloured rendering, ``.prompt`` the
    text the model read (with ``--chat``, the templated prompt), ``.incomplete`` whether a
    constrained output (``--json-schema`` / ``--grammar``) was cut short by ``--max-tokens``."""

    response: CompletionResponse | None
    tokens: tuple[TokenRecord, ...]
    finished: Finished | None

    def __new__(
        cls,
        text: str,
        response=None,
        tokens=(),
        finished=None,
        show_heatmap: str | None = None,
        *,
        prompt: str | None = None,
        show_prompt: bool = False,
        constrained: bool = False,
    ):
        self = super().__new__(cls, text)
        self.response = response
        self.tokens = tuple(tokens)
        self.finished = finished
        self.prompt = prompt
        self.constrained = constrained
        self._show_heatmap = show_heatmap
        self._show_prompt = show_prompt
        return self

    @property
    def incomplete(self) -> bool:
        return incomplete(self.finished, self.constrained)

    def heatmap(self, color_by: str = "probability", legend: bool = True) -> HTML:
        return HTML(heatmap_html(self.tokens, color_by=color_by, legend=legend))

    def status(self, error: Any = None) -> str:
        if error is not None:
            return f"{len(self.tokens)} tokens · failed"
        status = summary(self.finished, len(self.tokens))
        return status + (f" · {INCOMPLETE_NOTE}" if self.incomplete else "")

    def mimebundle(self, error: Any = None) -> dict[str, str]:
        extra = error_html(error) if error is not None else ""
        echo = prompt_echo_html(self.prompt) if self._show_prompt and self.prompt else ""
        end = error is None and ended_on_end_token(self.finished)  # a visible ⟨end⟩, even after no text
        if self._show_heatmap and self.tokens:  # the heatmap is the text: not shown twice
            body = heatmap_html(self.tokens, color_by=self._show_heatmap, end=end) + text_block_html(
                "", self.status(error), extra
            )
        else:
            body = text_block_html(str(self), self.status(error), extra, end=end)
        bundle = {"text/plain": str(self), "text/html": echo + body}
        if self._show_heatmap and self.tokens:  # the colours survive viewers that strip styles (GitHub)
            bundle["image/svg+xml"] = heatmap_svg(self.tokens, color_by=self._show_heatmap)
        return bundle


def prompt_echo_html(prompt: str) -> str:
    """The prompt the model read (special tokens written out), faint, above the completion."""
    from html import escape

    return (
        '<div class="nbc-prompt-echo" style="font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;'
        f'font-size:12px;opacity:0.55;white-space:pre-wrap;word-break:break-word;margin-bottom:4px">{escape(prompt)}</div>'
    )


class _LiveView:
    """One display, updated in batches (notebook); or the text written as it comes (terminal)."""

    def __init__(self, shell: Any, echo: str | None = None):
        self.rich = type(shell.display_pub) is not DisplayPublisher  # the terminal's publisher prints
        self.display = LiveDisplay()
        self.written = 0
        self.echo_text = echo  # the templated prompt of a --chat run
        self.echo = prompt_echo_html(echo) if echo else ""
        self.echoed = False

    def _write_echo(self) -> None:
        if self.echo_text and not self.echoed:
            sys.stdout.write(f"\x1b[2m{self.echo_text}\x1b[0m")
        self.echoed = True

    def start(self) -> None:
        if self.rich:
            self.display.show({"text/plain": "", "text/html": self.echo + text_block_html("", "generating…")})
        else:
            self._write_echo()
            sys.stdout.flush()

    def progress(self, drained: Drained) -> None:
        text = drained.text
        if self.rich:
            status = summary(None, len(drained.tokens))
            self.display.show({"text/plain": text, "text/html": self.echo + text_block_html(text, status)})
        else:
            sys.stdout.write(text[self.written :])
            sys.stdout.flush()
            self.written = len(text)

    def final(self, result: CompletionText, error: Any = None) -> None:
        if self.rich:
            self.display.show(result.mimebundle(error))
            return
        self._write_echo()
        sys.stdout.write(str(result)[self.written :])
        status = result.status() if error is None else f"{error.status} {error.title}"
        sys.stdout.write(f"\n\x1b[2m[{status}]\x1b[0m\n")
        sys.stdout.flush()


def _show_models() -> None:
    from html import escape

    from ..engine.registry import list_models

    infos = list_models()
    rows = "".join(
        f"<tr><td><code>{escape(i.identifier)}</code></td><td>{'yes' if i.loaded else 'no'}</td>"
        f"<td>{i.context_length or ''}</td><td>{escape(i.provider_id)}</td></tr>"
        for i in infos
    )
    html = (
        "<table><thead><tr><th>model id</th><th>loaded</th><th>context</th><th>provider</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    plain = "\n".join(f"{i.identifier}  (loaded: {'yes' if i.loaded else 'no'})" for i in infos)
    display({"text/plain": plain, "text/html": html}, raw=True)


def _content(opts: MagicOptions, cell: str | None, namespace: dict) -> str:
    if cell is None:
        template = opts.prompt
        if not template.strip():
            raise BadRequest(
                "content", "nothing to complete: `%complete [options] prompt words`, or a %%complete cell (see --help)"
            )
    else:
        if opts.prompt:
            raise BadRequest("options", f"unexpected text {opts.prompt!r} on the %%complete line; the prompt is the cell body")
        template = cell[:-1] if cell.endswith("\n") else cell  # IPython always appends one newline
        if not template.strip():
            raise BadRequest("content", "the cell is empty: write the prompt below the %%complete line")
    return interpolate(template, namespace)


@magics_class
class CompletionMagics(Magics):
    @no_var_expand  # {name} in options means the object itself (e.g. a pydantic model), not str()
    @line_cell_magic
    def complete(self, line: str, cell: str | None = None):
        try:
            return self._complete(line, cell)
        except HelpRequested as help_text:
            print(help_text)
            return None
        except MagicError:
            raise
        except CompletionError as exc:
            raise MagicError.wrap(exc) from None

    def _complete(self, line: str, cell: str | None):
        from ..service import apply_chat, open_events, to_response

        namespace = self.shell.user_ns
        opts = parse_line(line, namespace)
        if opts.models:
            _show_models()
            return None
        if opts.score:
            return self._score(opts, _content(opts, cell, namespace), namespace)
        request = build_magic_request(opts, _content(opts, cell, namespace))
        if opts.chat:
            request = apply_chat(request)  # loads the model first: the template is its tokenizer's
        cancel = threading.Event()
        events = open_events(request, seed=opts.seed, cancel=cancel)  # 4xx raise here, before output
        view = _LiveView(self.shell, request.content if opts.chat else None)
        if opts.stream:
            view.start()
        drained = drain(events, cancel, view.progress if opts.stream else None)
        response = to_response(drained, opts.logprobs) if drained.finished is not None else None
        result = CompletionText(
            drained.text,
            response,
            drained.tokens,
            drained.finished,
            opts.heatmap,
            prompt=request.content if isinstance(request.content, str) else None,
            show_prompt=opts.chat,
            constrained=request.response_format is not None,
        )
        view.final(result, drained.error.error if drained.error else None)
        if opts.out and response is not None:  # a failed generation leaves the variable alone
            namespace[opts.out] = response
        if drained.error is not None:
            raise MagicError.wrap(drained.error)
        if drained.interrupted:
            self.shell.displayhook.update_user_ns(result)  # `_` holds the partial text
            raise GenerationInterrupted(
                f"generation stopped after {len(drained.tokens)} tokens; the partial text is kept in `_`"
                + (f" and `{opts.out}`" if opts.out else "")
            )
        result.mark_shown()  # the live display already shows it: `Out[n]` stays quiet
        return result

    def _score(self, opts: MagicOptions, text: str, namespace: dict):
        """``%%complete --score``: the cell's text scored (nothing generated); shown as a heatmap."""
        from ..scoring import score

        scored = score(text, model_id=opts.model)
        if opts.out:
            namespace[opts.out] = scored
        return scored


CompletionMagics.complete.__doc__ = PARSER.format_help()


def _empty_cell_magic_as_line(lines: list[str]) -> list[str]:
    """``%%complete --help`` (or ``--models``) alone in a cell: IPython refuses a cell magic with
    an empty body, so run it as the line magic instead."""
    if lines and lines[0].lstrip().startswith("%%complete") and not "".join(lines[1:]).strip():
        return [lines[0].replace("%%complete", "%complete", 1)]
    return lines


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nb_completion``: registers ``%%complete`` and ``%complete``."""
    ipython.register_magics(CompletionMagics)
    transforms = ipython.input_transformers_cleanup
    if not any(getattr(t, "__name__", "") == _empty_cell_magic_as_line.__name__ for t in transforms):
        transforms.append(_empty_cell_magic_as_line)
