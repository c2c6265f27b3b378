"""Campaign message templates: Liquid, vetted when a campaign is defined, rendered per contact at send time.

Liquid because Braze and Segment users already write it (``Hi {{ first_name | default: "there" }}``), and because
python-liquid never touches Python attributes: a path such as ``address.city`` is an item lookup in the contact's
JSON, so a template can only read the context it is given.

A template is a pure, bounded function of one contact. Allowed: output statements with the standard filters, and the
tags if/elsif/else, unless, case/when, comment, ``{% # ... %}`` and raw. Nothing else is registered in the rendering
environment, so include and render (other files), for, tablerow and cycle (loops), assign, capture, increment and
decrement (state), echo and liquid (other spellings of the same) are refused at definition time and cannot run at send
time either. Also refused: range literals (``(1..1000000000) | join`` would loop without a loop tag), unknown filters,
and any path segment starting with ``_`` (``{{ x.__class__ }}``). Rendering then costs at most the template's size
times its values', and the output is capped at ``OUTPUT_LIMIT`` bytes.

Missing data is never rendered as an empty string. A null or empty-string value counts as absent (as the ``default``
filter treats them); a template that outputs an absent variable without ``default`` gives ``Missing(root_name)``,
recorded as the contact's skip reason. Conditions may test an absent variable (``{% if first_name %}`` is false):
that is what they are for. A render error caused by the contact's values (a filter given the wrong type, an output
over the cap) gives ``Missing(ERROR_VARIABLE)`` rather than an exception: the template was vetted when it was
defined, so such an error is about this contact, and one contact's data never stops a send tick. ``render`` raises
``TemplateError`` only for a template that ``check_template`` refuses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from liquid import BoundTemplate, Environment, FalsyStrictUndefined, RenderContext
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.exceptions import LiquidError, LiquidSyntaxError, UndefinedError
from liquid.token import TOKEN_TAG, Token

OUTPUT_LIMIT = 4096
"""Bytes (UTF-8) one rendered field may take; a push payload is 4 KB at most anyway."""
ERROR_VARIABLE = "<error>"
"""``Missing.variable`` when rendering failed on the contact's values rather than on an absent variable."""
TEMPLATE_CACHE_SIZE = 256

# Tags that may start a statement. Their inner tags (elsif, else, when, end*) come with them; raw is lexed, not a tag.
ALLOWED_TAGS = frozenset({"if", "unless", "case", "comment", "#"})
_INNER_TAGS = frozenset({"elsif", "else", "when", "endif", "endunless", "endcase", "endcomment"})
# Pseudo tags python-liquid registers for text, output statements and unknown tags.
_PSEUDO_TAGS = frozenset({"content", "output", "illegal"})
_ALLOWED_TAGS_TEXT = "if/elsif/else, unless, case/when, comment, raw"


class TemplateError(ValueError):
    """A template that cannot be used; the message says what and where (the caller prefixes the field name)."""


@dataclass(frozen=True)
class Missing:
    """A render that produced no text: ``variable`` (a root name, or ``ERROR_VARIABLE``) had no value and no default."""

    variable: str

    @property
    def reason(self) -> str:
        return f"template_missing:{self.variable}"


class _MissingVariable(UndefinedError):
    """Raised by ``_Undefined`` when an absent variable is used for anything but a test or ``default``."""

    def __init__(self, variable: str, message: str, *, token: Token | None) -> None:
        super().__init__(message, token=token)
        self.variable = variable


def _fail(undefined: _Undefined) -> NoReturn:
    raise _MissingVariable(undefined.name, undefined.msg, token=undefined.token)


class _Undefined(FalsyStrictUndefined):
    """An absent variable: false in conditions, replaced by ``default``, and ``_MissingVariable`` (naming its root) on
    any other use. python-liquid names an undefined after the path's root (``address`` for ``address.city``)."""

    __slots__ = ()
    force_liquid_default = True

    def __getattribute__(self, name: str) -> Any:
        if name in object.__getattribute__(self, "allowed_properties"):
            return object.__getattribute__(self, name)
        _fail(self)

    def __contains__(self, item: object) -> bool:
        _fail(self)

    def __getitem__(self, key: str) -> object:
        _fail(self)

    def __len__(self) -> int:
        _fail(self)

    def __iter__(self) -> NoReturn:
        _fail(self)

    def __str__(self) -> str:
        _fail(self)

    def __int__(self) -> int:
        _fail(self)

    def __hash__(self) -> int:
        _fail(self)

    def __reversed__(self) -> NoReturn:
        _fail(self)


class _Environment(Environment):
    output_stream_limit = OUTPUT_LIMIT
    # No loop or assignment tag is registered; these are backstops should one ever be.
    loop_iteration_limit = 1000
    local_namespace_limit = 16384
    block_nesting_limit = 20

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=False)
        for name in [n for n in self.tags if n not in ALLOWED_TAGS | _PSEUDO_TAGS]:
            del self.tags[name]


