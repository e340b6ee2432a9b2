"""Records in, records out: every input `predict` and `serve` read becomes records, and records are written
back in the input's format.

- `formats`: the formats and how a file name or `--format` picks one.
- `lines`: lines of a file or stdin, read once (line ends LF, CRLF or CR; stalls of a slow producer marked).
- `jsonl`: one JSON line (or request body) -> a record the task accepts; records -> strict JSON text.
- `text`: plain text, one record per line, for tasks whose input is one text (or, lm, one keyword set).
- `tables`: CSV, TSV, Excel and Parquet files -> rows -> records, and rows back to a table.
- `source`, `sink`: an input opened by format; predictions written to a file or stdout.
- `predict`: the streaming prediction over a source, sharded over torchrun ranks.

This package sits below the tasks: it knows a task only as `RecordTask` (its record check, its table fields and
its prediction loop), never by name.
"""
