"""Host side of the Intelligent Bus Tap system: codec, client, controller, CLI."""
