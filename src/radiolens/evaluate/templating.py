"""One look for every HTML report radiolens writes (evaluation report, model card, monitoring report).

Each report template extends ``base.html`` from this package: the page frame, the stylesheet, the advisory
banner and the footer live in one place, so a reader moving from a model card to its evaluation report to a
monitoring report sees the same typography, colours and warnings. Reports stay self-contained files (the CSS
is inlined by the base template, figures are data URIs), because they are archived and e-mailed.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import jinja2

from radiolens import __version__

BASE_PACKAGE = "radiolens.evaluate"


def _loader(package: str) -> jinja2.BaseLoader:
    """Templates of ``package`` first, then this package's (where ``base.html`` lives). Read through
    importlib.resources so installed wheels and zipped packages work the same as a source tree."""

    def load(name: str) -> str | None:
        for pkg in dict.fromkeys((package, BASE_PACKAGE)):
            ref = resources.files(pkg).joinpath("templates", name)
            if ref.is_file():
                return ref.read_text(encoding="utf-8")
        return None

    return jinja2.FunctionLoader(load)


def environment(package: str = BASE_PACKAGE, filters: dict[str, Callable] | None = None,
                strict: bool = True) -> jinja2.Environment:
    """A Jinja environment for ``package``'s report templates: autoescaped, with the radiolens version as the
    ``version`` global (the footer prints it). ``strict``: an undefined name is an error (templates whose data
    has optional keys, like the model card's, pass False)."""
    env = jinja2.Environment(loader=_loader(package), autoescape=True,
                             undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
                             trim_blocks=strict, lstrip_blocks=strict)
    env.globals["version"] = __version__
    env.filters.update(filters or {})
    return env


def render(package: str, template: str, filters: dict[str, Callable] | None = None, strict: bool = True,
           **context) -> str:
    """Render ``template`` of ``package`` (which extends ``base.html``) with ``context``."""
    return environment(package, filters, strict).get_template(template).render(**context)
