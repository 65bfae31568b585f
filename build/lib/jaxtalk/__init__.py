"""jaxtalk: JAX/Flax reimplementations of the SVP and Style2Talker talking-head generators."""

__version__ = "0.1.0"