_ENV = _Environment(undefined=_Undefined, autoescape=False)


def _where(source: str, index: int) -> str:
    if index < 0:
        return ""
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return f" (line {line}, column {column})"


def _syntax_error(source: str, err: LiquidError) -> TemplateError:
    token = err.token
    index = token.start_index if token is not None else -1
    if token is not None and token.kind == TOKEN_TAG and token.value not in ALLOWED_TAGS | _INNER_TAGS:
        what = f"tag '{token.value}' is not allowed (allowed: {_ALLOWED_TAGS_TEXT})"
    else:
        what = f"syntax error: {err.message}"
    # The end-of-input token has no position: an unclosed block is reported there.
    return TemplateError(what + (_where(source, index) if index >= 0 else " (at the end of the template)"))


def _has_private_segment(segments: Iterable[object]) -> bool:
    for segment in segments:
        if isinstance(segment, list) and _has_private_segment(segment):
            return True
        if isinstance(segment, str) and segment.startswith("_"):
            return True
    return False


def _range_index(template: BoundTemplate) -> int | None:
    """Where the first range literal is, if any (python-liquid's analysis does not report them)."""
    static = RenderContext(template)
    nodes = list(template.nodes)
    while nodes:
        node = nodes.pop()
        expressions = list(node.expressions())
        while expressions:
            expression = expressions.pop()
            if isinstance(expression, RangeLiteral):
                return int(expression.token.start_index)
            expressions.extend(expression.children())
        nodes.extend(node.children(static, include_partials=False))
    return None


@dataclass(frozen=True)
class _Compiled:
    template: BoundTemplate
    variables: frozenset[str]


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _compile(source: str) -> _Compiled:
    try:
        template = _ENV.from_string(source)
    except LiquidSyntaxError as err:
        raise _syntax_error(source, err) from None
    except LiquidError as err:  # nesting too deep, and the like
        raise TemplateError(f"{err.message}{_where(source, err.token.start_index if err.token else -1)}") from None

    analysis = template.analyze(include_partials=False)
    for name, spans in analysis.tags.items():
        if name not in ALLOWED_TAGS:  # unreachable while only allowed tags are registered; kept as the contract
            raise TemplateError(
                f"tag '{name}' is not allowed (allowed: {_ALLOWED_TAGS_TEXT}){_where(source, spans[0].index)}"
            )
    for name, spans in analysis.filters.items():
        if name not in _ENV.filters:
            raise TemplateError(f"unknown filter '{name}'{_where(source, spans[0].index)}")
    for variables in analysis.variables.values():
        for variable in variables:
            if _has_private_segment(variable.segments):
                raise TemplateError(
                    f"'{variable}': a name starting with '_' is not allowed{_where(source, variable.span.index)}"
                )
    range_at = _range_index(template)
    if range_at is not None:
        raise TemplateError(f"range expressions are not allowed{_where(source, range_at)}")
    return _Compiled(template, frozenset(analysis.globals))


def check_template(source: str) -> frozenset[str]:
    """Parse and vet one template at definition time; return the root variable names it reads.

    Raises ``TemplateError`` for a syntax error, a tag outside ``ALLOWED_TAGS``, an unknown filter, a range literal or a
    path segment starting with ``_`` (module docstring).
    """
    return _compile(source).variables


def _normalized(value: Any) -> Any:
    """``value`` with null and empty-string members of mappings removed, at any depth, so they count as absent."""
    if isinstance(value, Mapping):
        return {k: _normalized(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    return value


def contact_context(
    properties: Mapping[str, Any] | None, *, contact_id: str, country: str | None, timezone: str | None
) -> dict[str, Any]:
    """A contact's render context: its properties, plus the columns, which win over a property of the same name."""
    return {**(properties or {}), "contact_id": contact_id, "country": country, "timezone": timezone}


def render(source: str, context: Mapping[str, Any]) -> str | Missing:
    """Render ``source`` with one contact's context (``contact_context``).

    Returns ``Missing(root)`` when an absent variable is output without ``default``, ``Missing(ERROR_VARIABLE)`` when
    the contact's values make rendering fail; raises ``TemplateError`` only when ``check_template`` refuses ``source``.
    """
    template = _compile(source).template
    try:
        return str(template.render(_normalized(context)))
    except _MissingVariable as err:
        return Missing(err.variable)
    # Data-dependent failures: LiquidError from filters and limits; ValueError and ArithmeticError from Python itself
    # (an integer too long to print, a decimal operation); TypeError and LookupError from values of unexpected shape.
    except (LiquidError, ValueError, ArithmeticError, TypeError, LookupError):
        return Missing(ERROR_VARIABLE)
