"""fourreal built-in plugin package: masked_prior."""
