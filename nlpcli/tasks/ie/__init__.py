"""Information extraction tasks: NER (GlobalPointer) and relation extraction."""
