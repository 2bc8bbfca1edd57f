"""Index state, chunks and keyword postings (filled in by the intelligence work)."""
