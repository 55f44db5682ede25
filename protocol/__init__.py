# The IBT wire protocol: catalog.py defines it, layout.py packs it; both run on
# CPython and MicroPython. SPEC.md is the normative text, vectors/ the golden frames.
