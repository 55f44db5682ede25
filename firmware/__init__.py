# Tap firmware (MicroPython). Deployed as compiled .mpy files beside protocol/.
