"""avionics."""
