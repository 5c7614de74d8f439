"""``compare()``: one prompt, one seed, several sampling settings, side by side.

    >>> from nb_completion import compare
    >>> compare("Once upon a time", [{"temperature": 0}, {"temperature": 1.0}, {"top_k": 5}])  # doctest: +SKIP

Each setting is a dict of friendly keys (``strategy``, ``temperature``, ``top_p``, ``top_k``,
``max_tokens``, ``repetition_penalty``, ``stop``, and an optional ``label`` and ``seed``) or
``{"sampling_params": {...}}`` in the contract's shape (with an optional ``label`` and ``seed``).
A setting's ``seed`` replaces ``compare()``'s for that run: the same setting under several
seeds shows how much of a difference is the draw, not the setting. Every request is validated before any
runs, so a typo fails fast with a 400 naming ``settings[i].<key>``. The result renders as columns
(title, statistics, heatmap) and gives the runs programmatically: ``result[0].text``,
``result.texts``, ``result[1].response`` (a ``CompletionResponse``).
"""

from __future__ import annotations

import html
import math
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ..api.bounds import ALTERNATIVES, COMPARE_MAX_TOKENS
from ..api.errors import BadRequest
from ..api.types import CompletionRequest, CompletionResponse
from ..runner import drain
from .live import LiveDisplay, ShownOnce, notebook_shell
from ..engine.records import Finished, TokenRecord
from .render import COLOR_BY, MONO, MUTED, heatmap_html, legend_html, legend_keys
from .render_svg import columns_svg
from ..api.shorthand import describe, from_settings

__all__ = ["compare", "Comparison", "Run"]

TOP_K = ALTERNATIVES  # alternatives kept per token in each run's response


@dataclass(frozen=True)
class Run:
    """One column: the settings, what came out, and the per-token records behind the heatmap."""

    label: str
    settings: str  # the sampling settings in words (without the max_tokens all runs share)
    request: CompletionRequest
    seed: int | None
    text: str
    tokens: tuple[TokenRecord, ...]
    finished: Finished
    response: CompletionResponse

    @property
    def mean_probability(self) -> float:
        return sum(t.probability for t in self.tokens) / len(self.tokens) if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        """exp(-mean logprob): how surprised the model was, on average, by what was picked."""
        return math.exp(-sum(t.logprob for t in self.tokens) / len(self.tokens)) if self.tokens else float("nan")

    @property
    def off_top(self) -> int:
        """How many tokens were not the model's first choice (always 0 for greedy)."""
        return sum(1 for t in self.tokens if t.rank > 1)

    def summary(self) -> str:
        if not self.tokens:
            return f"0 tokens · stop: {self.finished.stop_reason}"
        return (
            f"{len(self.tokens)} tokens · mean p {self.mean_probability:.0%} · perplexity {self.perplexity:.2f} · "
            f"{self.off_top} not top-1 · stop: {self.finished.stop_reason}"
        )


