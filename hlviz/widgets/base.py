"""The wiring every hlviz widget shares: reused figures, outputs swapped in one step,
errors shown in the widget, a static image/HTML fallback for frontends without widgets.

>>> from hlviz.widgets.base import error_output
>>> error_output(ValueError("bad <unit>"))["data"]["text/plain"]
'ValueError: bad <unit>'
>>> try:
...     int("<seven>")
... except ValueError as exc:
...     box = error_output(exc)["data"]["text/html"]
>>> "<details class='hlviz-traceback'>" in box, "&lt;seven&gt;" in box, "<seven>" in box
(True, True, False)

A view is drawn by a pure function into a figure that the widget owns (a
``matplotlib.figure.Figure`` made without pyplot, so no figure ever piles up in
``plt.get_fignums()``), turned into a PNG, and the Output widget's ``outputs`` are
replaced in one assignment (no flicker, the same effect as ``clear_output(wait=True)``).
"""

from __future__ import annotations

import base64
import html
import io
import os
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["StaticFallback", "error_output", "figure_output", "html_output", "static_mode"]

DPI = 80


def figure_output(fig: Figure, dpi: int = DPI) -> dict[str, Any]:
    """A display_data output (PNG and a text fallback) for an Output widget's ``outputs``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    width, height = fig.get_size_inches()
    text = f"<Figure size {width * dpi:.0f}x{height * dpi:.0f} with {len(fig.axes)} Axes>"
    return {
        "output_type": "display_data",
        "data": {"image/png": png, "text/plain": text},
        "metadata": {},
    }


def html_output(markup: str, text: str = "<HTML view>") -> dict[str, Any]:
    """A display_data output holding HTML (already escaped by its maker)."""
    return {
        "output_type": "display_data",
        "data": {"text/html": str(markup), "text/plain": text},
        "metadata": {},
    }


def error_output(exc: BaseException) -> dict[str, Any]:
    """The error box an Output shows when rendering raised: type and message on one line,
    the formatted traceback (when the exception was raised) in a collapsed ``<details>``
    below it, all escaped. The text/plain fallback is the one line."""
    message = f"{type(exc).__name__}: {exc}"
    box = (
        "<pre class='hlviz-error' style='color:#b00;background:#fff4f4;border:1px solid #e0b4b4;"
        f"padding:0.5em;white-space:pre-wrap;margin-bottom:0'>{html.escape(message)}</pre>"
    )
    if exc.__traceback__ is not None:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        box += (
            "<details class='hlviz-traceback'><summary style='color:#b00;cursor:pointer'>"
            "traceback</summary><pre style='font-size:0.85em;white-space:pre-wrap'>"
            f"{html.escape(trace)}</pre></details>"
        )
    return html_output(box, message)


def static_mode() -> bool:
    """True when widgets cannot be shown: ``HLVIZ_STATIC=1``, or no IPython kernel is running."""
    if os.environ.get("HLVIZ_STATIC", "").strip().lower() in ("1", "true", "yes"):
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return True
    shell = get_ipython()
    return shell is None or getattr(shell, "kernel", None) is None


def _as_html(output: dict[str, Any]) -> str:
    data = output["data"]
    if "image/png" in data:
        return f"<img src='data:image/png;base64,{data['image/png']}'/>"
    if "text/html" in data:
        return data["text/html"]
    return f"<pre>{html.escape(data.get('text/plain', ''))}</pre>"


class StaticFallback:
    """Mixin: a thin widget class with ``ui`` (a Box), ``controls`` and the outputs now shown.

    Subclasses set ``self.ui`` and ``self.controls`` and implement ``_visible_outputs()``
    (the Output widgets of the view on screen). ``_repr_mimebundle_`` returns the live
    widget where a kernel can show it, together with a static rendering of the same view
    (``text/html`` holding the controls' values, the PNG inline and any HTML view) that
    nbconvert and GitHub show, as they store no widget state; with ``HLVIZ_STATIC=1`` or
    outside a kernel only the static rendering is given.
    """

    ui: Any
    controls: dict[str, Any]
    #: the exception of the latest failed render or control update (its ``__traceback__``
    #: kept for debugging); ``None`` until one fails
    last_error: BaseException | None = None

    def _visible_outputs(self) -> Sequence[Any]:
        raise NotImplementedError  # pragma: no cover - every widget defines it

    def _figure(self, name: str) -> Figure:
        """The widget's one reused figure for view ``name`` (never registered with pyplot)."""
        from matplotlib.figure import Figure

        figures = self.__dict__.setdefault("_figures", {})
        if name not in figures:
            figures[name] = Figure()
        return figures[name]

    def _show(self, output: Any, render: Callable[[], Sequence[Any]]) -> bool:
        """Replace ``output``'s content by what ``render()`` returns (figures, HTML strings),
        or by an error box (message and traceback) when it raises, keeping the exception in
        ``last_error``. Returns whether it rendered."""
        from matplotlib.figure import Figure

        try:
            items = [
                figure_output(item) if isinstance(item, Figure) else html_output(item)
                for item in render()
            ]
        except Exception as exc:  # shown in the widget: a callback's error is otherwise lost
            self._fail(output, exc)
            return False
        output.outputs = tuple(items)
        return True

    def _guard(self, output: Any, action: Callable[[], Any]) -> bool:
        """Run ``action`` (a callback's work outside rendering, such as syncing controls);
        when it raises, show the error box in ``output`` as :meth:`_show` does, instead of
        letting the error reach the ipywidgets log. Returns whether it ran."""
        try:
            action()
        except Exception as exc:  # shown in the widget: a callback's error is otherwise lost
            self._fail(output, exc)
            return False
        return True

    def _fail(self, output: Any, exc: Exception) -> None:
        self.last_error = exc
        output.outputs = (error_output(exc),)

    def describe(self) -> str:
        """One stable line naming the widget and its control values (the text/plain repr)."""
        values = ", ".join(f"{name}={control.value!r}" for name, control in self.controls.items())
        return f"{type(self).__name__}({values})"

    def static_html(self) -> str:
        """The view now shown, as self-contained HTML (the controls' values, then the view)."""
        parts = [
            f"<div class='hlviz-static'><div style='font-family:monospace;color:#555'>"
            f"{html.escape(self.describe())}</div>"
        ]
        for output in self._visible_outputs():
            parts.extend(_as_html(o) for o in output.outputs)
        parts.append("</div>")
        return "".join(parts)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/html": self.static_html()}
        if not static_mode():
            live = self.ui._repr_mimebundle_(**kwargs)
            if isinstance(live, tuple):  # (data, metadata)
                live = live[0]
            bundle.update({k: v for k, v in (live or {}).items() if k != "text/plain"})
        bundle["text/plain"] = self.describe()
        return bundle
