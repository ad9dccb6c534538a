"""Template filters for showing chat content: `markdown` and `pretty_json`."""

import json

from django import template
from django.utils.safestring import mark_safe

from chat.rendering import markdown_to_html

register = template.Library()


@register.filter(is_safe=True)
def markdown(text) -> str:
    """Markdown rendered to sanitised HTML (see chat.rendering); safe to output unescaped."""
    return mark_safe(markdown_to_html(str(text or "")))


@register.filter
def pretty_json(text) -> str:
    """Tool arguments (JSON text as the model wrote it) indented for reading; as-is if malformed.

    Returns plain text: the template escapes it like any other string.
    """
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(text or "")
