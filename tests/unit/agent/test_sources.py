import pytest

from nephoscope.agent.sources import meter_selected, pollster_selected


@pytest.mark.parametrize(
    ("patterns", "meter", "wanted"),
    [
        (["*"], "hardware.cpu.util", True),
        (["hardware.cpu.*"], "hardware.cpu.util", True),
        (["hardware.cpu.*"], "hardware.memory.used", False),
        (["!hardware.cpu.*"], "hardware.memory.used", True),
        (["!hardware.cpu.*"], "hardware.cpu.util", False),
        (["hardware.*", "!hardware.disk.*"], "hardware.disk.size.used", False),
        (["hardware.*", "!hardware.disk.*"], "hardware.network.incoming.bytes", True),
        (["cpu"], "cpu_util", False),
        (["Cpu"], "cpu", False),
    ],
)
def test_meter_selection(patterns: list[str], meter: str, wanted: bool) -> None:
    assert meter_selected(patterns, meter) is wanted


def test_pollster_selection() -> None:
    assert pollster_selected(["hardware.cpu.*"], ("hardware.cpu.util", "hardware.cpu.time"))
    assert not pollster_selected(["hardware.cpu.*"], ("hardware.memory.used",))
    assert pollster_selected(["hardware.cpu.*"], ())
