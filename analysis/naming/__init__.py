"""Naming: reference libraries, open-set identification per face, cluster and shot, Wikidata."""
