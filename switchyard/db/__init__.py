"""Database backends of Switchyard's own (the embedded default's SQLite with a fair writer queue)."""
