"""mkdocs hooks: put the repository's own pages and figures into the site at build time.

The home page is the README, the gallery is figures/README.md with its images, and the pages
they link to (benchmarks/*.md, examples/*.py, the monitored runs' figures) come along, so every
relative link of the README resolves and nothing is copied into docs/ where it could drift.

The tutorial page is the notebook that ``docs/execute_tutorial.py`` wrote to
``build/docs/tutorial.ipynb`` (``make docs`` runs it first); the site renders it without
executing it again. Without that file (or with ``GRADLAB_DOCS_TUTORIAL=source``) the jupytext
source is converted to an unexecuted notebook instead, so a build never runs the tutorial.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "docs" / "tutorial.ipynb"
UNEXECUTED = ROOT / "build" / "docs" / "tutorial-source.ipynb"
PAGE = ROOT / "docs" / "tutorial.ipynb"

# (glob under the repository root) -> copied to the same path in the site
REPO_FILES = ("README.md", "figures/**/*.md", "figures/**/*.png", "figures/**/*.svg",
              "benchmarks/*.md", "examples/*.py", "docs/tutorial/tutorial.py")


def tutorial_notebook() -> Path:
    """The notebook the tutorial page renders: the executed one if there is one."""
    override = os.environ.get("GRADLAB_DOCS_TUTORIAL")
    if override and override != "source":
        return Path(override)
    if EXECUTED.exists() and override != "source":
        return EXECUTED
    import jupytext

    nb = jupytext.read(ROOT / "docs" / "tutorial" / "tutorial.py")
    UNEXECUTED.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, UNEXECUTED, fmt="ipynb")
    return UNEXECUTED


def on_config(config):
    # mkdocs-jupyter renders only notebooks that lie in docs_dir, so the chosen notebook is
    # copied to docs/tutorial.ipynb (gitignored) before the files are collected
    shutil.copyfile(tutorial_notebook(), PAGE)
    return config


@event_priority(100)
def on_files(files: Files, config) -> Files:
    for pattern in REPO_FILES:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File.generated(config, path.relative_to(ROOT).as_posix(),
                                        abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    # on the site, the README's link to the tutorial's source opens the rendered notebook
    if page.file.src_uri == "README.md":
        markdown = markdown.replace("](docs/tutorial/tutorial.py)", "](tutorial.ipynb)")
    return markdown


_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    # docstrings cross-reference in Sphinx roles (:func:`name`); Markdown renders the name as
    # code and leaves the role's prefix as text: drop the prefix
    return _ROLE.sub("", html)
