"""Model files (sources, checksums, licences), their installer, and the runtimes that run them."""
