"""fourreal built-in plugin package: losses."""
