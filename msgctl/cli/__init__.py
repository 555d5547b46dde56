"""The msgctl command line: one module per command group."""
