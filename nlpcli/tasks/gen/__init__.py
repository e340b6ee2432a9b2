"""Generation tasks: language models and the CGMH sampler; chat."""