class Comparison(ShownOnce, Sequence[Run]):
    """The runs of one ``compare()``; renders as side-by-side columns in a notebook."""

    def __init__(self, content: Any, runs: list[Run], seed: int | None, model_id: str, color_by: str = "probability"):
        self.content, self.runs, self.seed, self.model_id, self.color_by = content, runs, seed, model_id, color_by

    def __getitem__(self, index):  # type: ignore[override]
        return self.runs[index]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    @property
    def texts(self) -> list[str]:
        return [run.text for run in self.runs]

    def __repr__(self) -> str:
        lines = [f"Comparison of {len(self.runs)} runs (model {self.model_id}, {self._seeds()})"]
        for run in self.runs:
            lines.append(f"── {run.label}  [{run.summary()}]")
            lines.append(run.text)
        return "\n".join(lines)

    def mimebundle(self) -> dict[str, str]:
        """Plain text, the HTML columns (live front ends), and an SVG of them for viewers that
        strip the HTML's styles (GitHub)."""
        return {"text/plain": repr(self), "text/html": self._repr_html_(), "image/svg+xml": self._repr_svg_()}

    def _repr_svg_(self) -> str:
        prompt = self.content if isinstance(self.content, str) else str(self.content)
        header = f"prompt {prompt!r} · model {self.model_id} · seed {self.seed}"
        columns = [
            (run.label if run.settings == run.label else f"{run.label} ({run.settings})", run.summary(), run.tokens)
            for run in self.runs
        ]
        return columns_svg(columns, header=header, color_by=self.color_by)

    def _seeds(self) -> str:
        """``seed 0``, or ``seeds 0, 1, 2`` when settings chose their own."""
        seeds = list(dict.fromkeys(run.seed for run in self.runs)) or [self.seed]
        return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(str(s) for s in seeds)

    def _column(self, run: Run) -> str:
        return _column(run.label, run.settings, run.summary(), heatmap_html(run.tokens, color_by=self.color_by, legend=False))

    def _frame(self, columns: str) -> str:
        prompt = self.content if isinstance(self.content, str) else str(self.content)
        header = (
            f'<div style="font-size:12px;margin-bottom:6px"><span style="{MUTED}">prompt</span> '
            f'<span style="{MONO};white-space:pre-wrap">{html.escape(prompt)}</span>'
            f' <span style="{MUTED}">· model {html.escape(self.model_id)} · {html.escape(self._seeds())}</span></div>'
        )
        return (
            f'<div class="nbc-compare">{header}<div style="display:flex;gap:10px;align-items:flex-start;'
            f'overflow-x:auto">{columns}</div>{legend_html(self.color_by, **legend_keys(t for run in self.runs for t in run.tokens))}</div>'
        )

    def _repr_html_(self) -> str:
        return self._frame("".join(self._column(run) for run in self.runs))

    def _progress_bundle(self, current: tuple[str, str, Any] | None, waiting: list[tuple[str, str]]) -> dict[str, str]:
        """The columns so far: finished runs, the one generating (its tokens as they come), the rest."""
        columns = [self._column(run) for run in self.runs]
        if current is not None:
            label, words, drained = current
            body = heatmap_html(drained.tokens, color_by=self.color_by, legend=False) if drained.tokens else ""
            columns.append(_column(label, words, f"{len(drained.tokens)} tokens · generating…", body))
        columns += [_column(label, words, "waiting", "") for label, words in waiting]
        done = len(self.runs) + (current is not None)
        return {"text/plain": f"compare: run {done} of {done + len(waiting)}…", "text/html": self._frame("".join(columns))}


def _column(label: str, words: str, summary: str, body: str) -> str:
    subtitle = "" if words == label else f'<div style="font-size:11px;{MUTED}">{html.escape(words)}</div>'
    return (
        '<div class="nbc-compare-run" style="flex:1 1 0;min-width:170px;border:1px solid rgba(128,128,128,0.35);'
        'border-radius:6px;padding:8px 10px">'
        f'<div style="font-weight:600">{html.escape(label)}</div>{subtitle}'
        f'<div style="font-size:11px;{MUTED};margin:2px 0 6px">{html.escape(summary)}</div>{body}</div>'
    )


def _own_seed(setting: Any, seed: int | None, field: str) -> tuple[Any, int | None]:
    """``(setting without "seed", the run's seed)``: its own ``seed``, else ``compare()``'s."""
    if not isinstance(setting, dict) or "seed" not in setting:
        return setting, seed
    setting = dict(setting)
    own = setting.pop("seed")
    if own is not None and (isinstance(own, bool) or not isinstance(own, int) or not 0 <= own < 2**63):
        raise BadRequest(f"{field}.seed", f"must be an integer >= 0 or None, got {own!r}")
    return setting, own


