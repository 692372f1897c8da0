"""Server plumbing: settings, database engine, security helpers."""
