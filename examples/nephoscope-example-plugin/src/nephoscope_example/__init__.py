"""An example Nephoscope plugin distribution."""
