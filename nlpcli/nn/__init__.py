"""Shared neural blocks: embeddings, DGCNN, RoPE, GlobalPointer, Hugging Face encoders."""
