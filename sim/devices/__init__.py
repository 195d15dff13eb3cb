"""Simulated field devices (``cityedge simulate ...``): Modbus TCP/RTU devices from the device
profiles, the CoAP air sensor, the HJ 212 platform, and the fault schedules they share."""
