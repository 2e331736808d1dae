"""Every module of keyplane imports on its own, as the first keyplane module a process loads.

A subprocess a test spawns (or a user's script) may import any module first; an import cycle only shows
when the cycle's far end is loaded first, which the rest of the suite never does in one process.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys, traceback
import keyplane
names = sorted(m.name for m in pkgutil.walk_packages(keyplane.__path__, "keyplane.")
               if ".migrations" not in m.name)
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "keyplane" or m.startswith("keyplane.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + "\n" + traceback.format_exc(limit=-3))
print(len(names))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout.split()[0]) > 50  # the walk found the package's modules
