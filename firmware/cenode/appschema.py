"""Each node app's settings (``config.json``'s ``app`` object): type, unit, range, default.

One source of truth, read twice: the node checks its config against it at boot
(:func:`cenode.config.check_app`), and ``cityedge provision`` reads this file *as data* (it
never imports the firmware) to refuse a wrong ``--set`` before anything is written. So
``SETTINGS`` and ``LARGER`` must stay plain literals (numbers, strings, lists, dicts).

Types: ``number`` (int or float), ``int``, ``pins`` (``names``: pin name -> GPIO number),
``two-point`` (per channel in ``of``, two ``[mV, value]`` points with different mV, the value
in the channel's unit and range). ``LARGER`` lists pairs whose first must be larger than the
second.
"""

PIN_MAX = 48  # the highest GPIO number of the supported boards (ESP32-S3: 48)

SETTINGS = {
    "bin-fill": {
        "empty_mm": {
            "type": "number",
            "unit": "mm",
            "min": 100,
            "max": 5000,
            "default": 1200,
            "help": "distance from the sensor to the floor of the empty bin",
        },
        "full_mm": {
            "type": "number",
            "unit": "mm",
            "min": 20,
            "max": 4900,
            "default": 150,
            "help": "distance from the sensor at which the bin counts as full",
        },
        "pings": {
            "type": "int",
            "unit": "",
            "min": 1,
            "max": 15,
            "default": 5,
            "help": "echoes per reading; the median is reported",
        },
        "pins": {"type": "pins", "names": ["trigger", "echo", "temp"], "help": "GPIO numbers"},
    },
    "water": {
        "samples": {
            "type": "int",
            "unit": "",
            "min": 1,
            "max": 31,
            "default": 5,
            "help": "ADC reads per reading; the median is reported",
        },
        "calibration": {
            "type": "two-point",
            "unit": "mV",
            "min": 0,
            "max": 3300,
            "of": {
                "ph": {"unit": "pH", "min": 0, "max": 14, "default": [[1500, 7.0], [2030, 4.0]]},
                "turbidity": {
                    "unit": "NTU",
                    "min": 0,
                    "max": 4000,
                    "default": [[2900, 0.0], [1400, 1000.0]],
                },
            },
            "help": "two [mV, value] points per probe, from buffer solutions",
        },
        "pins": {"type": "pins", "names": ["ph", "turbidity", "temp"], "help": "GPIO numbers"},
    },
    "gate-relay": {
        "max_pulse_ms": {
            "type": "int",
            "unit": "ms",
            "min": 100,
            "max": 60000,
            "default": 10000,
            "help": "longest pulse a command may ask for",
        },
        "pins": {"type": "pins", "names": ["relay", "door"], "help": "GPIO numbers"},
    },
}

LARGER = {"bin-fill": [["empty_mm", "full_mm"]]}
