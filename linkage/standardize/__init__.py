"""Standardization of Chinese person records: one module per field, combined in ``combine``."""
