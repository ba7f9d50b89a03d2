"""gslb: a global server load balancer that is an authoritative DNS server."""

__version__ = "0.1.0"
