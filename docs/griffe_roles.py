"""A griffe extension for the API page: the docstrings' Sphinx roles (:func:`x`, :class:`x`, …)
become plain code spans, as Markdown has no roles and would show ":func:" as text."""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|data|meth|attr|mod|exc|obj):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
