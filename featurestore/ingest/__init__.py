"""Streaming ingest of the public raw formats into stores."""
