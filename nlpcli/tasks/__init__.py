"""Task pipelines; look them up through nlpcli.registry."""
