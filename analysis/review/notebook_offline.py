"""Keep Panel's stylesheets in the notebook's own messages, so the app inside JupyterLab asks no
outside server.

``pn.extension(inline=True)`` inlines Panel's stylesheets only in the first render. An update
made afterwards (a pane's text, a widget made visible, a new card) sends the component's theme
and loading stylesheets again as links to cdn.holoviz.org (Panel 1.9.4; holoviz/panel#8707 fixed
one cause of it, not this one): offline they fail, online they tell the CDN who looks at the
photos. Here each update is rewritten before it is sent: every stylesheet Panel ships in its own
``dist`` folder goes out as the file's text instead of its address.
"""
from __future__ import annotations

from bokeh.document.events import ModelChangedEvent
from bokeh.model import Model
from bokeh.models import UIElement
import panel.io.model as _panel_model
from panel.io.notebook import patch_inline_stylesheets

_panel_patch = _panel_model.monkeypatch_events


def _models(value) -> list[Model]:
    if isinstance(value, Model):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, Model)]
    return []


def inline_stylesheets(events) -> None:
    """Panel's own hook over the events of an update, with local stylesheets inlined first."""
    for e in events:
        if not isinstance(e, ModelChangedEvent):
            continue
        if e.attr == "stylesheets" and isinstance(e.model, UIElement):
            patch_inline_stylesheets(e.model)
            e.new = e.serializable_new = e.model.stylesheets
        for m in _models(e.new):  # models new to the page go out whole, with their stylesheets
            for sub in m.select({"type": UIElement}):
                patch_inline_stylesheets(sub)
    _panel_patch(events)


def keep_offline() -> None:
    """Rewrite every later notebook update (idempotent)."""
    _panel_model.monkeypatch_events = inline_stylesheets
