"""Media: upload slots, the blob stores behind them, and the embedded blob endpoint."""
