"""Write the README's API table from the package itself.

Every public name of ``jaxconvviz`` (its ``__all__``) with its signature and
the first line of its docstring, grouped by the subpackage it lives in.
``tests/test_api.py`` checks that ``docs/api.md`` holds exactly this table::

    python scripts/api_table.py            # rewrite the table in docs/api.md
    python scripts/api_table.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- api-table:start -->", "<!-- api-table:end -->"

#: Section titles, in order, by the module a name is defined in.
SECTIONS = [
    ("jaxconvviz.models", "Models and weights"),
    ("jaxconvviz.featureviz", "Feature visualization"),
    ("jaxconvviz.attribution", "Attribution"),
    ("jaxconvviz.directions", "Activation atlases and factorization"),
    ("jaxconvviz.views", "Views"),
    ("jaxconvviz.dataset", "Datasets"),
    ("jaxconvviz.report", "Report"),
    ("jaxconvviz", "Images, devices, errors"),
]


def _where(obj) -> str:
    mod = getattr(obj, "__module__", None) or "jaxconvviz"
    for prefix, _ in SECTIONS:
        if mod == prefix or mod.startswith(prefix + "."):
            return prefix
    return "jaxconvviz"


def _default(v) -> str:
    if isinstance(v, type):
        return f"{v.__module__.replace('jax.numpy', 'jnp')}.{v.__name__}"
    if isinstance(v, Path):
        return v.name
    text = repr(v)
    return text if len(text) <= 30 else text[:27] + "..."


def _signature(name: str, obj) -> str:
    """``name(a, b, *, c=1)``: parameter names and defaults, no annotations
    (the docstrings give shapes and domains)."""
    if inspect.isclass(obj) and not hasattr(obj, "__dataclass_fields__"):
        return f"`{name}`"
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"`{name}`"
    parts, star = [], False
    flax_module = "parent" in sig.parameters
    for p in sig.parameters.values():
        if flax_module and p.name in ("parent", "name"):
            continue  # flax Module plumbing
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        parts.append(p.name if p.default is p.empty
                     else f"{p.name}={_default(p.default)}")
    return f"`{name}({', '.join(parts)})`".replace("|", "\\|")


def _doc(obj) -> str:
    if not (inspect.isclass(obj) or callable(obj)) or inspect.ismodule(obj):
        return "constant" if not inspect.ismodule(obj) else "module"
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first.replace("|", "\\|")


def table() -> str:
    import jaxconvviz as jcv

    rows: dict[str, list[str]] = {p: [] for p, _ in SECTIONS}
    for name in jcv.__all__:
        obj = getattr(jcv, name)
        if inspect.ismodule(obj):
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        rows[_where(obj)].append(f"| {_signature(name, obj)} | {_doc(obj)} |")
    out = []
    for prefix, title in SECTIONS:
        if rows[prefix]:
            out += [f"**{title}** (`{prefix}`)", "", "| signature | what |",
                    "| --- | --- |", *rows[prefix], ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    readme = ROOT / "docs" / "api.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"docs/api.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    a, b = text.index(START) + len(START), text.index(END)
    new = text[:a] + "\n" + table() + text[b:]
    if args.check:
        if new != text:
            print("docs/api.md's API table is out of date: run "
                  "python scripts/api_table.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
