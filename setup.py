"""The one part of the package that is compiled: `att_jm._start` (att_jm/_start.c), which
starts scripts as the script user with `vfork` (att_jm/direct_start.py). Optional: where it
cannot be built (no C compiler, no Python headers) the package installs without it and
scripts start through the spawner (att_jm/spawner.py). Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("att_jm._start", ["att_jm/_start.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall"])])
