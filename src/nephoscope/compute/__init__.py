"""Metering of the instances on this hypervisor through libvirt.

:mod:`~nephoscope.compute.domain` reads a domain's XML (devices, Nova metadata);
:mod:`~nephoscope.compute.inspector` reads usage through one libvirt connection;
:mod:`~nephoscope.compute.discovery` turns active domains into owned instances;
:mod:`~nephoscope.compute.pollsters` turns readings into Ceilometer's compute
meters. The pollsters are entry points of the ``nephoscope.poll.compute``
namespace; libvirt-python is the optional extra ``nephoscope[libvirt]``.
"""

from nephoscope.compute.discovery import Instance, discover_instances
from nephoscope.compute.inspector import ConnectionUnavailable, LibvirtInspector

__all__ = ["ConnectionUnavailable", "Instance", "LibvirtInspector", "discover_instances"]
