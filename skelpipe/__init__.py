"""skelpipe: RGB videos to action labels through 2D skeletons, robust to low-quality
skeletons by part-level knowledge distillation from high-quality ones.

Importing skelpipe imports neither torch nor OpenPifPaf; each module pulls in what it needs.
"""

__version__ = "0.1.0"
