"""Build hook for the one optional C extension; everything else is in pyproject.toml.

`llmtools._speedups` (src/llmtools/_speedups.c) makes `llmtools normalize` about twice as fast.
It is optional: without a C compiler the build skips it and normalize runs the same steps in
pure Python (same output; tests check the two agree).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("llmtools._speedups", ["src/llmtools/_speedups.c"], optional=True),
    ],
)
