"""`msgctl bench`: the performance suite, measured against a running deployment."""
