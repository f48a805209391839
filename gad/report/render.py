"""One document, two renderings: :class:`Doc` writes the same blocks as ``report.md`` and ``report.html``."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Doc:
    """Blocks rendered the same way to Markdown and to HTML, so the two pages never drift apart."""

    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.md += ["#" * level + " " + text, ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str, cls: str = "") -> None:
        self.md += [text, ""]
        self.html.append(f"<p class='{cls}'>{html.escape(text)}</p>" if cls else f"<p>{html.escape(text)}</p>")

    def bullets(self, items: list[str], cls: str = "") -> None:
        self.md += [f"- {i}" for i in items] + [""]
        self.html.append(f"<ul class='{cls}'>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        self.md += ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
        self.md += ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]
        self.html.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                                   for r in rows) + "</table>")

    def image(self, name: str, alt: str) -> None:
        self.md += [f"![{alt}]({name})", ""]
        self.html.append(f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">')

    def details(self, summary: str, text: str) -> None:
        self.md += [f"<details><summary>{summary}</summary>", "", "```", text.strip(), "```", "</details>", ""]
        self.html.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")

    def answers(self, prompt: str, answers: list[tuple[str, str]]) -> None:
        """One prompt and each model's answer, side by side in HTML, one after another in Markdown."""
        self.md += [f"**Prompt:** {prompt}", ""] + [f"- *{who}:* " + (text.strip() or "(empty)").replace("\n", "\n  ") for who, text in answers] + [""]
        self.html.append("<div class='example'><p class='prompt'><b>Prompt:</b> " + html.escape(prompt) + "</p>"
                         "<div class='answers'>" + "".join(
                             f"<div><h4>{html.escape(who)}</h4><p>{html.escape(text.strip() or '(empty)')}</p></div>"
                             for who, text in answers) + "</div></div>")

    def write(self, out: Path, title: str) -> Path:
        (out / "report.md").write_text("\n".join(self.md) + "\n", encoding="utf-8")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
                "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
                "img{max-width:100%}.warn li{color:#a40}.verdict{font-size:1.1em;background:#eef6ee;padding:.6em}"
                "pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:.85em}"
                "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
                ".answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:.6em}"
                ".answers div{background:#f8f8fb;padding:.4em .6em;border-radius:4px;font-size:.9em}"
                ".answers p{white-space:pre-wrap}.answers h4{margin:.2em 0}.example{margin-bottom:1.5em}"
                "</style></head><body>" + "\n".join(self.html) + "</body></html>")
        (out / "report.html").write_text(page, encoding="utf-8")
        return out / "report.html"
