"""Health checking: probes (http, https, tcp) and the monitor that schedules them per region."""

from gslb.health.probes import ProbeResult, probe

__all__ = ["ProbeResult", "probe"]
