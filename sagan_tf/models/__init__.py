"""The networks: spectral-norm layers, attention, block layouts, G and D, the averaged generator, standing batch-norm statistics."""
