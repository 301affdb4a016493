"""visionloop: keeps an image classifier good while new labelled images keep arriving."""


def __getattr__(name: str) -> str:
    # Looked up on first use only: importlib.metadata costs every `visionloop` call time,
    # and only --version needs it.
    if name != "__version__":
        raise AttributeError(f"module 'visionloop' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("visionloop")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
