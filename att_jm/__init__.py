"""ATT Job Manager: runs automation scripts for Channel Manager notifications, event-sourced."""

__version__ = "1.0.0"
