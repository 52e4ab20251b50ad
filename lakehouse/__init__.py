"""Delta Lake access shared by every job: reads pinned to versions, atomic partition replaces, commit metadata, locks."""
