"""The one compiled part: the resampler's FIR (gateway/_fir.c). Optional: where no C compiler is at hand the
install goes on without it and `gateway.audio` runs the same filter in numpy (the same bytes, more CPU)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway._fir", ["gateway/_fir.c"], optional=True, extra_compile_args=["-O3"]),
    ]
)
