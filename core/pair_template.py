"""How a (query, document) pair becomes one text for a classifier that reads a single sequence.

vLLM's ``/classify`` takes one text per input, so a pair must be joined before it is sent; the local
``classifier`` kind joins it the same way when its spec sets ``template``, so both score the same input.
A template is a format string with the fields ``{query}`` and ``{document}``, or the name of a preset
(option values cannot hold ``&``, ``?`` or ``=``, which some templates need).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from core.errors import ModelSpecError
from core.model_spec import ModelSpec

TEMPLATE_PRESETS: dict[str, str] = {
    "plain": "query: {query} document: {document}",
    "lines": "{query}\n{document}",
}
_FIELDS = {"query", "document"}


@dataclass(frozen=True)
class PairTemplate:
    """A format string with exactly the fields ``{query}`` and ``{document}``; ``name`` is the preset
    it came from, or the format string itself."""

    name: str
    text: str

    def format(self, query: str, document: str) -> str:
        return self.text.format(query=query, document=document)


def preset(name: str) -> PairTemplate:
    """The preset template called ``name`` (a key of ``TEMPLATE_PRESETS``)."""
    return PairTemplate(name=name, text=TEMPLATE_PRESETS[name])


def pair_template(spec: ModelSpec, default: str | None = None) -> PairTemplate | None:
    """The template the spec's ``template`` option names (a preset or a format string), else ``default``
    (a preset name), else None: the pair is read as a pair. Raises ``ModelSpecError`` for a template
    without both fields, with other fields, or that does not parse."""
    value = spec.option("template") or default
    if value is None:
        return None
    text = TEMPLATE_PRESETS.get(value, value)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as error:
        raise ModelSpecError(f"--model {spec}: template {value!r} is not a format string: {error}") from None
    if set(fields) != _FIELDS:
        presets = ", ".join(TEMPLATE_PRESETS)
        raise ModelSpecError(
            f"--model {spec}: template {value!r} must hold exactly the fields {{query}} and {{document}} "
            f"(or name a preset: {presets}); it holds {sorted(set(fields))}"
        )
    return PairTemplate(name=value, text=text)
