"""Datasets: SCAN (generated, embedded) and image data helpers."""
