"""Gateway runtime: the WebSocket server clients connect to, and its REST surface."""
