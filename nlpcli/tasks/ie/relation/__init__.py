"""DGCNN + probabilistic-graph relation (SPO triple) extraction (`nlpcli train|evaluate|predict ie`)."""
