"""gslb: a global server load balancer that is an authoritative DNS server."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: the installed distribution's version (pyproject.toml is the one place it is written)
    __version__ = version("gslb")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
