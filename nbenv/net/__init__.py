"""Network edge: the one HTTP client object, credentials and redaction."""
