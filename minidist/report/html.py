"""``report.html``: the Markdown report as one self-contained page.

On top, the run's configuration and environment (MPI library, ranks and cores, Python,
NumPy) and "what this run shows" (`findings`); then the Markdown sections, converted by a
small renderer that knows exactly what `sections` writes (headings, paragraphs, tables,
images, `code`, **bold**). Images are embedded as base64 data URIs: no file beside the
page and no network are needed to read it.
"""
from __future__ import annotations

import base64
import re
from html import escape

from .findings import findings

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1em; max-width: 1100px;
       color: #111; line-height: 1.45; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; max-width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
table.kv td { text-align: left; }
.findings { background: #f5f9ff; border-left: 4px solid #0072B2; padding: 0.4em 1em; }
"""


def _inline(text: str) -> str:
    text = escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _image(alt: str, name: str, folder) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def markdown_to_html(lines: list[str], folder) -> list[str]:
    """HTML for the subset of Markdown the report's sections write; images from `folder`."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"^(#{1,3}) (.*)$", line)
        image = re.match(r"^!\[([^\]]*)\]\(([^)]+)\)$", line)
        if heading:
            level = len(heading.group(1)) + 1  # the page's own title is the h1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            out.append(_image(image.group(1), image.group(2), folder))
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out += _table(rows[0], rows[2:])
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return out


def _table(head, rows, css: str = "") -> list[str]:
    return ([f'<table class="{css}">' if css else "<table>", "<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr>"]
            + ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows]
            + ["</table>"])


def _settings(header, ctx) -> list[list[str]]:
    cfg, env = header["config"], header.get("environment", {})
    shown = ("model", "norm", "strategies", "steps", "batch", "samples", "dtype", "optimizer", "lr",
             "momentum", "hidden", "bucket_cap_mb", "average", "seed")
    rows = [[key, ", ".join(map(str, cfg[key])) if isinstance(cfg[key], list) else str(cfg[key])]
            for key in shown if key in cfg]
    rows += [["shards", str(header.get("shard_sizes"))], ["parameters", str(header.get("parameters"))],
             ["profile (predicted times)", ctx.profile.name],
             ["profile (projections)", ctx.projection_profile.name]]
    env_rows = [["MPI library", env.get("mpi_library", "not recorded")],
                ["MPI standard", env.get("mpi_standard", "not recorded")],
                ["MPI settings", env.get("mpi_settings", "not recorded")],
                ["ranks", str(header["world_size"])], ["cores", str(env.get("cores", "not recorded"))],
                ["Python", env.get("python", "not recorded")], ["NumPy", env.get("numpy", "not recorded")],
                ["host", env.get("host", "not recorded")], ["platform", env.get("platform", "not recorded")]]
    return rows, env_rows


def render(ctx, markdown_lines: list[str]) -> str:
    """The whole page for the report whose Markdown is `markdown_lines`."""
    settings, env = _settings(ctx.header, ctx)
    title = markdown_lines[0].lstrip("# ") if markdown_lines else "minidist report"
    said = findings(ctx)
    body = [f"<h1>{_inline(title)}</h1>", "<h2>Configuration</h2>"]
    body += _table(["setting", "value"], settings, "kv")
    body += ["<h2>Environment</h2>"] + _table(["what", "value"], env, "kv")
    body += ["<h2>What this run shows</h2>", '<ul class="findings">']
    body += [f"<li>{_inline(s)}</li>" for s in said] + ["</ul>"]
    body += markdown_to_html(markdown_lines[1:], ctx.out)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_inline(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
