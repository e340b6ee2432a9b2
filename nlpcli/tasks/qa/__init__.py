"""Reading-comprehension QA, DGCNN or a pretrained encoder (`nlpcli train|evaluate|predict qa`)."""
