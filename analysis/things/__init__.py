"""Whole images by visual similarity (EfficientNet-Lite0, CLIP)."""
