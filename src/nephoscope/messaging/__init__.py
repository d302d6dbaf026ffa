"""Meter messages on the bus: their wire format, signing, publishing and transport."""
