"""Developer tooling (not part of the product; not installed with the package)."""
