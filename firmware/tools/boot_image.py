"""Boot a node from its LittleFS image on the unix port, as a board boots from flash:
mount the image at /flash, make it the current folder, run its main.py.

    MICROPYPATH=firmware/sim:firmware/tools micropython boot_image.py IMAGE
"""

import sys

from lfsmount import mount

mount(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256)
sys.path.insert(0, "/flash")
sys.argv[:] = ["main.py"]
exec(open("/flash/main.py").read())
