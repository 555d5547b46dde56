"""msgctl: the CLI that launches, supervises and drills the msgctl messaging platform."""

__version__ = "0.1.0"
