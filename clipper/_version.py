"""The package version (re-exported as `clipper.__version__`; the image builder tags images with it)."""

__version__ = "0.1.0"
