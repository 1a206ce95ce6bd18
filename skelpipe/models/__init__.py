"""Graph convolutional networks for skeleton sequences (ST-GCN, 2s-AGCN joint stream)."""
