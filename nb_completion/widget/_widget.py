"""``CompletionWidget``: a live completion panel (anywidget).

    >>> from nb_completion import CompletionWidget
    >>> w = CompletionWidget("The capital of France is", max_tokens=16)  # doctest: +SKIP
    >>> w                      # the panel: type, set the sampling, press Generate  # doctest: +SKIP
    >>> w.generate(wait=True).content  # or drive it from Python  # doctest: +SKIP

Every control is a synced traitlet you can set or ``observe``; ``w.result`` is the last
``CompletionResponse``; ``w.stop()`` cancels (the partial output is kept). Tokens stream to the
browser as batched custom messages (at most ~30 a second); the final tokens land in the
``tokens`` trait, so a re-opened view is complete. In a notebook a static copy of the shown
completion (``text/html``, and ``image/svg+xml`` for viewers that strip styles, like GitHub)
follows the panel, hidden where the panel renders and refreshed after every run, so a saved or
exported notebook shows the last completion offline.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from ..api.bounds import ALTERNATIVES, TOP_P
from ..api.errors import BadRequest, CompletionError, EngineFailure
from ..api.shorthand import STRATEGIES
from ..api.types import CompletionRequest, CompletionResponse
from ..engine import registry
from ..engine.backend import is_local
from ..engine.fold import Metrics, incomplete
from ..engine.records import TokenRecord
from ._controls import (
    CONTROL_NAMES,
    FORMATS,
    GRAMMAR_SYNTAXES,
    build,
    check_controls,
    control_of,
    first_problem,
    from_response_format,
    from_sampling_params,
    schema_text,
)
from ..runner import Drained, Runner
from ..notebook.render_svg import heatmap_svg
from ..notebook.render_teach_svg import stack_svg
from . import _protocol as protocol
from ._session import Session
from ._static import static_copy_bundle, static_html
from ._inside import InsideMixin
from ._teach import TeachingMixin
from ._tokens import branch_ids

STATIC = Path(__file__).resolve().parent.parent / "static"
_NOT_BUILT = (
    "export default { render({ el }) { el.textContent = 'nb_completion: the widget front end is not built; "
    "run `pip install -e .` (or `npm install && npm run build` in js/).'; } };"
)


def _asset(name: str, fallback: str) -> Path | str:
    """A built file (anywidget reloads it live with ANYWIDGET_HMR=1), or a message saying why not."""
    path = STATIC / name
    return path if path.exists() else fallback


STATUSES = ("idle", "loading", "running", "done", "stopped", "error")
# keyword=True tags the traits the constructor takes by name (``trait_names(keyword=True)``)


class CompletionWidget(InsideMixin, TeachingMixin, anywidget.AnyWidget):
    """A prompt, sampling controls, Generate / Stop, and the streamed completion as a heatmap.

    ``CompletionWidget(content="", model_id=None, **sampling)``; ``sampling`` takes the control
    names (``strategy``, ``temperature``, ``top_p``, ``top_k``, ``max_tokens``,
    ``repetition_penalty``, ``stop`` (the trait ``stop_strings``), ``logprobs_top_k`` or ``logprobs``, ``seed``,
    ``response_format``, ``json_schema``, ``grammar``, ``grammar_syntax``, ``color_by``) or a spec
    ``sampling_params`` dict, and ``chat`` (wrap the prompt in the model's chat template; the
    echoed prompt then shows the template). ``model_id`` may be a registered id, a local folder,
    a ``.gguf`` path or a cached hub id: it loads on the first Generate, with the status
    "loading". Setting ``temperature``/``top_p`` implies the top-p strategy and
    ``top_k`` the top-k strategy unless ``strategy`` is given. Unknown names raise ``TypeError``.

    Teaching views (``_teach.py``): ``step()`` (the "Step" button), ``force(position, token_id)``,
    ``show_distribution(index)``, ``score_prompt()`` ("Score"), ``show_branch(id)``; the traits
    ``distribution``, ``draw``, ``tree``, ``prompt_tokens``, ``perplexity``.
    """

    _esm = _asset("widget.js", _NOT_BUILT)
    _css = _asset("widget.css", "")

    # ---- controls (what the next request is made of) ----
    content = t.Unicode("").tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)  # the model_id of requests (`model_id` is ipywidgets')
    model_ids = t.List(t.Unicode()).tag(sync=True)
    strategy = t.Enum(STRATEGIES, "greedy").tag(sync=True, keyword=True)
    temperature = t.Float(0.8).tag(sync=True, keyword=True)
    top_p = t.Float(TOP_P).tag(sync=True, keyword=True)
    top_k = t.Int(40).tag(sync=True, keyword=True)
    max_tokens = t.Int(64).tag(sync=True, keyword=True)
    repetition_penalty = t.Float(1.0).tag(sync=True, keyword=True)
    stop_strings = t.List(t.Unicode()).tag(sync=True)  # sampling_params.stop (`stop()` stops)
    logprobs_top_k = t.Int(ALTERNATIVES).tag(sync=True, keyword=True)
    response_format = t.Enum(FORMATS, "none").tag(sync=True)
    json_schema = t.Unicode("").tag(sync=True, keyword=True)
    grammar = t.Unicode("").tag(sync=True, keyword=True)
    grammar_syntax = t.Enum(GRAMMAR_SYNTAXES, "gbnf").tag(sync=True, keyword=True)
    seed = t.Int(None, allow_none=True).tag(sync=True, keyword=True)
    chat = t.Bool(False).tag(sync=True, keyword=True)  # wrap the prompt in the model's chat template (one user turn)
    color_by = t.Enum(("probability", "entropy"), "probability").tag(sync=True, keyword=True)
    palette = t.Enum(("default", "colorblind"), "default").tag(sync=True)  # colour-blind-safe option
    show_tokens = t.Bool(False).tag(sync=True)  # outline token boundaries in the prompt too
    present = t.Bool(False).tag(sync=True, keyword=True)  # presentation mode: large type, sliders, one screen

    # ---- state (what the panel shows) ----
    status = t.Enum(STATUSES, "idle").tag(sync=True)
    run = t.Int(0).tag(sync=True)  # increments per generation; deltas carry it
    tokens = t.List(t.Dict()).tag(sync=True)  # the shown tokens, complete once a run ends
    text = t.Unicode("").tag(sync=True)  # the shown completion text
    prompt_echo = t.Unicode("").tag(sync=True)  # the prompt of the shown completion
    metrics = t.Dict().tag(sync=True)
    error = t.Dict().tag(sync=True)  # the spec Error body of the last failure, or {}
    invalid = t.Dict().tag(sync=True)  # control -> message, for values that cannot be sent
    branch = t.Dict(default_value=None, allow_none=True).tag(sync=True)
    # The run whose result the front end has received: set by the browser, so reactive hosts
    # (marimo's mo.ui.anywidget) re-run the cells that read the widget once a generation ends.
    completed_run = t.Int(0).tag(sync=True)
    # Names this widget's static copy: its live views hide only the copy carrying this key.
    copy_key = t.Unicode("").tag(sync=True)
    # ---- teaching views (``_teach.py``) ----
    distribution = t.Dict(default_value=None, allow_none=True).tag(sync=True)  # raw logits at a position
    draw = t.Dict(default_value=None, allow_none=True).tag(sync=True)  # the last Step's draw
    tree = t.List(t.Dict()).tag(sync=True)  # the branch tree: one item per path, the original first
    prompt_tokens = t.List(t.Dict()).tag(sync=True)  # the prompt's tokens (scored after Score)
    perplexity = t.Float(None, allow_none=True).tag(sync=True)

    def __init__(self, content: str = "", model_id: str | None = None, **sampling: Any):
        values = _trait_values(sampling, set(self.trait_names(keyword=True)))
        self._session = Session()
        self._lock = self._session.lock
        self._teach_init()
        self._inside_init()
        self._runner: Runner | None = None
        self._copy_id: str | None = None  # display id of the static copy, once shown in a notebook
        self.result: CompletionResponse | None = None
        super().__init__(
            content=content,
            model_name=model_id or registry.DEFAULT_MODEL_ID,
            model_ids=registry.registered_ids(),
            **values,
        )
        self.copy_key = self.model_id
        self.on_msg(self._on_frontend_msg)
        self.observe(self._revalidate, names=list(CONTROL_NAMES))
        self._revalidate()

    # ---- the Python API ------------------------------------------------------------------------

    def generate(self, *, wait: bool = False, timeout: float | None = None) -> CompletionResponse | None:
        """Start a generation from the controls (stopping a running one). With ``wait=True``,
        block until it ends and return ``result`` (a Stop click cannot arrive while a cell waits)."""
        started = self._start(self.content, prefix=[], branch=None, chat=self.chat)
        return self.wait(timeout) if wait and started else None

    def stop(self, wait: bool = False, timeout: float | None = 5.0) -> None:
        """Cancel the running generation; it ends within one token and keeps the partial output."""
        runner = self._runner
        if runner is not None:
            runner.cancel()
            if wait:
                runner.join(timeout)

    def wait(self, timeout: float | None = None) -> CompletionResponse | None:
        """Block until the current generation ends; returns ``result``."""
        runner = self._runner
        if runner is not None:
            runner.join(timeout)
        return self.result

    def continue_from(self, index: int, text: str, *, wait: bool = False) -> CompletionResponse | None:
        """Branch: keep the shown tokens before ``index``, put the alternative ``text`` (one of
        token ``index``'s top-k) in its place, and generate on from there: the request's content
        is the shown completion's prompt (with ``chat``, already templated) + those tokens' text.
        The ``content`` control is untouched; the current sampling controls apply."""
        with self._lock:
            prompt = self.prompt_echo
        prefix, branch, points = self._session.branch_from(index, text)
        started = self._start(prompt, prefix, branch, points)
        return self.wait() if wait and started else None

    @property
    def records(self) -> list[TokenRecord]:
        """The shown tokens as ``TokenRecord``s (a branch's prefix included)."""
        with self._lock:
            return list(self._session.records)

    @property
    def running(self) -> bool:
        return self._runner is not None and self._runner.running

    def to_html(self) -> str:
        """A self-contained HTML rendering of the shown result (heatmap with hover titles)."""
        with self._lock:
            records = list(self._session.records)
        return static_html(
            records,
            prompt=self.prompt_echo,
            color_by=self.color_by,
            status=self.status,
            metrics=self.metrics,
            error=self.error,
            model=self.model_name,
        )

    def to_svg(self) -> str:
        """An SVG image of the shown result's heatmap (colours as fill attributes, no styles)."""
        with self._lock:
            records = list(self._session.records)
        return heatmap_svg(records, color_by=self.color_by)

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        try:
            static = {"text/html": self.to_html()}
            parts = ([self.to_svg()] if self._session.records else []) + self.teaching_svgs()
            if parts:
                static["image/svg+xml"] = stack_svg(parts)
        except Exception:  # the static copy is a bonus: never let it hide the live panel
            return data, meta
        return {**data, **static}, meta

    def _ipython_display_(self) -> None:
        """In a notebook: the live panel, then a static copy of the shown completion (HTML and SVG)
        as a display of its own, refreshed after every run. Where the panel renders, its stylesheet
        hides the copy; a saved notebook, an export (``nbconvert --execute`` too) or GitHub shows
        the copy: the last completion, without a kernel, a widget manager or a CDN script."""
        from IPython.display import display

        bundle = super()._repr_mimebundle_()
        data, meta = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        display({**data, "text/plain": f"CompletionWidget · {self.model_name}"}, metadata=meta, raw=True)
        self._copy_id = f"nb_completion-copy-{self.model_id}"
        display(self._static_copy(), raw=True, display_id=self._copy_id)

    def _static_copy(self) -> dict[str, str]:
        with self._lock:
            records = list(self._session.records)
        parts = (
            [heatmap_svg(records, color_by=self.color_by, header=[f"nb_completion · {self.model_name}", self.prompt_echo])]
            if records
            else []
        )
        try:
            figures = self.teaching_svgs() + self.inside_svgs()
        except Exception:  # a bonus: never let it hide the heatmap
            figures = []
        svg = stack_svg(parts + figures) if parts or figures else None
        return static_copy_bundle(self.to_html(), svg, self.prompt_echo + self.text, key=self.copy_key, figures=figures)

    def _refresh_static_copy(self) -> None:
        """After a run: the displayed static copies show it (update_display by display id)."""
        if self._copy_id is None:
            return
        try:
            from IPython.display import update_display

            update_display(self._static_copy(), raw=True, display_id=self._copy_id)
        except Exception:  # the copy is a bonus: never let it break a run
            pass

    # ---- running ---------------------------------------------------------------------------------

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONTROL_NAMES}

    def _revalidate(self, change: Any = None) -> None:
        self.invalid = check_controls(self._values())

    def _start(
        self, prompt: str, prefix: list[TokenRecord], branch: dict | None, points: set[int] = frozenset(), chat: bool = False
    ) -> bool:
        """Cancel a running generation, check the controls, and run ``prompt`` + ``prefix``'s text
        (with ``chat``, wrapped in the chat template once the model is loaded)."""
        previous = self._runner
        if previous is not None and previous.running:
            previous.cancel()
            previous.join(5.0)
        values = self._values()
        bad = check_controls(values)
        try:
            if bad:
                raise first_problem(bad)
            request = build(values, prompt + "".join(r.text for r in prefix))
        except CompletionError as exc:
            self.invalid = bad or self._flag(exc)
            self._show_error(exc)
            return False
        generator = self._run_generator(values)
        with self._lock:
            run = self.run + 1
            self._tree_start(prompt, prefix, branch, generator)
            self._session.begin(prefix, points, constrained=request.response_format is not None)
            self.result = None
            cancel = threading.Event()
            self._runner = Runner(
                lambda: self._open_run(run, request, values["seed"], generator, chat, cancel, (prompt, prefix)),
                cancel,
                on_batch=lambda records: self._on_batch(run, records),
                on_done=lambda outcome: self._on_done(run, request, outcome),
                name="nb_completion-widget",
            )
            with self.hold_sync():
                self.run = run
                self.status = "running"
                self.error = {}
                self.metrics = {}
                self.draw = None  # the last Step's draw describes another run
                self.branch = branch
                self.prompt_echo = prompt
                self.tokens = self._session.dicts()
                self.text = self._session.text
                self.model_ids = registry.registered_ids()
        self._runner.start()
        return True

    def _open_run(self, run: int, request: CompletionRequest, seed: Any, generator: Any, chat: bool, cancel: Any, kept: Any):
        """The run's event stream (on the runner's thread): the model loads first if it must
        (status "loading"); with ``chat`` the prompt is wrapped in its template and echoed. A
        branch (``kept``: its prompt and kept tokens) on a local model runs on its exact token ids."""
        from ..service import apply_chat, load_backend, open_events

        loading = lambda message: self._set_status(run, "loading")  # noqa: E731 - never a display from this thread
        if chat:
            request = apply_chat(request, loading)
            self._set_prompt(run, request.content)
        plan = None
        if kept[1]:
            backend = load_backend(request.model_id, loading)
            ids = branch_ids(backend, *kept)
            plan = backend.prepare(request, ids=ids) if ids is not None else None
        return open_events(request, seed=seed, cancel=cancel, on_progress=loading, generator=generator, plan=plan)

    def _run_generator(self, values: dict) -> Any:
        """A local model's sampling generator for a run, kept so that Step continues it."""
        backend = registry.registered(values["model_name"] or registry.DEFAULT_MODEL_ID)
        if backend is None or not is_local(backend) or values["strategy"] == "greedy":
            return None
        from ..engine.sampling import make_generator

        return make_generator(values["seed"], backend.device)

    def _set_status(self, run: int, status: str) -> None:
        with self._lock:
            if run == self.run:
                self.status = status

    def _set_prompt(self, run: int, templated: str) -> None:
        with self._lock:
            if run == self.run:
                self.prompt_echo = templated

    def _on_batch(self, run: int, records: list[TokenRecord]) -> None:
        with self._lock:
            if run != self.run:
                return
            session = self._session
            start, fresh = session.add(records)
            if self.status == "loading":
                self.status = "running"
            self.send(protocol.delta(run, start, session.dicts(fresh), session.live_metrics()))

    def _on_done(self, run: int, request: CompletionRequest, outcome: Drained) -> None:
        response, failure = _response_of(outcome, request)
        with self._lock:
            if run != self.run:
                return
            session = self._session
            metrics = session.live_metrics()
            finished = outcome.finished
            if finished is not None:
                counts = Metrics.of(finished)
                metrics.update(
                    prompt_tokens=counts.prompt_tokens,
                    completion_tokens=counts.completion_tokens,
                    stop_reason=finished.stop_reason,
                    cancelled=finished.cancelled,
                )
                if counts.time_to_first_token is not None:
                    metrics["time_to_first_token"] = round(counts.time_to_first_token, 4)
                if counts.tokens_per_second is not None:
                    metrics["tokens_per_second"] = round(counts.tokens_per_second, 2)
                if incomplete(finished, session.constrained):
                    metrics["incomplete"] = True  # max_tokens cut the JSON / grammar short: it may not parse
                if finished.stop_string is not None:
                    metrics["stop_string"] = finished.stop_string  # a stop string, not the model's end token
                if finished.end_token is not None and not finished.cancelled:  # shown, though it adds no text
                    metrics["end_token"] = finished.end_token.piece
                    metrics["end_token_p"] = round(math.exp(finished.end_token.logprob), 4)
                if session.constrained:
                    metrics["grammar"] = True  # an end of turn means the structured output is complete
                backend = registry.registered(self.model_name or registry.DEFAULT_MODEL_ID)
                weights = backend.info.metadata.get("weights") if backend is not None else None
                if weights:
                    metrics["weights"] = weights  # what computed these numbers: "Q4_1 weights, float32 activations"
            self.result = response
            body = response.content if response else "".join(r.text for r in session.generated)
            with self.hold_sync():
                self.tokens = session.dicts()
                self.text = session.prefix_text + body
                self.metrics = metrics
                self.model_ids = registry.registered_ids()  # a model loaded by this run is listed now
                if failure is not None:
                    flagged = self._flag(failure)
                    if flagged:
                        self.invalid = {**self.invalid, **flagged}
                    self.error = failure.error.model_dump(exclude_none=True)
                    self.status = "error"
                else:
                    self.status = "stopped" if outcome.cancelled else "done"
            self._tree_sync()
        if failure is None and outcome.cancelled:  # Stop returns at once; the probe follows
            threading.Thread(target=self._probe_end, daemon=True).start()
        elif failure is None:
            self._probe_end()
        self._refresh_static_copy()

    def _flag(self, exc: CompletionError) -> dict[str, str]:
        if not isinstance(exc, BadRequest):
            return {}
        control = control_of(exc.field, self.response_format)
        return {control: exc.message} if control else {}

    def _show_error(self, exc: CompletionError) -> None:
        with self.hold_sync():
            self.error = exc.error.model_dump(exclude_none=True)
            self.status = "error"

    # ---- messages from the browser ---------------------------------------------------------------

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        kind = protocol.kind_of(content)
        try:
            if kind == protocol.GENERATE:
                self.generate()
            elif kind == protocol.STOP:
                self.stop()
            elif kind == protocol.BRANCH:
                self.pick_alternative(content.get("index"), content.get("text"))  # one token, as a bar does
            elif kind == protocol.SNAPSHOT:
                self._send_snapshot()
            elif kind == protocol.MODELS:
                self.model_ids = registry.registered_ids()
            elif not self._teach_msg(kind, content):
                self._inside_msg(kind, content)
        except CompletionError as exc:
            self._show_error(exc)
        except Exception as exc:  # the panel must keep working
            self._show_error(EngineFailure(f"The widget failed to handle '{kind}' ({type(exc).__name__}: {exc})."))

    def _send_snapshot(self) -> None:
        with self._lock:
            self.send(protocol.snapshot(self.run, self._session.dicts(), self._session.live_metrics()))


def _response_of(run: Drained, request: CompletionRequest) -> tuple[CompletionResponse | None, CompletionError | None]:
    """The spec response of a finished run, or the error that ended it (a stream that ended
    without a ``Finished`` is the engine's failure)."""
    from ..service import to_response

    if run.error is not None:
        return None, run.error
    top_k = None if request.logprobs is None else (request.logprobs.top_k or 0)
    try:
        return to_response(run, top_k), None
    except CompletionError as exc:
        return None, exc


def _trait_values(kwargs: dict[str, Any], keywords: set[str]) -> dict[str, Any]:
    """Constructor keywords -> trait values; ``keywords`` are the traits taken by name (and
    ``stop`` for ``stop_strings``); unknown names are a ``TypeError``."""
    kwargs = dict(kwargs)
    values: dict[str, Any] = {}
    if "sampling_params" in kwargs:
        params = kwargs.pop("sampling_params")
        values.update(from_sampling_params(params) if params is not None else {})
    if "response_format" in kwargs:
        values.update(from_response_format(kwargs.pop("response_format")))
    if "logprobs" in kwargs:
        logprobs = kwargs.pop("logprobs")
        values["logprobs_top_k"] = ALTERNATIVES if logprobs is True else 0 if logprobs in (None, False) else int(logprobs)
    unknown = sorted(set(kwargs) - keywords - {"stop"})
    if unknown:
        raise TypeError(f"CompletionWidget got unexpected keyword argument(s): {', '.join(unknown)}")
    if "json_schema" in kwargs:
        kwargs["json_schema"] = schema_text(kwargs["json_schema"])
        values.setdefault("response_format", "json_schema")
    if "grammar" in kwargs:
        values.setdefault("response_format", "grammar")
    if "stop" in kwargs:
        kwargs["stop_strings"] = list(kwargs.pop("stop") or [])
    values.update(kwargs)
    if "strategy" not in values:
        if "top_k" in values:
            values["strategy"] = "top_k"
        elif "temperature" in values or "top_p" in values:
            values["strategy"] = "top_p"
    return values
