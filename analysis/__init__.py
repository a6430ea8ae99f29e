"""crowdsort: turn a folder of photos into people and things."""
__version__ = "0.1.0"
