"""Review: the session that holds corrections, and the Panel app over it."""
