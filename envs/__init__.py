"""Gymnasium environments for compression search. `import envs` registers `amc/Compression-v1`."""

import gymnasium

from envs.compression import CompressionEnv

gymnasium.register(id="amc/Compression-v1", entry_point="envs.compression:CompressionEnv")

__all__ = ["CompressionEnv"]
