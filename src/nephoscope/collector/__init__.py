"""The collector: verifies meter messages from the bus and stores them."""

from nephoscope.collector.service import Collector, parse_body

__all__ = ["Collector", "parse_body"]
