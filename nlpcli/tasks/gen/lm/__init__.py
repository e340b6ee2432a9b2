"""Forward + backward language models and the CGMH sampler (`nlpcli train lm`, `nlpcli generate`)."""
