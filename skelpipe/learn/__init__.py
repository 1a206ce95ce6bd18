"""Networks and learning: models, losses, the part matrix, training and evaluation."""
