"""Datasets to training tensors: the dataset readers, HQ/LQ sources, alignment, packing."""
