"""DialoGPT-style multi-turn chat (`nlpcli train|evaluate|predict chat`, `nlpcli chat`)."""
