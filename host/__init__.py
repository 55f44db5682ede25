"""Host side of the Intelligent Bus Tap system, in layers from the wire up (docs/architecture.md):
wire -> bus -> client -> store -> ops -> fleet -> control, beside them model, predict and
allocate (pure data and algorithms), sim (the two test worlds), reports and cli (thin skins)."""
