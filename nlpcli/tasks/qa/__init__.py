"""DGCNN reading-comprehension QA (`nlpcli train|evaluate|predict qa`)."""
