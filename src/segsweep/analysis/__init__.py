"""Analysis: per-study aggregation of cell results and paired statistics."""
