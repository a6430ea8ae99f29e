"""Scale: the local process pool and Ray."""
