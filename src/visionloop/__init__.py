"""visionloop: keeps an image classifier good while new labelled images keep arriving."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visionloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
