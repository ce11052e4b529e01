"""Byte-compile what the serving image runs, not all of site-packages (run in the Dockerfile's builder stage).

Why: the final root filesystem is read-only, so Python cannot cache byte code at run time; compiling every
installed module (``compileall`` on site-packages) wrote 101 MB of ``.pyc``, most of it for modules a serving
process never imports (SciPy's and scikit-learn's solvers, matplotlib's PDF/PS back ends, Pygments' lexers).
Here Python writes ``.pyc`` files the way it does at run time, for exactly the modules that get imported:
every radiolens module that imports without the training extras (so every module of the service, the gateway,
batch scoring and de-identification, and what each imports at module level), plus the third-party modules
radiolens imports inside functions on the serving path (:data:`LAZY`). A module missed here still works: it
is compiled in memory each time a process first imports it (milliseconds), nothing fails.

    python precompile.py      # prints how many modules were compiled and which radiolens modules were skipped
"""

from __future__ import annotations

import compileall
import importlib
import pkgutil
import sys

#: Imported inside functions on the serving path (PNG/DICOM heatmap colour maps, OCR, DICOM writers and
#: networking, PostgreSQL, migrations, compressed pixel data).
LAZY = (
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "highdicom",
    "highdicom.sc",
    "highdicom.sr",
    "matplotlib.cm",
    "matplotlib.figure",
    "onnxruntime",
    "psycopg",
    "pynetdicom",
    "scipy.ndimage",
    "scipy.stats",
    "sklearn.covariance",
    "sklearn.decomposition",
    "sklearn.metrics",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite",
    "tesserocr",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "libjpeg",
    "openjpeg",
    "rle",
    "pydicom.pixels.decoders.pylibjpeg",
    "pydicom.pixels.encoders.native",
)


def main() -> int:
    sys.dont_write_bytecode = False
    import radiolens

    # radiolens itself in full (small; alembic loads the migration scripts by path)
    compileall.compile_dir(radiolens.__path__[0], quiet=1)
    skipped = []
    for module in pkgutil.walk_packages(radiolens.__path__, "radiolens.", onerror=skipped.append):
        if module.name.endswith("__main__") or ".migrations" in module.name:
            continue  # scripts run by `python -m` and by alembic, not imports (compiled above)
        try:
            importlib.import_module(module.name)
        except ImportError as exc:  # training-only modules: torch, Lightning, timm are not installed
            skipped.append(f"{module.name} ({exc.name})")
    for name in LAZY:
        importlib.import_module(name)  # a serving dependency that does not import is a broken image: fail
    print(f"byte code written for {len(sys.modules)} modules; radiolens modules left out (training extras): "
          f"{len(skipped)}")
    for line in skipped:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
