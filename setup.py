"""Builds both compiled cores: the Rust engine (PyO3) and the Cython HTTP protocol."""

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools_rust import Binding, RustExtension

setup(
    rust_extensions=[
        RustExtension(
            "clipper.rust_core",
            path="rust_core/Cargo.toml",
            binding=Binding.PyO3,
            features=["extension-module"],
            py_limited_api=True,
            debug=False,
        )
    ],
    ext_modules=cythonize(
        [
            Extension(
                "clipper._core",
                ["_core/_core.pyx"],
                include_dirs=["rust_core/include"],  # clipper_capi.h: the C interface of rust_core
                extra_compile_args=["-O2"],
            )
        ],
        compiler_directives={"language_level": "3"},
    ),
)
