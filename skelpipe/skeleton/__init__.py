"""Skeletons as data: joint layouts and body parts, the pose store (HDF5), occlusion noise."""
