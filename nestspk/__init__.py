"""nestspk: speaker verification with a nested encoder and a ResNetSE34L baseline."""
__version__ = "0.1.0"
