"""The technician's tool: device identity, filesystem images, flashing, inventory.

Built under its own issue (MicroPython sensor nodes and provisioning); the package exists so the
layout matches the house plan and imports point the right way (``provisioning`` → ``protocols``).
"""
