"""Preset handles and checkpoint formats (native, Hugging Face)."""
