"""nlpcli: Chinese NLP pipelines from the command line."""

__version__ = "0.1.0"
