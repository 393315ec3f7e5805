"""What an operator reads: ``/metrics`` and the logs."""
