"""The command-line commands that are not a stage's own."""
