"""Nephoscope: metering for clouds and virtualisation hosts."""

__version__ = "0.1.0"
