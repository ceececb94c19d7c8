"""linkage: link Chinese person records across registries into one identity per person."""

__version__ = "0.1.0"
