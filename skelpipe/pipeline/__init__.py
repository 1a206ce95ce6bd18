"""Stages put together: the cache, the plan of a pipeline, reports and plots, predict."""