def compare(
    content: Any,
    settings: Sequence[dict],
    seed: int | None = 0,
    model_id: str | None = None,
    max_tokens: int = COMPARE_MAX_TOKENS,
    color_by: str = "probability",
    live: bool = True,
) -> Comparison:
    """Run ``content`` once per entry of ``settings`` (same model, same seed unless a setting
    gives its own ``seed``) and return the runs.

    ``max_tokens`` applies to every setting that does not set its own. Bad settings raise
    ``CompletionError`` (400, naming ``settings[i]...``) before anything runs. A kernel interrupt
    stops the current run cleanly (the engine is cancelled, not killed) and re-raises.
    In a notebook (``live=True``) the columns fill in as the runs generate, in one display that
    becomes the result (so it is not shown twice).
    """
    from ..service import build_request, open_events, to_response

    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    if not isinstance(settings, (list, tuple)) or not settings:
        raise BadRequest("settings", "give a non-empty list of settings dicts, e.g. [{'temperature': 0}, {'temperature': 1.0}]")
    planned: list[tuple[CompletionRequest, str, str, int | None]] = []
    own_seeds = any(isinstance(s, dict) and "seed" in s for s in settings)
    own_models = {s.get("model_id") for s in settings if isinstance(s, dict) and s.get("model_id") is not None}
    for i, setting in enumerate(settings):
        setting, run_seed = _own_seed(setting, seed, f"settings[{i}]")
        run_model = model_id
        if "model_id" in setting:  # this run on its own model (two models side by side)
            setting = dict(setting)
            run_model = setting.pop("model_id")
            if not isinstance(run_model, str) or not run_model:
                raise BadRequest(f"settings[{i}].model_id", f"must be a model id, got {run_model!r}")
        params, label = from_settings(setting, f"settings[{i}]")
        # the titles name what differs between runs; the shared max_tokens goes unsaid
        words = describe({**params, "max_tokens": None} if params.get("max_tokens", max_tokens) == max_tokens else params)
        if own_seeds:
            words += f" · seed {run_seed}"
        params = {**params, "max_tokens": params.get("max_tokens", max_tokens)}
        request = build_request(content, run_model, params, logprobs={"top_k": TOP_K})
        if own_models:
            words = f"{request.model_id} · {words}" if words else request.model_id
        planned.append((request, words if label is None else str(label), words, run_seed))
    models = list(dict.fromkeys(request.model_id for request, *_ in planned))
    result = Comparison(content, [], seed, ", ".join(models), color_by)
    view = LiveDisplay() if live and notebook_shell() is not None else None
    # Every run is opened at once: a local engine prefills the prompt once, forks one sequence
    # per setting from its cache and steps them together; the runs are then read in order.
    cancel = threading.Event()
    streams = []
    try:
        for request, _, _, run_seed in planned:
            streams.append(open_events(request, seed=run_seed, cancel=cancel))
    except BaseException:
        cancel.set()
        raise
    for i, (request, label, words, run_seed) in enumerate(planned):
        waiting = [(later_label, later_words) for _, later_label, later_words, _ in planned[i + 1 :]]
        show = None
        if view is not None:
            view.show(result._progress_bundle(None, [(label, words)] + waiting))
            show = lambda drained, label=label, words=words, waiting=waiting: view.show(  # noqa: E731
                result._progress_bundle((label, words, drained), waiting)
            )
        drained = drain(streams[i], cancel, show)
        if drained.error is not None:
            cancel.set()  # the other runs end too
            raise drained.error
        if drained.interrupted:
            raise KeyboardInterrupt(f"compare() interrupted during run {i + 1} of {len(planned)}")
        response = to_response(drained, TOP_K)  # EngineFailure when the stream ended without a Finished
        result.runs.append(Run(label, words, request, run_seed, drained.text, tuple(drained.tokens), drained.finished, response))
    if view is not None:
        view.show(result.mimebundle())
        result.mark_shown()  # the live display is the result: `Out[n]` stays quiet
    return result
