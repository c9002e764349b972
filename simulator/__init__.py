"""Local stand-in for Partner Center, Entra ID, Graph billing export and Key Vault.

One HTTPS origin serves every service, distinguished by path. Start it with
``python -m simulator`` or, in tests, ``simulator.testing.start_simulator()``.
"""
from simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig"]
