"""GlobalPointer NER, nested and flat (`nlpcli train|evaluate|predict ner`)."""
