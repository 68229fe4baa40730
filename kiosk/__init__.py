"""face-kiosk: a face-recognition door lock for the Raspberry Pi."""

__version__ = "0.1.0"
