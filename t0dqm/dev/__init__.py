"""The local stack, the demo, the chaos run and the simulated files (development and tests)."""
