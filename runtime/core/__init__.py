"""The pure domain core: data in, decisions out. No sockets, clocks or backends here."""
