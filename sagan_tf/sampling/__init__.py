"""Sampling a trained generator: sample grids and interpolations, attention maps, export as a SavedModel."""
